// pgrelay's entry point: command line, configuration, logging, signals; wires the modules.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <boost/asio/signal_set.hpp>
#include <boost/json.hpp>
#include <cstring>
#include <iostream>

#include "pgrelay/admin/http.hpp"
#include "pgrelay/auth/secrets.hpp"
#include "pgrelay/cluster/monitor.hpp"
#include "pgrelay/config/config.hpp"
#include "pgrelay/session/server.hpp"
#include "pgrelay/util/log.hpp"

namespace {

using namespace pgrelay;

void usage(std::ostream& out) {
  out << "usage: pgrelay -c FILE | --config FILE     run the proxy\n"
         "       pgrelay --check -c FILE             validate FILE, print FILE:LINE: message "
         "per error\n"
         "       pgrelay --version\n";
}

void print_errors(const config::LoadResult& result) {
  for (const auto& error : result.errors) std::cerr << error.format() << '\n';
}

void setup_logging(const config::Config& config) {
  auto logger = spdlog::stderr_color_mt("pgrelay");
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ %v");
  spdlog::set_default_logger(logger);
  util::set_log_level(spdlog::level::from_str(config.log.level));
  spdlog::flush_on(spdlog::level::info);
}

bool same_backends(const config::Config& a, const config::Config& b) {
  if (a.backends.size() != b.backends.size()) return false;
  for (std::size_t i = 0; i < a.backends.size(); ++i) {
    const auto& x = a.backends[i];
    const auto& y = b.backends[i];
    if (x.name != y.name || x.host != y.host || x.port != y.port || x.weight != y.weight) {
      return false;
    }
  }
  return true;
}

/// One `name=value` of a URL query string ("" when absent; no percent-decoding needed for
/// node names and numbers).
std::string query_value(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto pair = query.substr(0, amp);
    const auto eq = pair.find('=');
    if (pair.substr(0, eq) == name) return std::string(eq == pair.npos ? "" : pair.substr(eq + 1));
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return "";
}

/// The HTTP operator actions: POST /pause, /resume, /switchover?to=NODE[&timeout_ms=N].
pgrelay::session::ControlResult control(pgrelay::session::Server& server, std::string_view action,
                                        std::string_view query) {
  boost::json::object body;
  pgrelay::session::ControlResult reply;
  if (action == "pause") {
    server.pause();
    body["paused"] = true;
    body["running_transactions"] = server.active_transactions();
  } else if (action == "resume") {
    server.resume();
    body["paused"] = false;
  } else {
    const std::string to = query_value(query, "to");
    const std::string timeout = query_value(query, "timeout_ms");
    long long timeout_ms = 10000;
    if (!timeout.empty()) {
      try {
        timeout_ms = std::stoll(timeout);
      } catch (const std::exception&) {
        timeout_ms = -1;
      }
    }
    if (to.empty() || timeout_ms < 0) {
      reply.status = 400;
      body["error"] = reply.error = "usage: POST /switchover?to=NODE[&timeout_ms=N]";
    } else {
      const auto result = server.switchover(to, std::chrono::milliseconds(timeout_ms));
      reply.status = result.status;
      if (result.status != 200) body["error"] = reply.error = result.error;
      body["old_primary"] = result.old_primary;
      body["new_primary"] = result.new_primary;
      body["lsn"] = result.lsn;
      body["paused_ms"] = result.paused_ms;
      body["promote_ms"] = result.promote_ms;
      body["aborted_transactions"] = result.aborted;
    }
  }
  reply.json = boost::json::serialize(body);
  return reply;
}

int run(const std::string& path) {
  auto loaded = config::load_config(path);
  if (!loaded.config) {
    print_errors(loaded);
    return 1;
  }
  auto config = loaded.config;
  setup_logging(*config);
  spdlog::info("pgrelay {} starting with {}", PGRELAY_VERSION, path);
  for (const auto& note : config->inactive_notes) spdlog::warn("{}", note);

  cluster::MonitorOptions options;
  options.monitor = config->monitor;
  options.backends = config->backends;
  options.max_lag_bytes = config->routing.max_lag_bytes;
  options.max_lag_ms = config->routing.max_lag_ms;
  auto monitor = std::make_unique<cluster::Monitor>(options);

  std::shared_ptr<const auth::SecretStore> secrets;
  if (!config->auth.file.empty()) {
    std::string error;
    secrets = auth::load_secret_store(config->auth.file, error);
    if (!secrets) {
      spdlog::critical("cannot start: auth.file {}", error);
      return 1;
    }
    spdlog::info("{} users loaded from {}", secrets->size(), config->auth.file);
  }

  std::unique_ptr<session::Server> server;
  std::unique_ptr<admin::HttpServer> http;
  try {
    server = std::make_unique<session::Server>(config, *monitor);
    server->set_secrets(secrets);
    server->set_control([s = server.get()](std::string_view action, std::string_view query) {
      return control(*s, action, query);
    });
    if (config->http.enabled) {
      admin::Sources sources;
      sources.topology = [m = monitor.get()] { return m->topology(); };
      sources.stats = &server->stats();
      sources.monitor_cpu = [m = monitor.get()] { return m->cpu_time(); };
      sources.control = [s = server.get()](std::string_view action, std::string_view query) {
        const auto result = control(*s, action, query);
        return admin::ControlReply{result.status, result.json};
      };
      http = std::make_unique<admin::HttpServer>(config->http, std::move(sources));
    }
  } catch (const std::exception& e) {
    spdlog::critical("cannot start: {}", e.what());
    return 1;
  }
  monitor->set_listener([s = server.get()](const cluster::Topology&, const cluster::Topology&) {
    s->topology_changed();
  });
  monitor->start();
  // Give the first probes a moment so the first clients need not wait for a primary.
  monitor->wait_first_round(std::chrono::milliseconds(3000));
  server->start();
  if (http) http->start();

  net::asio::io_context control;
  net::asio::signal_set signals(control, SIGINT, SIGTERM, SIGHUP);
  int exit_code = 0;
  std::function<void(const net::error_code&, int)> on_signal = [&](const net::error_code& ec,
                                                                   int signal) {
    if (ec) return;
    if (signal == SIGHUP) {
      auto reloaded = config::load_config(path);
      if (!reloaded.config) {
        for (const auto& error : reloaded.errors) {
          spdlog::error("reload: {}", error.format());
        }
        spdlog::error("reload failed; keeping the running configuration");
      } else {
        if (!same_backends(*config, *reloaded.config)) {
          spdlog::warn("reload: [[backend]] changes need a restart in this version; ignored");
        }
        const auto& next = *reloaded.config;
        monitor->update_thresholds(next.monitor.interval_ms, next.monitor.failure_threshold,
                                   next.routing.max_lag_bytes, next.routing.max_lag_ms);
        util::set_log_level(spdlog::level::from_str(next.log.level));
        bool ok = true;
        if (!next.auth.file.empty()) {
          std::string error;
          auto reloaded_secrets = auth::load_secret_store(next.auth.file, error);
          if (reloaded_secrets) {
            server->set_secrets(std::move(reloaded_secrets));
          } else {
            spdlog::error("reload: auth.file {}; keeping the running configuration", error);
            ok = false;
          }
        } else {
          server->set_secrets(nullptr);
        }
        if (ok) {
          config = reloaded.config;
          server->reload(config);
        }
        if (ok) spdlog::info("configuration reloaded from {}", path);
      }
      signals.async_wait(on_signal);
      return;
    }
    if (signal == SIGTERM) {
      server->shutdown(std::chrono::milliseconds(config->limits.shutdown_timeout_ms));
    } else {
      spdlog::info("interrupted: exiting at once");
      spdlog::default_logger()->flush();
      std::_Exit(0);
    }
    control.stop();
  };
  signals.async_wait(on_signal);
  control.run();
  if (http) http->stop();
  monitor->stop();
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  bool check = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if ((arg == "-c" || arg == "--config") && i + 1 < argc) {
      config_path = argv[++i];
    } else if (arg.starts_with("--config=")) {
      config_path = std::string(arg.substr(9));
    } else if (arg == "--check") {
      check = true;
    } else if (arg == "--version") {
      std::cout << "pgrelay " << PGRELAY_VERSION << '\n';
      return 0;
    } else if (arg == "-h" || arg == "--help") {
      usage(std::cout);
      return 0;
    } else {
      std::cerr << "pgrelay: unknown argument \"" << arg << "\"\n";
      usage(std::cerr);
      return 2;
    }
  }
  if (config_path.empty()) {
    usage(std::cerr);
    return 2;
  }
  if (check) {
    const auto result = config::load_config(config_path);
    print_errors(result);
    if (result.config) std::cout << config_path << ": configuration is valid\n";
    return result.config ? 0 : 1;
  }
  try {
    return run(config_path);
  } catch (const std::exception& e) {
    // Startup errors end here (an address in use, say); the data path never throws this far.
    std::cerr << "pgrelay: " << e.what() << '\n';
    return 1;
  }
}
