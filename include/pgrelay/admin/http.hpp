// The HTTP endpoints for operators (Boost.Beast): /health, /ready, /topology, /metrics.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include <boost/asio/thread_pool.hpp>

#include "pgrelay/cluster/topology.hpp"
#include "pgrelay/config/config.hpp"
#include "pgrelay/net/asio.hpp"
#include "pgrelay/stats/stats.hpp"

namespace pgrelay::admin {

/// The answer to an operator action (POST): HTTP status and a JSON body.
struct ControlReply {
  int status = 200;
  std::string json;
};

/// What the endpoints read. All callables are thread-safe.
struct Sources {
  /// Operator actions: `action` is the path without '/' ("pause", "resume", "switchover"),
  /// `query` the URL's query string. May block (a switchover takes seconds): run on its own
  /// thread. Null: POST is refused.
  std::function<ControlReply(std::string_view action, std::string_view query)> control;
  std::function<std::shared_ptr<const cluster::Topology>()> topology;
  const stats::Stats* stats = nullptr;
  std::function<std::chrono::microseconds()> monitor_cpu;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

/// `/topology` as INTERFACE.md defines it.
[[nodiscard]] std::string topology_json(const cluster::Topology& topology,
                                        const stats::Stats& stats);

/// `/metrics` in the Prometheus text exposition format (version 0.0.4).
[[nodiscard]] std::string metrics_text(const cluster::Topology& topology, const stats::Stats& stats,
                                       std::chrono::microseconds monitor_cpu,
                                       std::chrono::steady_clock::time_point started);

/// Serves the endpoints on its own thread and io_context, apart from the workers.
class HttpServer {
 public:
  /// Binds at once; throws when the address cannot be used.
  HttpServer(const config::HttpSettings& settings, Sources sources);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  void start();
  void stop();

 private:
  net::asio::awaitable<void> accept_loop();
  net::asio::awaitable<void> serve(net::tcp::socket socket);

  Sources sources_;
  net::asio::io_context context_{1};
  net::asio::thread_pool control_pool_{1};  ///< runs operator actions, one at a time
  net::tcp::acceptor acceptor_;
  std::thread thread_;
};

}  // namespace pgrelay::admin
