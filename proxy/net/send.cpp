#include "pgrelay/net/send.hpp"

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <vector>

namespace pgrelay::net {

namespace {
constexpr std::size_t kMaxIov = 64;
}  // namespace

std::size_t send_now(tcp::socket& socket, std::span<const asio::const_buffer> buffers,
                     error_code& ec) {
  ec.clear();
  std::array<iovec, kMaxIov> iov;  // only the first `count` are filled and passed
  const std::size_t count = std::min(buffers.size(), kMaxIov);
  for (std::size_t i = 0; i < count; ++i) {
    iov[i].iov_base = const_cast<void*>(buffers[i].data());
    iov[i].iov_len = buffers[i].size();
  }
  msghdr message{};
  message.msg_iov = iov.data();
  message.msg_iovlen = count;
  while (true) {
    const ssize_t sent = ::sendmsg(socket.native_handle(), &message, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent >= 0) return static_cast<std::size_t>(sent);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    ec = error_code(errno, boost::system::system_category());
    return 0;
  }
}

std::size_t receive_now(tcp::socket& socket, asio::mutable_buffer buffer, error_code& ec) {
  ec.clear();
  while (true) {
    const ssize_t n = ::recv(socket.native_handle(), buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (n > 0) return static_cast<std::size_t>(n);
    if (n == 0) {
      ec = asio::error::eof;
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    ec = error_code(errno, boost::system::system_category());
    return 0;
  }
}

asio::awaitable<std::tuple<error_code, std::size_t>> write_all(
    tcp::socket& socket, std::span<const asio::const_buffer> buffers) {
  error_code ec;
  const std::size_t sent = send_now(socket, buffers, ec);
  if (ec || sent == asio::buffer_size(buffers)) co_return std::tuple{ec, sent};
  co_return co_await write_rest(socket, buffers, sent);
}

asio::awaitable<std::tuple<error_code, std::size_t>> write_rest(
    tcp::socket& socket, std::span<const asio::const_buffer> buffers, std::size_t sent) {
  std::vector<asio::const_buffer> rest;
  std::size_t skip = sent;
  for (const auto& buffer : buffers) {
    if (skip >= buffer.size()) {
      skip -= buffer.size();
      continue;
    }
    rest.push_back(buffer + skip);
    skip = 0;
  }
  auto [wec, more] = co_await asio::async_write(socket, rest, kNoThrow);
  co_return std::tuple{wec, sent + more};
}

asio::awaitable<std::tuple<error_code, std::size_t>> write_all(
    TlsStream& stream, std::span<const asio::const_buffer> buffers) {
  co_return co_await asio::async_write(stream, buffers, kNoThrow);
}

}  // namespace pgrelay::net
