// Hand-written wire bytes for the protocol tests, independent of the codec's own helpers.
#pragma once

#include <cstdint>
#include <string_view>

#include "pgrelay/protocol/bytes.hpp"

namespace pgrelay::protocol::test {

/// Builds raw bytes field by field; strings never go through C escapes, so embedded NULs and
/// digits after them cannot be mis-parsed as octal escapes.
class Wire {
 public:
  /// A NUL-terminated String.
  Wire& str(std::string_view s) {
    raw(s);
    return byte(0);
  }
  /// Bytes without terminator.
  Wire& raw(std::string_view s) {
    for (char c : s) bytes_.push_back(static_cast<std::uint8_t>(c));
    return *this;
  }
  Wire& byte(std::uint8_t b) {
    bytes_.push_back(b);
    return *this;
  }
  Wire& u16(std::uint16_t v) {
    byte(static_cast<std::uint8_t>(v >> 8));
    return byte(static_cast<std::uint8_t>(v & 0xff));
  }
  Wire& u32(std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) byte(static_cast<std::uint8_t>(v >> shift));
    return *this;
  }
  Wire& append(const ByteVector& more) {
    bytes_.insert(bytes_.end(), more.begin(), more.end());
    return *this;
  }

  [[nodiscard]] const ByteVector& bytes() const { return bytes_; }
  operator ByteVector() const { return bytes_; }  // NOLINT(google-explicit-constructor)

 private:
  ByteVector bytes_;
};

/// A typed message: type byte, Int32 length (itself plus body), body.
inline ByteVector typed_message(char type, const ByteVector& body) {
  return Wire()
      .byte(static_cast<std::uint8_t>(type))
      .u32(static_cast<std::uint32_t>(body.size() + 4))
      .append(body);
}

/// An untyped startup packet: Int32 length (whole packet), Int32 code, body.
inline ByteVector startup_packet(std::uint32_t code, const ByteVector& body) {
  return Wire().u32(static_cast<std::uint32_t>(body.size() + 8)).u32(code).append(body);
}

}  // namespace pgrelay::protocol::test
