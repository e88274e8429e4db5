// Big-endian integer reads and writes over byte spans, shared by the codec's parsers and builders.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

namespace pgrelay::protocol {

/// Bytes as the codec sees them. Unsigned so that Asio buffers and OpenSSL agree.
using Bytes = std::span<const std::uint8_t>;
using ByteVector = std::vector<std::uint8_t>;

inline std::uint32_t read_u32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}

inline std::uint16_t read_u16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}

inline void append_u32(ByteVector& out, std::uint32_t v) {
  out.push_back(static_cast<std::uint8_t>(v >> 24));
  out.push_back(static_cast<std::uint8_t>(v >> 16));
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v));
}

inline void write_u32(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}

/// Appends a NUL-terminated string, as the protocol's String type.
inline void append_cstring(ByteVector& out, std::string_view s) {
  out.insert(out.end(), s.begin(), s.end());
  out.push_back(0);
}

/// Reads a NUL-terminated string starting at `pos`; advances `pos` past the NUL.
/// Returns false when no NUL is found before the end.
inline bool read_cstring(Bytes body, std::size_t& pos, std::string_view& out) {
  if (pos >= body.size()) return false;
  // memchr, not a byte loop: every Query and Parse body goes through here.
  const auto* start = body.data() + pos;
  const auto* nul = static_cast<const std::uint8_t*>(std::memchr(start, 0, body.size() - pos));
  if (nul == nullptr) return false;
  out =
      std::string_view(reinterpret_cast<const char*>(start), static_cast<std::size_t>(nul - start));
  pos += static_cast<std::size_t>(nul - start) + 1;
  return true;
}

}  // namespace pgrelay::protocol
