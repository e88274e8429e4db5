// Buffer sizes and timings shared by pass-through and pooled sessions (internal header).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace pgrelay::session::detail {

/// Relay buffers per direction. Large enough that a big result streams in few syscalls. A
/// pooled session borrows them from its worker only while it has traffic, so both directions
/// use one size and a buffer given back fits either.
inline constexpr std::size_t kServerBufferSize = 32 * 1024;
inline constexpr std::size_t kClientBufferSize = kServerBufferSize;
/// Largest client message accepted during login (password, SASL): PostgreSQL's auth token limit.
inline constexpr std::uint32_t kMaxLoginMessage = 65535;
/// How often a session re-reads the topology while waiting for a primary.
inline constexpr auto kPrimaryPoll = std::chrono::milliseconds(20);
/// How long pgrelay tries to deliver its last FATAL to a client before closing anyway.
inline constexpr auto kFinalWriteTimeout = std::chrono::seconds(1);

}  // namespace pgrelay::session::detail
