// Chaos suite plumbing: commands, ports, node SQL, the pgrelay process and its admin HTTP calls.
#include "control.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <boost/json.hpp>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <utility>

namespace pgrelay::chaos {

namespace {

int connect_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

std::string pg_bin_dir() {
  if (const char* env = std::getenv("PGBIN"); env != nullptr && *env != '\0') return env;
  auto found = run_command("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1");
  while (!found.output.empty() && found.output.back() == '\n') found.output.pop_back();
  return found.output;
}

double ms_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

std::string shell_quote(const std::string& text) {
  std::string quoted = "'";
  for (const char c : text) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

std::optional<std::uint64_t> parse_lsn(const std::string& text) {
  const auto slash = text.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 >= text.size()) return std::nullopt;
  try {
    std::size_t used_high = 0;
    std::size_t used_low = 0;
    const auto high = std::stoull(text.substr(0, slash), &used_high, 16);
    const auto low = std::stoull(text.substr(slash + 1), &used_low, 16);
    if (used_high != slash || used_low != text.size() - slash - 1) return std::nullopt;
    return (high << 32) | low;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string QueryResult::value() const {
  if (rows.empty() || rows.front().empty()) return {};
  return rows.front().front();
}

QueryResult query(const std::string& conninfo, const std::string& sql) {
  QueryResult result;
  PGconn* conn = PQconnectdb(conninfo.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    result.error = PQerrorMessage(conn);
    PQfinish(conn);
    return result;
  }
  PQsetNoticeProcessor(
      conn, [](void* /*arg*/, const char* /*message*/) {}, nullptr);
  // PQexec returns the last statement's result; every earlier one must have worked for it to run.
  PGresult* res = PQexec(conn, sql.c_str());
  const auto status = PQresultStatus(res);
  if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) {
    result.ok = true;
    for (int row = 0; row < PQntuples(res); ++row) {
      std::vector<std::string> values;
      for (int col = 0; col < PQnfields(res); ++col) values.emplace_back(PQgetvalue(res, row, col));
      result.rows.push_back(std::move(values));
    }
  } else {
    const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    result.error = std::string(state != nullptr ? state : "?????") + " " + PQerrorMessage(conn);
  }
  PQclear(res);
  PQfinish(conn);
  return result;
}

Cluster::Cluster(std::string script, std::string dir, std::vector<Node> nodes)
    : script_(std::move(script)), dir_(std::move(dir)), nodes_(std::move(nodes)) {}

int Cluster::port(const std::string& name) const {
  for (const auto& node : nodes_) {
    if (node.name == name) return node.port;
  }
  throw std::runtime_error("no node " + name);
}

CommandResult Cluster::try_script(const std::string& command, const std::string& args) const {
  return run_command(shell_quote(script_) + " " + command + " " + shell_quote(dir_) + " " + args);
}

void Cluster::script(const std::string& command, const std::string& args) const {
  const auto result = try_script(command, args);
  if (result.status != 0) {
    throw std::runtime_error("scripts/cluster " + command + " " + args + " failed (exit " +
                             std::to_string(result.status) + "): " + result.output);
  }
}

std::string Cluster::superuser(const std::string& name, const std::string& database) const {
  return "host=" + dir_ + "/sockets port=" + std::to_string(port(name)) +
         " user=postgres dbname=" + database + " connect_timeout=5";
}

QueryResult Cluster::sql(const std::string& name, const std::string& text,
                         const std::string& database) const {
  return query(superuser(name, database), text);
}

std::optional<std::uint64_t> Cluster::checkpoint_lsn(const std::string& name) const {
  static const std::string kControlData = pg_bin_dir() + "/pg_controldata";
  const auto result =
      run_command(shell_quote(kControlData) + " -D " + shell_quote(dir_ + "/" + name));
  if (result.status != 0) return std::nullopt;
  const std::string key = "Latest checkpoint location:";
  const auto at = result.output.find(key);
  if (at == std::string::npos) return std::nullopt;
  std::istringstream rest(result.output.substr(at + key.size()));
  std::string lsn;
  rest >> lsn;
  return parse_lsn(lsn);
}

Proxy::Proxy(std::string binary, std::string config_path, std::string log_path)
    : binary_(std::move(binary)),
      config_path_(std::move(config_path)),
      log_path_(std::move(log_path)) {}

Proxy::~Proxy() {
  if (pid_ > 0) stop(SIGKILL, std::chrono::seconds(5));
}

void Proxy::start(int port) {
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    // The suite's main thread forks, so this fires only when the suite itself is gone.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    const int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(log, STDOUT_FILENO);
    ::dup2(log, STDERR_FILENO);
    ::execl(binary_.c_str(), binary_.c_str(), "-c", config_path_.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  for (int i = 0; i < 400; ++i) {
    const int fd = connect_loopback(port);
    if (fd >= 0) {
      ::close(fd);
      return;
    }
    if (!alive()) throw std::runtime_error("pgrelay exited at start: " + log());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw std::runtime_error("pgrelay did not listen within 20 s: " + log());
}

void Proxy::reap(int status) {
  pid_ = -1;
  if (WIFEXITED(status)) {
    exit_status_ = WEXITSTATUS(status);
    exit_description_ = "exited with status " + std::to_string(exit_status_);
  } else if (WIFSIGNALED(status)) {
    exit_status_ = 128 + WTERMSIG(status);
    exit_description_ = "killed by signal " + std::to_string(WTERMSIG(status));
  }
}

bool Proxy::alive() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    reap(status);
    return false;
  }
  return true;
}

int Proxy::stop(int signal, std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return exit_status_;
  ::kill(pid_, signal);
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      reap(status);
      return exit_status_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

std::string Proxy::log() const {
  std::ifstream in(log_path_);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

HttpResponse http_request(int port, const std::string& method, const std::string& target,
                          std::chrono::milliseconds timeout) {
  HttpResponse response;
  const int fd = connect_loopback(port);
  if (fd < 0) return response;
  const std::string request = method + " " + target +
                              " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                              "Content-Length: 0\r\n\r\n";
  std::size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) {
      ::close(fd);
      return response;
    }
    sent += static_cast<std::size_t>(n);
  }
  std::string text;
  const auto deadline = Clock::now() + timeout;
  while (true) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) break;
    std::array<char, 4096> buffer{};
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n <= 0) break;
    text.append(buffer.data(), static_cast<std::size_t>(n));
  }
  ::close(fd);
  if (text.rfind("HTTP/1.", 0) != 0 || text.size() < 12) return response;
  response.status = std::atoi(text.substr(9, 3).c_str());
  const auto body = text.find("\r\n\r\n");
  if (body != std::string::npos) response.body = text.substr(body + 4);
  return response;
}

