// idle_clients: opens N logged-in PostgreSQL client connections and keeps them idle.
// Used by bench/run to measure a proxy's memory per idle client; built by bench/run itself:
//
//   g++ -O2 -std=c++20 bench/idle_clients.cpp -I/usr/include/postgresql -lpq -o idle_clients
//   idle_clients CONNINFO N [IN_FLIGHT]
//
// Connects with libpq's non-blocking PQconnectStart/PQconnectPoll, at most IN_FLIGHT (default
// 64) logins at a time, so that the proxy's listen backlog never overflows. A connection counts
// once PQconnectPoll reports PGRES_POLLING_OK, which libpq does only after the server's
// ReadyForQuery, that is once the login has completed. Then prints one line
//
//   ready OK FAILED SECONDS
//
// to stdout (flushed) and waits, without touching the connections, until SIGTERM or SIGINT;
// then closes every connection properly (Terminate) and exits 0. The first failure's message
// goes to stderr. Exit 2 on bad arguments.
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

struct Pending {
  PGconn* conn;
  PostgresPollingStatusType want;  // what PQconnectPoll asked for last
};

long parse_count(const char* text) {
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  return (end != text && *end == '\0' && value > 0) ? value : -1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::fprintf(stderr, "usage: %s CONNINFO N [IN_FLIGHT]\n", argv[0]);
    return 2;
  }
  const std::string conninfo = argv[1];
  const long total = parse_count(argv[2]);
  const long in_flight = argc == 4 ? parse_count(argv[3]) : 64;
  if (total < 0 || in_flight < 0) {
    std::fprintf(stderr, "idle_clients: N and IN_FLIGHT must be positive integers\n");
    return 2;
  }

  // Block the stop signals now; they are collected with sigwait() once everyone is in.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigprocmask(SIG_BLOCK, &stop_signals, nullptr);

  const auto started = std::chrono::steady_clock::now();
  std::vector<PGconn*> ready;
  ready.reserve(static_cast<size_t>(total));
  std::vector<Pending> pending;
  long launched = 0;
  long failed = 0;
  std::string first_error;

  auto fail = [&](PGconn* conn) {
    if (first_error.empty()) {
      first_error = conn ? PQerrorMessage(conn) : "out of memory";
    }
    ++failed;
    if (conn) PQfinish(conn);
  };

  while (launched < total || !pending.empty()) {
    while (launched < total && static_cast<long>(pending.size()) < in_flight) {
      ++launched;
      PGconn* conn = PQconnectStart(conninfo.c_str());
      if (!conn || PQstatus(conn) == CONNECTION_BAD) {
        fail(conn);
        continue;
      }
      pending.push_back({conn, PGRES_POLLING_WRITING});
    }
    if (pending.empty()) break;

    std::vector<pollfd> fds(pending.size());
    for (size_t i = 0; i < pending.size(); ++i) {
      fds[i].fd = PQsocket(pending[i].conn);
      fds[i].events = pending[i].want == PGRES_POLLING_READING ? POLLIN : POLLOUT;
      fds[i].revents = 0;
    }
    if (poll(fds.data(), fds.size(), 1000) < 0) continue;  // EINTR: go round again

    std::vector<Pending> still;
    still.reserve(pending.size());
    for (size_t i = 0; i < pending.size(); ++i) {
      if (fds[i].revents == 0) {
        still.push_back(pending[i]);
        continue;
      }
      const PostgresPollingStatusType status = PQconnectPoll(pending[i].conn);
      if (status == PGRES_POLLING_OK) {
        ready.push_back(pending[i].conn);
      } else if (status == PGRES_POLLING_FAILED) {
        fail(pending[i].conn);
      } else {
        still.push_back({pending[i].conn, status});
      }
    }
    pending.swap(still);
  }

  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (!first_error.empty()) {
    std::fprintf(stderr, "idle_clients: %ld of %ld logins failed, first: %s", failed, total,
                 first_error.c_str());
  }
  std::printf("ready %zu %ld %.2f\n", ready.size(), failed, seconds);
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  for (PGconn* conn : ready) PQfinish(conn);
  return 0;
}
