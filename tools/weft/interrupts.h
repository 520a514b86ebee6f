// SIGINT and SIGTERM for a CLI run that starts processes and leaves things behind (peer
// processes, network namespaces, a socket): a thread of its own takes the signals wherever the
// main thread is, says what it does, runs the clean-up and exits 128 + the signal. Construct it
// before any other thread starts, so that every thread inherits the blocked signals and only this
// one takes them. A child started meanwhile inherits the blocked mask: spawn it with an empty
// one (POSIX_SPAWN_SETSIGMASK), or a plain kill will not end it.
#pragma once

#include <pthread.h>
#include <spawn.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <utility>

#include <fmt/format.h>

namespace weft::tools {

// Spawn attributes that start a child with no blocked signals (a run under Interrupts blocks
// SIGINT and SIGTERM in every thread, and a child would inherit that: a plain kill would not end
// it). Initialises *attr; the caller destroys it (posix_spawnattr_destroy).
inline void NoBlockedSignals(posix_spawnattr_t* attr) {
  posix_spawnattr_init(attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(attr, &none);
  posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGMASK);
}

class Interrupts {
 public:
  // Printed as "<tool>: <signal>: <what>" ("weft demo: Terminated: killing the peer processes ...").
  Interrupts(std::string tool, std::string what, std::function<void()> cleanup)
      : tool_(std::move(tool)), what_(std::move(what)), cleanup_(std::move(cleanup)) {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
    thread_ = std::thread([this] { Watch(); });
  }
  ~Interrupts() {
    stop_ = true;
    thread_.join();
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  Interrupts(const Interrupts&) = delete;
  Interrupts& operator=(const Interrupts&) = delete;

 private:
  void Watch() {
    const timespec tick{0, 100 * 1000 * 1000};
    while (!stop_) {
      const int sig = sigtimedwait(&set_, nullptr, &tick);
      if (sig <= 0) continue;
      fmt::print(stderr, "{}: {}: {}\n", tool_, strsignal(sig), what_);
      cleanup_();
      std::fflush(stdout);
      _exit(128 + sig);
    }
  }

  std::string tool_;
  std::string what_;
  std::function<void()> cleanup_;
  sigset_t set_{}, old_{};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace weft::tools
