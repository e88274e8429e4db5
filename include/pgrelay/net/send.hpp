// Writes that finish without the scheduler when the socket buffer has room.
//
// An Asio write that completes at once still posts its completion and goes round the scheduler
// (one more epoll_wait and a coroutine resume). Relayed messages nearly always fit the socket
// buffer, so pgrelay first sends them itself with MSG_DONTWAIT and only waits for what is left.
#pragma once

#include <cstddef>
#include <span>
#include <tuple>

#include "pgrelay/net/asio.hpp"
#include "pgrelay/net/tls.hpp"

namespace pgrelay::net {

/// One non-blocking sendmsg() of the buffers (at most IOV_MAX of them); returns the bytes
/// sent. A full socket buffer is not an error: it returns 0 (or a short count) with `ec` clear.
std::size_t send_now(tcp::socket& socket, std::span<const asio::const_buffer> buffers,
                     error_code& ec);

/// One buffer (pgrelay's own small messages: Terminate, a deferred BEGIN, parameter syncs).
inline std::size_t send_now(tcp::socket& socket, asio::const_buffer buffer, error_code& ec) {
  return send_now(socket, std::span<const asio::const_buffer>(&buffer, 1), ec);
}

/// One non-blocking recv(): the bytes read, 0 with `ec` clear when there is nothing to read,
/// asio::error::eof when the peer has closed.
std::size_t receive_now(tcp::socket& socket, asio::mutable_buffer buffer, error_code& ec);

/// Writes every byte: send_now() first, then asynchronously whatever did not fit.
asio::awaitable<std::tuple<error_code, std::size_t>> write_all(
    tcp::socket& socket, std::span<const asio::const_buffer> buffers);

/// The second half of write_all(), after a send_now() that sent `sent` bytes of `buffers`:
/// writes the rest and returns the total. The relay loops call send_now() themselves and this
/// only when it fell short, so a write that fits costs no coroutine frame either.
asio::awaitable<std::tuple<error_code, std::size_t>> write_rest(
    tcp::socket& socket, std::span<const asio::const_buffer> buffers, std::size_t sent);

/// The TLS stream has no shortcut: records are written by the TLS engine.
asio::awaitable<std::tuple<error_code, std::size_t>> write_all(
    TlsStream& stream, std::span<const asio::const_buffer> buffers);

}  // namespace pgrelay::net
