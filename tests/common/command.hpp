// Shell commands and free ports for tests and test drivers.
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

/// A free TCP port on 127.0.0.1 (bound and released, so it is free at that instant), from below
/// the ephemeral range and never the same twice in one process.
int free_port();

}  // namespace pgrelay::test
