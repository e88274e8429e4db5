// Worker threads and listeners.
#include "pgrelay/net/workers.hpp"

#include <sys/socket.h>

namespace pgrelay::net {

Workers::Workers(unsigned count) {
  if (count == 0) count = std::max(1U, std::thread::hardware_concurrency());
  // Only the worker's own thread touches its sockets and timers (other threads post to it),
  // so the reactor's per-descriptor locks can go; posting from other threads stays locked.
  for (unsigned i = 0; i < count; ++i) {
    contexts_.push_back(std::make_unique<asio::io_context>(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO));
  }
}

Workers::~Workers() {
  stop();
  join();
}

void Workers::start() {
  for (auto& context : contexts_) {
    guards_.push_back(asio::make_work_guard(*context));
    threads_.emplace_back([ctx = context.get()] { ctx->run(); });
  }
}

void Workers::stop() {
  guards_.clear();
  for (auto& context : contexts_) context->stop();
}

void Workers::join() {
  for (auto& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
  threads_.clear();
}

void Workers::destroy() {
  guards_.clear();
  contexts_.clear();
}

tcp::acceptor make_listener(asio::io_context& context, const std::string& address,
                            std::uint16_t port) {
  const tcp::endpoint endpoint(asio::ip::make_address(address), port);
  tcp::acceptor acceptor(context);
  acceptor.open(endpoint.protocol());
  acceptor.set_option(asio::socket_base::reuse_address(true));
  const int one = 1;
  if (::setsockopt(acceptor.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    throw boost::system::system_error(error_code(errno, boost::system::system_category()),
                                      "SO_REUSEPORT");
  }
  acceptor.bind(endpoint);
  acceptor.listen(asio::socket_base::max_listen_connections);
  return acceptor;
}

void set_no_delay(tcp::socket& socket) {
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
}

}  // namespace pgrelay::net
