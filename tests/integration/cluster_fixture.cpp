// The integration fixture: cluster lifecycle with a cleanup watchdog, pgrelay processes, clients.
#include "cluster_fixture.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace pgrelay::test {

namespace {

const std::string kScript = std::string(PGRELAY_SOURCE_DIR) + "/scripts/cluster";

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

bool port_accepts(int port) {
  RawSocket socket(port);
  return socket.connected();
}

}  // namespace

Cluster& Cluster::get() {
  static Cluster cluster;
  return cluster;
}

Cluster::Cluster() {
  char tmpl[] = "/tmp/pgrelay-test-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  ::chmod(dir_.c_str(), 0755);

  // The watchdog: a process in its own session that waits for our end of a pipe to close (we
  // exited, crashed or were killed) and then stops the servers and removes the directory.
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  const pid_t watchdog = ::fork();
  if (watchdog == 0) {
    ::setsid();
    ::dup2(fds[0], STDIN_FILENO);
    const std::string cleanup = "read _; exec " + kScript + " destroy " + dir_ + " >/dev/null 2>&1";
    ::execl("/bin/sh", "sh", "-c", cleanup.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fds[0]);
  // fds[1] stays open (close-on-exec) for the life of the process.

  nodes_ = {{"node1", free_port()}, {"node2", free_port()}, {"node3", free_port()}};
  const auto result = run(kScript + " init " + dir_ + " " + std::to_string(nodes_[0].port) + " " +
                          std::to_string(nodes_[1].port) + " " + std::to_string(nodes_[2].port));
  if (result.status != 0) {
    throw std::runtime_error("cluster init failed: " + result.output);
  }
}

const Node& Cluster::node(const std::string& name) const {
  for (const auto& n : nodes_) {
    if (n.name == name) return n;
  }
  throw std::runtime_error("no node " + name);
}

CommandResult Cluster::script(const std::string& args) const {
  const auto space = args.find(' ');
  return run(kScript + " " + args.substr(0, space) + " " + dir_ +
             (space == std::string::npos ? "" : args.substr(space)));
}

std::string Cluster::sql(const std::string& node, const std::string& query) const {
  const std::string file = dir_ + "/query.sql";
  write_file(file, query);
  auto result = script("psql " + node + " -d app -At -v ON_ERROR_STOP=1 -f " + file);
  while (!result.output.empty() && result.output.back() == '\n') result.output.pop_back();
  return result.output;
}

std::string Cluster::backends_toml() const {
  std::string toml;
  for (const auto& n : nodes_) {
    toml += "[[backend]]\nname = \"" + n.name +
            "\"\nhost = \"127.0.0.1\"\nport = " + std::to_string(n.port) + "\n";
  }
  return toml;
}

std::pair<std::string, std::string> Cluster::tls_files() {
  const std::string cert = dir_ + "/server.crt";
  const std::string key = dir_ + "/server.key";
  if (::access(cert.c_str(), R_OK) != 0) {
    const auto result =
        run("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost"
            " -keyout " +
            key + " -out " + cert);
    if (result.status != 0) throw std::runtime_error("openssl: " + result.output);
  }
  return {cert, key};
}

Proxy::Proxy(const std::string& extra_toml, bool with_backends) {
  auto& cluster = Cluster::get();
  port_ = free_port();
  dir_ = cluster.dir() + "/proxy-" + std::to_string(port_);
  ::mkdir(dir_.c_str(), 0755);
  // Two workers unless extra_toml starts with its own [listen] key `workers`.
  const bool own_workers = extra_toml.starts_with("workers");
  std::string toml = "[listen]\naddress = \"127.0.0.1\"\nport = " + std::to_string(port_) +
                     (own_workers ? "\n" : "\nworkers = 2\n") + "\n" + extra_toml + "\n";
  if (toml.find("[http]") == std::string::npos) {
    http_port_ = free_port();
    toml += "[http]\naddress = \"127.0.0.1\"\nport = " + std::to_string(http_port_) + "\n";
  }
  if (toml.find("[monitor]") == std::string::npos) {
    toml += "[monitor]\nuser = \"pgrelay\"\npassword = \"pgrelay\"\ninterval_ms = 200\n";
  }
  if (with_backends) toml += cluster.backends_toml();
  write_file(dir_ + "/pgrelay.toml", toml);

  pid_ = ::fork();
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    const int log = ::open((dir_ + "/pgrelay.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(log, STDOUT_FILENO);
    ::dup2(log, STDERR_FILENO);
    const std::string config = dir_ + "/pgrelay.toml";
    ::execl(PGRELAY_BINARY, PGRELAY_BINARY, "-c", config.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  for (int i = 0; i < 200; ++i) {
    if (port_accepts(port_)) return;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("pgrelay exited at start: " + log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw std::runtime_error("pgrelay did not listen within 10 s: " + log());
}

Proxy::~Proxy() {
  if (pid_ > 0) stop(SIGTERM, std::chrono::seconds(5));
  if (pid_ > 0) stop(SIGKILL);
  // In sanitizer builds, a report in pgrelay's own log fails the test that ran it.
  const std::string text = log();
  for (const char* marker : {"AddressSanitizer", "LeakSanitizer", "runtime error:"}) {
    if (text.find(marker) != std::string::npos) {
      ADD_FAILURE() << "pgrelay reported " << marker << ":\n" << text;
      break;
    }
  }
}

std::string Proxy::conninfo(const std::string& extra) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) +
         " user=app password=app dbname=app sslmode=disable connect_timeout=10 " + extra;
}

std::string Proxy::env() const {
  return "PGHOST=127.0.0.1 PGPORT=" + std::to_string(port_) +
         " PGUSER=app PGPASSWORD=app PGDATABASE=app PGSSLMODE=disable PGCONNECT_TIMEOUT=10 ";
}

std::string Proxy::log() const { return read_file(dir_ + "/pgrelay.log"); }

int Proxy::stop(int signal, std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, signal);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      return 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

std::string PgConn::value(const std::string& query) {
  PGresult* res = PQexec(conn, query.c_str());
  std::string out;
  const auto status = PQresultStatus(res);
  if (status == PGRES_TUPLES_OK && PQntuples(res) > 0) {
    out = PQgetvalue(res, 0, 0);
  } else if (status == PGRES_FATAL_ERROR || status == PGRES_NONFATAL_ERROR) {
    const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char* message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    out = std::string("ERROR: ") + (state ? state : "?") + " " +
          (message ? message : PQerrorMessage(conn));
  }
  PQclear(res);
  return out;
}

RawSocket::RawSocket(int port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

RawSocket::~RawSocket() {
  if (fd_ >= 0) ::close(fd_);
}

bool RawSocket::send(const void* data, std::size_t size) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::send(fd_, p, size, MSG_NOSIGNAL);
    if (n <= 0) return false;
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

std::vector<std::uint8_t> RawSocket::read_n(std::size_t n, std::chrono::milliseconds timeout) {
  std::vector<std::uint8_t> out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (out.size() < n) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    std::array<std::uint8_t, 4096> buf{};
    const ssize_t r = ::recv(fd_, buf.data(), std::min(buf.size(), n - out.size()), 0);
    if (r <= 0) break;
    out.insert(out.end(), buf.begin(), buf.begin() + r);
  }
  return out;
}

std::vector<std::uint8_t> RawSocket::read_all(std::chrono::milliseconds timeout) {
  return read_n(SIZE_MAX, timeout);
}

bool RawSocket::closed_within(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    std::array<std::uint8_t, 4096> buf{};
    const ssize_t r = ::recv(fd_, buf.data(), buf.size(), 0);
    if (r <= 0) return true;
  }
}

HttpResponse http_get(int port, const std::string& path) {
  HttpResponse response;
  RawSocket socket(port);
  if (!socket.connected()) return response;
  const std::string request =
      "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  if (!socket.send(request.data(), request.size())) return response;
  const auto bytes = socket.read_all(std::chrono::seconds(5));
  const std::string text(bytes.begin(), bytes.end());
  if (text.rfind("HTTP/1.1 ", 0) != 0 || text.size() < 12) return response;
  response.status = std::stoi(text.substr(9, 3));
  const auto body = text.find("\r\n\r\n");
  if (body != std::string::npos) response.body = text.substr(body + 4);
  return response;
}

std::string first_error(const std::vector<std::uint8_t>& bytes) {
  std::size_t pos = 0;
  while (pos + 5 <= bytes.size()) {
    const char type = static_cast<char>(bytes[pos]);
    const std::uint32_t length = (std::uint32_t{bytes[pos + 1]} << 24) |
                                 (std::uint32_t{bytes[pos + 2]} << 16) |
                                 (std::uint32_t{bytes[pos + 3]} << 8) | bytes[pos + 4];
    if (length < 4 || pos + 1 + length > bytes.size()) break;
    if (type == 'E') {
      std::string severity, code, message;
      std::size_t p = pos + 5;
      const std::size_t end = pos + 1 + length;
      while (p < end && bytes[p] != 0) {
        const char field = static_cast<char>(bytes[p++]);
        std::string value;
        while (p < end && bytes[p] != 0) value.push_back(static_cast<char>(bytes[p++]));
        ++p;
        if (field == 'V') severity = value;
        if (field == 'C') code = value;
        if (field == 'M') message = value;
      }
      return severity + " " + code + " " + message;
    }
    pos += 1 + length;
  }
  return {};
}

}  // namespace pgrelay::test
