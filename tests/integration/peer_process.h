// Runs pool peers as forked processes. Children are forked before the parent starts any
// thread, and wait on a pipe until the parent's coordinator is up.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <weft/config.h>

namespace weft::testing {

inline Config TestConfig(const std::string& name, uint64_t rank_size = 64 << 20) {
  Config c;
  c.pool_name = name + "-" + std::to_string(getpid());
  c.coordinator = "/tmp/weft-test-" + c.pool_name + ".sock";
  c.rank_size = rank_size;
  c.heartbeat_ms = 100;
  c.peer_timeout_ms = 1500;
  c.deadline_ms = 20000;
  c.copy_threads = 2;
  c.split_bytes = 1 << 20;
  return c;
}

class PeerProcesses {
 public:
  // Forks `count` children; each waits for Release(), then runs body(index) and exits with its
  // return value (0 = success).
  PeerProcesses(int count, const std::function<int(int)>& body) {
    if (pipe(go_) != 0) return;
    for (int i = 0; i < count; ++i) {
      pid_t pid = fork();
      if (pid == 0) {
        close(go_[1]);
        char c;
        if (read(go_[0], &c, 1) != 1) _exit(90);
        _exit(body(i));
      }
      pids_.push_back(pid);
    }
    close(go_[0]);
  }
  ~PeerProcesses() {
    // Reaped children are -1; kill(-1) would signal every process we may signal.
    for (pid_t p : pids_)
      if (p > 0) kill(p, SIGKILL);
    for (pid_t p : pids_)
      if (p > 0) waitpid(p, nullptr, 0);
  }
  void Release() {
    std::string go(pids_.size(), 'g');
    if (write(go_[1], go.data(), go.size()) < 0) return;
    close(go_[1]);
  }
  pid_t pid(int i) const { return pids_[i]; }
  // Exit status of child i (waits up to `limit`); -1 on a signal or if it does not finish.
  int Wait(int i, std::chrono::seconds limit = std::chrono::seconds(120)) {
    auto until = std::chrono::steady_clock::now() + limit;
    int status = 0;
    if (pids_[i] <= 0) return -1;
    while (waitpid(pids_[i], &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > until) {
        kill(pids_[i], SIGKILL);
        waitpid(pids_[i], &status, 0);
        pids_[i] = -1;
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    pids_[i] = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  void Kill(int i) {
    if (pids_[i] > 0) kill(pids_[i], SIGKILL);
  }

 private:
  int go_[2] = {-1, -1};
  std::vector<pid_t> pids_;
};

}  // namespace weft::testing
