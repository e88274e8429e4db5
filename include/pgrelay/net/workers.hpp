// Worker threads, each running its own io_context, and SO_REUSEPORT listeners for them.
#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "pgrelay/net/asio.hpp"

namespace pgrelay::net {

/// N io_contexts, one thread each. Nothing on the hot path is shared between them.
class Workers {
 public:
  /// `count` 0 means one per core.
  explicit Workers(unsigned count);
  ~Workers();
  Workers(const Workers&) = delete;
  Workers& operator=(const Workers&) = delete;

  [[nodiscard]] std::size_t size() const { return contexts_.size(); }
  [[nodiscard]] asio::io_context& context(std::size_t i) { return *contexts_[i]; }

  /// Starts the threads; each runs until stop() or until its context runs out of work.
  void start();
  void stop();
  void join();
  /// Destroys the io_contexts (after join): handlers and coroutine frames still queued go with
  /// them, while everything they reference is still alive.
  void destroy();

 private:
  std::vector<std::unique_ptr<asio::io_context>> contexts_;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards_;
  std::vector<std::thread> threads_;
};

/// A listening socket with SO_REUSEADDR and SO_REUSEPORT, so every worker can have its own and
/// the kernel spreads connections over them. Throws on failure (a startup error).
[[nodiscard]] tcp::acceptor make_listener(asio::io_context& context, const std::string& address,
                                          std::uint16_t port);

/// Disables Nagle on a connected socket; PostgreSQL messages are small and latency-bound.
void set_no_delay(tcp::socket& socket);

}  // namespace pgrelay::net
