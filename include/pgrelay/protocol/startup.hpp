// The untyped first packet of a connection: StartupMessage, SSLRequest, GSSENCRequest,
// CancelRequest. Layout: https://www.postgresql.org/docs/15/protocol-message-formats.html
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "pgrelay/protocol/bytes.hpp"

namespace pgrelay::protocol {

inline constexpr std::uint32_t kProtocolVersion30 = 196608;  // 3 << 16
inline constexpr std::uint32_t kCancelRequestCode = 80877102;
inline constexpr std::uint32_t kSslRequestCode = 80877103;
inline constexpr std::uint32_t kGssEncRequestCode = 80877104;
/// PostgreSQL's MAX_STARTUP_PACKET_LENGTH: longer startup packets are refused.
inline constexpr std::uint32_t kMaxStartupPacketLength = 10000;

struct SslRequest {};
struct GssEncRequest {};

struct CancelRequest {
  std::uint32_t process_id = 0;
  std::uint32_t secret_key = 0;
};

struct StartupMessage {
  std::uint32_t version = kProtocolVersion30;
  /// In packet order. `options` and unknown parameters are kept so the packet can be rebuilt.
  std::vector<std::pair<std::string, std::string>> parameters;

  /// Value of a parameter, or nullopt when absent.
  [[nodiscard]] std::optional<std::string_view> get(std::string_view name) const;
};

/// A packet that cannot be served; `sqlstate` and `message` go into a FATAL ErrorResponse.
struct StartupError {
  std::string_view sqlstate;
  std::string message;
};

using StartupPacket =
    std::variant<StartupMessage, SslRequest, GssEncRequest, CancelRequest, StartupError>;

/// Validates the 4-byte length prefix of a startup packet before its body is read.
[[nodiscard]] std::optional<StartupError> check_startup_length(std::uint32_t length);

/// Parses a whole startup packet (length prefix included).
[[nodiscard]] StartupPacket parse_startup_packet(Bytes packet);

/// PostgreSQL's reading of the `replication` startup parameter: true for physical
/// (true/on/yes/1) and logical (database) replication connections.
[[nodiscard]] bool is_replication_value(std::string_view value);

/// Serialises a StartupMessage (length prefix included).
[[nodiscard]] ByteVector build_startup_message(const StartupMessage& message);

/// Serialises a CancelRequest (16 bytes).
[[nodiscard]] std::array<std::uint8_t, 16> build_cancel_request(const CancelRequest& request);

}  // namespace pgrelay::protocol
