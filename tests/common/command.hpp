// Running shell commands from tests and test drivers.
#pragma once

#include <string>

namespace pgrelay::test {

/// Output and exit status of a command.
struct CommandResult {
  int status = -1;     ///< exit code, or 128 + signal
  std::string output;  ///< stdout and stderr together
};

/// Runs `command` with /bin/sh; stdout and stderr are captured together.
CommandResult run_command(const std::string& command);

}  // namespace pgrelay::test
