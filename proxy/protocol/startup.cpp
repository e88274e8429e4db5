// Parsing and building of the untyped first packet of a connection.
#include "pgrelay/protocol/startup.hpp"

#include <algorithm>

#include "pgrelay/protocol/sqlstate.hpp"

namespace pgrelay::protocol {

std::optional<std::string_view> StartupMessage::get(std::string_view name) const {
  for (const auto& [key, value] : parameters) {
    if (key == name) return std::string_view(value);
  }
  return std::nullopt;
}

std::optional<StartupError> check_startup_length(std::uint32_t length) {
  if (length < 8 || length > kMaxStartupPacketLength) {
    return StartupError{sqlstate::kProtocolViolation, "invalid length of startup packet"};
  }
  return std::nullopt;
}

namespace {

StartupPacket parse_parameters(Bytes packet, std::uint32_t version) {
  StartupMessage message;
  message.version = version;
  std::size_t pos = 8;
  while (true) {
    std::string_view name;
    if (!read_cstring(packet, pos, name)) {
      return StartupError{sqlstate::kProtocolViolation,
                          "invalid startup packet layout: expected terminator as last byte"};
    }
    if (name.empty()) break;
    std::string_view value;
    if (!read_cstring(packet, pos, value)) {
      return StartupError{sqlstate::kProtocolViolation,
                          "invalid startup packet layout: expected terminator as last byte"};
    }
    message.parameters.emplace_back(name, value);
  }
  if (pos != packet.size()) {
    return StartupError{sqlstate::kProtocolViolation,
                        "invalid startup packet layout: expected terminator as last byte"};
  }
  const auto user = message.get("user");
  if (!user || user->empty()) {
    return StartupError{sqlstate::kInvalidAuthorizationSpecification,
                        "no PostgreSQL user name specified in startup packet"};
  }
  return message;
}

}  // namespace

StartupPacket parse_startup_packet(Bytes packet) {
  if (packet.size() < 8) {
    return StartupError{sqlstate::kProtocolViolation, "invalid length of startup packet"};
  }
  const std::uint32_t length = read_u32(packet.data());
  if (auto err = check_startup_length(length)) return *err;
  if (length != packet.size()) {
    return StartupError{sqlstate::kProtocolViolation, "invalid length of startup packet"};
  }
  const std::uint32_t code = read_u32(packet.data() + 4);
  switch (code) {
    case kSslRequestCode:
      if (length != 8) break;
      return SslRequest{};
    case kGssEncRequestCode:
      if (length != 8) break;
      return GssEncRequest{};
    case kCancelRequestCode:
      if (length != 16) break;
      return CancelRequest{read_u32(packet.data() + 8), read_u32(packet.data() + 12)};
    default: {
      const std::uint32_t major = code >> 16;
      const std::uint32_t minor = code & 0xffff;
      // Like PostgreSQL: 3.x with x > 0 is accepted and negotiated down by the server.
      if (major != 3) {
        return StartupError{sqlstate::kFeatureNotSupported,
                            "unsupported frontend protocol " + std::to_string(major) + "." +
                                std::to_string(minor) + ": server supports 3.0 to 3.0"};
      }
      return parse_parameters(packet, code);
    }
  }
  return StartupError{sqlstate::kProtocolViolation, "invalid length of startup packet"};
}

bool is_replication_value(std::string_view value) {
  // PostgreSQL: exactly "database" for logical replication, else parse_bool(): any
  // case-insensitive prefix of true/yes, "on" (two letters at least) and "1" mean true.
  if (value == "database") return true;
  std::string lower(value);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const auto prefix_of = [&](std::string_view word) {
    return !lower.empty() && lower.size() <= word.size() && word.substr(0, lower.size()) == lower;
  };
  return prefix_of("true") || prefix_of("yes") || lower == "on" || lower == "1";
}

ByteVector build_startup_message(const StartupMessage& message) {
  ByteVector out;
  append_u32(out, 0);
  append_u32(out, message.version);
  for (const auto& [key, value] : message.parameters) {
    append_cstring(out, key);
    append_cstring(out, value);
  }
  out.push_back(0);
  write_u32(out.data(), static_cast<std::uint32_t>(out.size()));
  return out;
}

std::array<std::uint8_t, 16> build_cancel_request(const CancelRequest& request) {
  std::array<std::uint8_t, 16> out{};
  write_u32(out.data(), 16);
  write_u32(out.data() + 4, kCancelRequestCode);
  write_u32(out.data() + 8, request.process_id);
  write_u32(out.data() + 12, request.secret_key);
  return out;
}

}  // namespace pgrelay::protocol