const NodeView* TopologyView::node(const std::string& name) const {
  for (const auto& n : nodes) {
    if (n.name == name) return &n;
  }
  return nullptr;
}

std::optional<TopologyView> topology(int http_port) {
  const auto response = http_request(http_port, "GET", "/topology", std::chrono::seconds(5));
  if (response.status != 200) return std::nullopt;
  boost::system::error_code ec;
  const auto json = boost::json::parse(response.body, ec);
  if (ec || !json.is_object()) return std::nullopt;
  const auto& object = json.as_object();
  TopologyView view;
  if (const auto* primary = object.if_contains("primary");
      primary != nullptr && primary->is_string()) {
    view.primary = std::string(primary->as_string());
  }
  const auto* nodes = object.if_contains("nodes");
  if (nodes == nullptr || !nodes->is_array()) return std::nullopt;
  for (const auto& item : nodes->as_array()) {
    if (!item.is_object()) continue;
    const auto& n = item.as_object();
    NodeView node;
    if (const auto* v = n.if_contains("name"); v != nullptr && v->is_string()) {
      node.name = std::string(v->as_string());
    }
    if (const auto* v = n.if_contains("role"); v != nullptr && v->is_string()) {
      node.role = std::string(v->as_string());
    }
    if (const auto* v = n.if_contains("eligible"); v != nullptr && v->is_bool()) {
      node.eligible = v->as_bool();
    }
    if (const auto* v = n.if_contains("timeline"); v != nullptr && v->is_int64()) {
      node.timeline = v->as_int64();
    }
    view.nodes.push_back(std::move(node));
  }
  return view;
}

}  // namespace pgrelay::chaos
