// Header validation shared by the frame decoder and the stream scanner.
#include "pgrelay/protocol/frame.hpp"

namespace pgrelay::protocol {

std::string_view check_header(std::uint32_t length, std::uint32_t max_length) {
  if (length < 4) return "invalid message length";
  if (length > max_length) return "message too large";
  return {};
}

}  // namespace pgrelay::protocol
