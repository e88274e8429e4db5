// HTTP endpoints: health, readiness, topology JSON and Prometheus metrics.
#include "pgrelay/admin/http.hpp"

#include <spdlog/spdlog.h>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <charconv>
#include <sstream>

namespace pgrelay::admin {

namespace asio = net::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;

std::string topology_json(const cluster::Topology& topology, const stats::Stats& stats) {
  json::object root;
  const auto* primary = topology.primary_node();
  root["primary"] = primary != nullptr ? json::value(primary->name) : json::value(nullptr);
  root["generation"] = topology.generation;
  json::array nodes;
  for (std::size_t i = 0; i < topology.nodes.size(); ++i) {
    const auto& n = topology.nodes[i];
    json::object node;
    node["name"] = n.name;
    node["host"] = n.host;
    node["port"] = n.port;
    node["role"] = cluster::to_string(n.role);
    node["timeline"] = n.timeline;
    node["lsn"] = n.probed ? json::value(cluster::format_lsn(n.lsn())) : json::value(nullptr);
    node["replay_lag_bytes"] = n.replay_lag_bytes;
    node["replay_lag_ms"] = n.replay_lag_ms;
    node["eligible"] = n.eligible;
    node["clients"] = i < stats.backend_count() ? stats.backend(i).clients.load() : 0;
    node["streaming"] = n.streaming;
    node["probe_rtt_us"] = n.rtt_us;
    if (!n.last_error.empty()) node["last_error"] = n.last_error;
    nodes.push_back(std::move(node));
  }
  root["nodes"] = std::move(nodes);
  return json::serialize(root);
}

namespace {

/// Label values escaped as the exposition format requires.
std::string label(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

class Writer {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_ << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
  }
  template <typename T>
  void sample(std::string_view name, std::string_view labels, T value) {
    out_ << name;
    if (!labels.empty()) out_ << '{' << labels << '}';
    // Shortest text that reads back exactly (no rounding to 6 digits, as ostream would).
    std::array<char, 32> text{};
    const auto end = std::to_chars(text.data(), text.data() + text.size(), value).ptr;
    out_ << ' ' << std::string_view(text.data(), static_cast<std::size_t>(end - text.data()))
         << '\n';
  }
  std::string str() const { return out_.str(); }

 private:
  std::ostringstream out_;
};

}  // namespace

std::string metrics_text(const cluster::Topology& topology, const stats::Stats& stats,
                         std::chrono::microseconds monitor_cpu,
                         std::chrono::steady_clock::time_point started) {
  Writer w;
  const auto backend_label = [&](std::size_t i) {
    return "backend=\"" + label(topology.nodes[i].name) + "\"";
  };
  const std::size_t count = topology.nodes.size();

  w.family("pgrelay_up", "gauge", "1 while the process serves.");
  w.sample("pgrelay_up", "", 1);
  w.family("pgrelay_uptime_seconds", "gauge", "Seconds since pgrelay started.");
  w.sample("pgrelay_uptime_seconds", "",
           std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  w.family("pgrelay_primary_known", "gauge", "1 when a primary is known, else 0.");
  w.sample("pgrelay_primary_known", "", topology.primary >= 0 ? 1 : 0);
  w.family("pgrelay_topology_generation", "gauge", "Generation of the current topology snapshot.");
  w.sample("pgrelay_topology_generation", "", topology.generation);

  w.family("pgrelay_backend_up", "gauge", "1 when the backend's last probe succeeded.");
  for (std::size_t i = 0; i < count; ++i) {
    const auto& n = topology.nodes[i];
    w.sample("pgrelay_backend_up", backend_label(i),
             n.probed && n.consecutive_failures == 0 && n.role != cluster::NodeRole::kDown ? 1 : 0);
  }
  w.family("pgrelay_backend_role", "gauge", "1 for the backend's current role.");
  for (std::size_t i = 0; i < count; ++i) {
    for (auto role :
         {cluster::NodeRole::kPrimary, cluster::NodeRole::kStandby, cluster::NodeRole::kDown,
          cluster::NodeRole::kFenced, cluster::NodeRole::kUnknown}) {
      w.sample("pgrelay_backend_role",
               backend_label(i) + ",role=\"" + std::string(cluster::to_string(role)) + "\"",
               topology.nodes[i].role == role ? 1 : 0);
    }
  }
  w.family("pgrelay_backend_fenced", "gauge",
           "1 when the backend claims to be primary but is fenced (older timeline or split "
           "brain).");
  for (std::size_t i = 0; i < count; ++i) {
    w.sample("pgrelay_backend_fenced", backend_label(i),
             topology.nodes[i].role == cluster::NodeRole::kFenced ? 1 : 0);
  }
  w.family("pgrelay_backend_eligible", "gauge", "1 when the standby may serve reads now.");
  for (std::size_t i = 0; i < count; ++i) {
    w.sample("pgrelay_backend_eligible", backend_label(i), topology.nodes[i].eligible ? 1 : 0);
  }
  w.family("pgrelay_backend_timeline", "gauge", "Timeline the backend reported.");
  for (std::size_t i = 0; i < count; ++i) {
    w.sample("pgrelay_backend_timeline", backend_label(i), topology.nodes[i].timeline);
  }
  w.family("pgrelay_backend_lsn_bytes", "gauge",
           "Primary: current WAL LSN; standby: replay LSN (bytes since 0/0).");
  for (std::size_t i = 0; i < count; ++i) {
    w.sample("pgrelay_backend_lsn_bytes", backend_label(i), topology.nodes[i].lsn());
  }
  w.family("pgrelay_backend_replay_lag_bytes", "gauge",
           "Primary LSN minus the standby's replay LSN.");
  for (std::size_t i = 0; i < count; ++i) {
    w.sample("pgrelay_backend_replay_lag_bytes", backend_label(i),
             topology.nodes[i].replay_lag_bytes);
  }
  w.family("pgrelay_backend_replay_lag_seconds", "gauge",
           "How long ago the primary was first seen past the standby's replay LSN.");
  for (std::size_t i = 0; i < count; ++i) {
    w.sample("pgrelay_backend_replay_lag_seconds", backend_label(i),
             static_cast<double>(topology.nodes[i].replay_lag_ms) / 1000.0);
  }
  w.family("pgrelay_backend_probe_seconds", "gauge", "Round trip of the last probe query.");
  for (std::size_t i = 0; i < count; ++i) {
    w.sample("pgrelay_backend_probe_seconds", backend_label(i),
             static_cast<double>(topology.nodes[i].rtt_us) / 1e6);
  }
  w.family("pgrelay_backend_probes_total", "counter", "Probes of the backend.");
  for (std::size_t i = 0; i < count; ++i) {
    w.sample("pgrelay_backend_probes_total", backend_label(i), topology.nodes[i].probes_total);
  }
  w.family("pgrelay_backend_probe_failures_total", "counter", "Failed probes of the backend.");
  for (std::size_t i = 0; i < count; ++i) {
    w.sample("pgrelay_backend_probe_failures_total", backend_label(i),
             topology.nodes[i].probe_failures_total);
  }
  w.family("pgrelay_backend_connections", "gauge", "Client sessions served by the backend.");
  for (std::size_t i = 0; i < count && i < stats.backend_count(); ++i) {
    w.sample("pgrelay_backend_connections", backend_label(i), stats.backend(i).clients.load());
  }
  w.family("pgrelay_routed_total", "counter", "Routing decisions by backend and kind.");
  for (std::size_t i = 0; i < count && i < stats.backend_count(); ++i) {
    w.sample("pgrelay_routed_total", backend_label(i) + ",kind=\"read\"", stats.routed_read(i));
    w.sample("pgrelay_routed_total", backend_label(i) + ",kind=\"write\"", stats.routed_write(i));
    w.sample("pgrelay_routed_total", backend_label(i) + ",kind=\"replication\"",
             stats.backend(i).routed_replication.load());
  }
  w.family("pgrelay_failovers_total", "counter", "Times the primary moved to another node.");
  w.sample("pgrelay_failovers_total", "", topology.failovers);
  w.family("pgrelay_role_changes_total", "counter", "Role transitions of any backend.");
  w.sample("pgrelay_role_changes_total", "", topology.role_changes);
  w.family("pgrelay_monitor_cpu_seconds_total", "counter", "CPU time of the probe threads.");
  w.sample("pgrelay_monitor_cpu_seconds_total", "",
           std::chrono::duration<double>(monitor_cpu).count());

  std::uint64_t connections = 0;
  std::uint64_t login_failures = 0;
  std::uint64_t protocol_errors = 0;
  std::array<std::uint64_t, stats::kLatencyBuckets.size() + 1> buckets{};
  std::uint64_t sum_ns = 0;
  std::int64_t pool_servers = 0;
  std::int64_t pool_idle = 0;
  std::int64_t pool_waiting = 0;
  std::uint64_t pool_opened = 0;
  std::uint64_t pool_timeouts = 0;
  std::uint64_t pool_login_failures = 0;
  std::uint64_t pinned = 0;
  std::uint64_t lost = 0;
  std::uint64_t watermark_queries = 0;
  for (const auto& worker : stats.workers()) {
    pool_servers += worker.pool.server_connections.load();
    pool_idle += worker.pool.idle.load();
    pool_waiting += worker.pool.waiting.load();
    pool_opened += worker.pool.opened_total.load();
    pool_timeouts += worker.pool.acquire_timeouts_total.load();
    pool_login_failures += worker.pool.login_failures_total.load();
    pinned += worker.pinned_total.load();
    lost += worker.transactions_lost_total.load();
    watermark_queries += worker.watermark_queries_total.load();
    connections += worker.connections_total.load();
    login_failures += worker.login_failures_total.load();
    protocol_errors += worker.protocol_errors_total.load();
    for (std::size_t b = 0; b < buckets.size(); ++b) buckets[b] += worker.latency_buckets[b].load();
    sum_ns += worker.latency_sum_ns.load();
  }
  w.family("pgrelay_route_decisions_total", "counter",
           "Transactions routed (transaction pooling), by the reason for the node chosen.");
  for (std::size_t r = 0; r < stats::kRouteReasons.size(); ++r) {
    std::uint64_t total = 0;
    for (const auto& worker : stats.workers()) total += worker.route_reasons[r].load();
    w.sample("pgrelay_route_decisions_total",
             "reason=\"" + std::string(stats::kRouteReasons[r]) + "\"", total);
  }
  w.family("pgrelay_watermark_queries_total", "counter",
           "Read-your-writes watermark queries (the primary's WAL insert LSN) pgrelay sent.");
  w.sample("pgrelay_watermark_queries_total", "", watermark_queries);
  w.family("pgrelay_client_connections", "gauge", "Client connections open now.");
  w.sample("pgrelay_client_connections", "", stats.client_connections.load());
  w.family("pgrelay_clients_parked", "gauge",
           "Client connections parked now: idle in transaction pooling past park_after_ms, "
           "holding no buffers, timers or coroutines.");
  w.sample("pgrelay_clients_parked", "", stats.clients_parked.load());
  w.family("pgrelay_client_parks_total", "counter", "Times a client was parked.");
  w.sample("pgrelay_client_parks_total", "", stats.client_parks_total.load());
  w.family("pgrelay_client_connections_total", "counter", "Client connections accepted.");
  w.sample("pgrelay_client_connections_total", "", connections);
  w.family("pgrelay_login_failures_total", "counter",
           "Client logins that failed (refused, no primary, timeout).");
  w.sample("pgrelay_login_failures_total", "", login_failures);
  w.family("pgrelay_protocol_errors_total", "counter", "Clients closed for protocol violations.");
  w.sample("pgrelay_protocol_errors_total", "", protocol_errors);
  w.family("pgrelay_pool_server_connections", "gauge",
           "Pooled server connections open now (lent and idle).");
  w.sample("pgrelay_pool_server_connections", "", pool_servers);
  w.family("pgrelay_pool_idle_connections", "gauge", "Pooled server connections idle now.");
  w.sample("pgrelay_pool_idle_connections", "", pool_idle);
  w.family("pgrelay_pool_waiting_clients", "gauge", "Clients waiting for a server connection now.");
  w.sample("pgrelay_pool_waiting_clients", "", pool_waiting);
  w.family("pgrelay_pool_connections_opened_total", "counter",
           "Server connections the pools opened.");
  w.sample("pgrelay_pool_connections_opened_total", "", pool_opened);
  w.family("pgrelay_pool_acquire_timeouts_total", "counter",
           "Clients refused with 53300 after waiting acquire_timeout_ms.");
  w.sample("pgrelay_pool_acquire_timeouts_total", "", pool_timeouts);
  w.family("pgrelay_pool_login_failures_total", "counter",
           "Server logins by the pools that failed.");
  w.sample("pgrelay_pool_login_failures_total", "", pool_login_failures);
  w.family("pgrelay_pinned_clients_total", "counter",
           "Transaction-mode clients pinned to their server connection (LISTEN, temp tables, "
           "session advisory locks, WITH HOLD cursors, SET SESSION AUTHORIZATION).");
  w.sample("pgrelay_pinned_clients_total", "", pinned);
  w.family("pgrelay_server_losses_total", "counter",
           "Server connections lost under a transaction-mode client (failover, crash, "
           "termination) that the client's session survived.");
  w.sample("pgrelay_server_losses_total", "", lost);

  w.family("pgrelay_request_duration_seconds", "histogram",
           "Client request to ReadyForQuery round trips, as seen by pgrelay.");
  std::uint64_t cumulative = 0;
  for (std::size_t b = 0; b < stats::kLatencyBuckets.size(); ++b) {
    cumulative += buckets[b];
    std::array<char, 32> le{};
    const auto end = std::to_chars(le.data(), le.data() + le.size(), stats::kLatencyBuckets[b],
                                   std::chars_format::fixed)
                         .ptr;
    w.sample("pgrelay_request_duration_seconds_bucket",
             "le=\"" + std::string(le.data(), end) + "\"", cumulative);
  }
  cumulative += buckets.back();
  w.sample("pgrelay_request_duration_seconds_bucket", "le=\"+Inf\"", cumulative);
  w.sample("pgrelay_request_duration_seconds_sum", "", static_cast<double>(sum_ns) / 1e9);
  w.sample("pgrelay_request_duration_seconds_count", "", cumulative);
  return w.str();
}

HttpServer::HttpServer(const config::HttpSettings& settings, Sources sources)
    : sources_(std::move(sources)), acceptor_(context_) {
  const net::tcp::endpoint endpoint(asio::ip::make_address(settings.address), settings.port);
  acceptor_.open(endpoint.protocol());
  acceptor_.set_option(asio::socket_base::reuse_address(true));
  acceptor_.bind(endpoint);
  acceptor_.listen();
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  asio::co_spawn(context_, accept_loop(), asio::detached);
  thread_ = std::thread([this] { context_.run(); });
  const auto ep = acceptor_.local_endpoint();
  spdlog::info("HTTP endpoints on {}:{} (/health /ready /topology /metrics)",
               ep.address().to_string(), ep.port());
}

void HttpServer::stop() {
  context_.stop();
  if (thread_.joinable()) thread_.join();
  control_pool_.stop();
  control_pool_.join();
}

asio::awaitable<void> HttpServer::accept_loop() {
  while (true) {
    auto [ec, socket] = co_await acceptor_.async_accept(net::kNoThrow);
    if (ec) {
      if (!acceptor_.is_open()) co_return;
      continue;
    }
    asio::co_spawn(context_, serve(std::move(socket)), asio::detached);
  }
}

namespace {

/// Runs an operator action on the control thread (parameters by value: the coroutine owns them).
asio::awaitable<ControlReply> run_control(
    std::function<ControlReply(std::string_view, std::string_view)> control, std::string name,
    std::string query) {
  co_return control(name, query);
}

}  // namespace

asio::awaitable<void> HttpServer::serve(net::tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  while (true) {
    stream.expires_after(std::chrono::seconds(30));
    http::request<http::string_body> request;
    auto [ec, n] = co_await http::async_read(stream, buffer, request, net::kNoThrow);
    if (ec) break;
    http::response<http::string_body> response;
    response.version(request.version());
    response.keep_alive(request.keep_alive());
    const std::string_view target(request.target().data(), request.target().size());
    const std::string_view path = target.substr(0, target.find('?'));
    const auto topology = sources_.topology();
    const bool action = path == "/pause" || path == "/resume" || path == "/switchover";
    if (action && request.method() == http::verb::post && sources_.control) {
      const std::string query(target.size() > path.size() ? target.substr(path.size() + 1) : "");
      const std::string name(path.substr(1));
      const auto reply = co_await asio::co_spawn(
          control_pool_, run_control(sources_.control, name, query), asio::use_awaitable);
      response.result(static_cast<http::status>(reply.status));
      response.set(http::field::content_type, "application/json");
      response.body() = reply.json + "\n";
    } else if (action) {
      response.result(http::status::method_not_allowed);
      response.set(http::field::allow, "POST");
      response.body() = "method not allowed: use POST\n";
    } else if (request.method() != http::verb::get) {
      response.result(http::status::method_not_allowed);
      response.set(http::field::allow, "GET");
      response.body() = "method not allowed\n";
    } else if (path == "/health") {
      response.result(http::status::ok);
      response.body() = "ok\n";
    } else if (path == "/ready") {
      const bool ready = topology->primary >= 0;
      response.result(ready ? http::status::ok : http::status::service_unavailable);
      response.body() = ready ? "ready: primary " + topology->primary_node()->name + "\n"
                              : std::string("not ready: no primary\n");
    } else if (path == "/topology") {
      response.result(http::status::ok);
      response.set(http::field::content_type, "application/json");
      response.body() = topology_json(*topology, *sources_.stats) + "\n";
    } else if (path == "/metrics") {
      response.result(http::status::ok);
      response.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
      response.body() =
          metrics_text(*topology, *sources_.stats, sources_.monitor_cpu(), sources_.started);
    } else {
      response.result(http::status::not_found);
      response.body() =
          "not found: try GET /health /ready /topology /metrics, POST /pause /resume "
          "/switchover?to=NODE\n";
    }
    if (response.find(http::field::content_type) == response.end()) {
      response.set(http::field::content_type, "text/plain; charset=utf-8");
    }
    response.prepare_payload();
    auto [wec, wn] = co_await http::async_write(stream, response, net::kNoThrow);
    if (wec || !response.keep_alive()) break;
  }
  beast::error_code ignored;
  stream.socket().shutdown(net::tcp::socket::shutdown_send, ignored);
}

}  // namespace pgrelay::admin
