// Framing of typed messages (type byte, Int32 length, body): a pure decoder over a buffer and a
// streaming scanner that follows message boundaries across reads without buffering bodies.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "pgrelay/protocol/bytes.hpp"
#include "pgrelay/protocol/messages.hpp"

namespace pgrelay::protocol {

/// Default largest accepted message: PostgreSQL's own limit for a single message (1 GiB - 1).
inline constexpr std::uint32_t kDefaultMaxMessageLength = 0x3fffffff;
inline constexpr std::size_t kHeaderLength = 5;

enum class FrameStatus { kNeedMore, kComplete, kMalformed };

/// One message's header. `length` counts itself and the body, as on the wire.
template <typename Type>
struct FrameHeader {
  Type type{};
  std::uint32_t length = 0;
  [[nodiscard]] std::size_t body_length() const { return length - 4; }
  [[nodiscard]] std::size_t total_length() const { return std::size_t{length} + 1; }
};

template <typename Type>
struct DecodeResult {
  FrameStatus status = FrameStatus::kNeedMore;
  FrameHeader<Type> header{};
  /// Set when `status` is kMalformed.
  std::string_view error;
};

/// Why a header is malformed, or empty when it is fine. Inline: asked for every message.
[[nodiscard]] inline std::string_view check_header(std::uint32_t length, std::uint32_t max_length) {
  if (length < 4) return "invalid message length";
  if (length > max_length) return "message too large";
  return {};
}

/// Decodes the first message in `buffer`. kComplete means the whole message (header and body)
/// is in the buffer; kNeedMore that more bytes are needed; kMalformed that the stream is broken.
template <typename Type>
[[nodiscard]] DecodeResult<Type> decode_frame(Bytes buffer, std::uint32_t max_length) {
  DecodeResult<Type> result;
  if (buffer.size() < kHeaderLength) return result;
  result.header.type = static_cast<Type>(buffer[0]);
  result.header.length = read_u32(buffer.data() + 1);
  result.error = check_header(result.header.length, max_length);
  if (!result.error.empty()) {
    result.status = FrameStatus::kMalformed;
  } else if (buffer.size() >= result.header.total_length()) {
    result.status = FrameStatus::kComplete;
  }
  return result;
}

using FrontendFrame = DecodeResult<FrontendType>;
using BackendFrame = DecodeResult<BackendType>;

/// What the scanner hands to its visitor for each message: the header and the first bytes of
/// the body (up to kPeekLength; fewer only when the body is shorter).
template <typename Type>
struct MessageStart {
  FrameHeader<Type> header;
  Bytes peek;
};

/// Follows message boundaries in a byte stream fed in arbitrary chunks. It copies at most a
/// header and kPeekLength body bytes when they straddle two chunks; bodies are never buffered.
template <typename Type>
class StreamScanner {
 public:
  /// Enough for ReadyForQuery's status, BackendKeyData, an authentication code, the severity of
  /// an ErrorResponse.
  static constexpr std::size_t kPeekLength = 16;

  explicit StreamScanner(std::uint32_t max_length = kDefaultMaxMessageLength)
      : max_length_(max_length) {}

  /// Feeds the next chunk, calling `visit(MessageStart<Type>)` once per message as soon as its
  /// header and peek bytes are seen. Returns an error description when the stream is
  /// malformed (the scanner must not be fed again), else an empty view.
  template <typename Visitor>
  std::string_view feed(Bytes chunk, Visitor&& visit) {
    std::size_t pos = 0;
    while (pos < chunk.size()) {
      if (skip_ > 0) {
        const std::size_t n = std::min<std::size_t>(skip_, chunk.size() - pos);
        skip_ -= n;
        pos += n;
        continue;
      }
      if (held_ == 0) {
        // Fast path: header and peek wholly inside this chunk.
        const std::size_t avail = chunk.size() - pos;
        if (avail >= kHeaderLength) {
          const std::uint32_t length = read_u32(chunk.data() + pos + 1);
          if (auto err = check_header(length, max_length_); !err.empty()) return err;
          const std::size_t peek = std::min<std::size_t>(length - 4, kPeekLength);
          if (avail >= kHeaderLength + peek) {
            visit(MessageStart<Type>{{static_cast<Type>(chunk[pos]), length},
                                     chunk.subspan(pos + kHeaderLength, peek)});
            const std::size_t total = std::size_t{length} + 1;
            const std::size_t n = std::min(total, avail);
            skip_ = total - n;
            pos += n;
            continue;
          }
        }
      }
      // Slow path: collect header and peek bytes across chunks.
      const std::size_t want = held_ < kHeaderLength ? kHeaderLength : needed_;
      const std::size_t n = std::min(want - held_, chunk.size() - pos);
      std::memcpy(hold_.data() + held_, chunk.data() + pos, n);
      held_ += n;
      pos += n;
      if (held_ < want) break;
      if (held_ == kHeaderLength) {
        const std::uint32_t length = read_u32(hold_.data() + 1);
        if (auto err = check_header(length, max_length_); !err.empty()) return err;
        needed_ = kHeaderLength + std::min<std::size_t>(length - 4, kPeekLength);
        if (held_ < needed_) continue;
      }
      const std::uint32_t length = read_u32(hold_.data() + 1);
      visit(MessageStart<Type>{{static_cast<Type>(hold_[0]), length},
                               Bytes(hold_.data() + kHeaderLength, held_ - kHeaderLength)});
      skip_ = std::size_t{length} + 1 - held_;
      held_ = 0;
      needed_ = 0;
    }
    return {};
  }

  /// True when the stream so far ends exactly at a message boundary.
  [[nodiscard]] bool at_boundary() const { return skip_ == 0 && held_ == 0; }

 private:
  std::uint32_t max_length_;
  std::size_t skip_ = 0;    // body bytes of the current message still to pass
  std::size_t held_ = 0;    // bytes collected in hold_
  std::size_t needed_ = 0;  // header + peek length once the header is known
  std::array<std::uint8_t, kHeaderLength + kPeekLength> hold_{};
};

using FrontendScanner = StreamScanner<FrontendType>;
using BackendScanner = StreamScanner<BackendType>;

}  // namespace pgrelay::protocol
