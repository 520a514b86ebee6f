// A private etcd for tests: Debian's etcd-server on 127.0.0.1 with free ports and a temporary
// data dir. Tests that need it skip when the binary is missing, except under CI=true, where they
// fail (CI installs etcd-server through scripts/install-deps.sh).
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "base/clock.h"
#include "base/result.h"
#include "base/status.h"

namespace weft::etcd_test {

inline uint16_t FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) close(fd);
    return 0;
  }
  close(fd);
  return ntohs(a.sin_port);
}

inline std::string FindEtcd() {
  for (const char* p : {"/usr/bin/etcd", "/usr/local/bin/etcd"}) {
    if (access(p, X_OK) == 0) return p;
  }
  return {};
}

inline bool InCi() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

// A private etcd on loopback. Stop() kills exactly the child it started (pid > 0 checked).
class EtcdProcess {
 public:
  // extra: more etcd flags ("--auth-token-ttl=1").
  Status Start(const std::vector<std::string>& extra = {}) {
    std::string bin = FindEtcd();
    if (bin.empty()) return Error(Code::kNotFound, "etcd binary not found");
    char dir_template[] = "/tmp/weft-etcd-XXXXXX";
    if (mkdtemp(dir_template) == nullptr) return ErrnoStatus("mkdtemp", errno);
    dir_ = dir_template;
    client_port_ = FreePort();
    uint16_t peer_port = FreePort();
    if (client_port_ == 0 || peer_port == 0) return Error(Code::kIo, "no free port");
    std::string client = fmt::format("http://127.0.0.1:{}", client_port_);
    std::string peer = fmt::format("http://127.0.0.1:{}", peer_port);
    std::vector<std::string> args = {bin,
                                     "--name=weft-test",
                                     "--data-dir=" + dir_ + "/data",
                                     "--listen-client-urls=" + client,
                                     "--advertise-client-urls=" + client,
                                     "--listen-peer-urls=" + peer,
                                     "--initial-advertise-peer-urls=" + peer,
                                     "--initial-cluster=weft-test=" + peer,
                                     "--log-outputs=stderr"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::string log = dir_ + "/etcd.log";
    pid_t pid = fork();
    if (pid < 0) return ErrnoStatus("fork", errno);
    if (pid == 0) {
      int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    pid_ = pid;
    // Healthy when /health says so; give up if the child died or after std::chrono::seconds(30).
    auto until = Clock::now() + std::chrono::seconds(30);
    while (Clock::now() < until) {
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return Error(Code::kUnavailable, "etcd exited at start; see {}", log);
      }
      httplib::Client c("127.0.0.1", client_port_);
      c.set_connection_timeout(std::chrono::seconds(1));
      c.set_read_timeout(std::chrono::seconds(2));
      auto r = c.Get("/health");
      if (r && r->status == 200 && r->body.find("true") != std::string::npos) return OkStatus();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return Error(Code::kTimeout, "etcd did not become healthy; see {}", log);
  }

  void Stop() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int st = 0;
      auto until = Clock::now() + std::chrono::seconds(10);
      while (waitpid(pid_, &st, WNOHANG) == 0) {
        if (Clock::now() > until) {
          kill(pid_, SIGKILL);
          waitpid(pid_, &st, 0);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      pid_ = -1;
    }
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
      dir_.clear();
    }
  }

  ~EtcdProcess() { Stop(); }
  uint16_t port() const { return client_port_; }

 private:
  pid_t pid_ = -1;
  uint16_t client_port_ = 0;
  std::string dir_;
};

}  // namespace weft::etcd_test
