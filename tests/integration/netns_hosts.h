// K "hosts" as network namespaces joined by veth pairs to a bridge in a namespace of its own,
// for integration tests that cross nodes. Addresses 10.<subnet>.1.<k> exist only inside the
// namespaces made here; the machine's own interfaces are never touched. Everything is removed
// by the destructor. Needs root and iproute2.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

namespace weft::testing {

inline bool OnCi() {
  const char* ci = std::getenv("CI");
  return ci && (std::string(ci) == "true" || std::string(ci) == "1");
}

// "ASAN_OPTIONS=...:detect_leaks=0": ours with LeakSanitizer's exit-time check off, for a child
// that runs UCX. Its tracer now and then crashes (signal 11) in a process that ran UCX's threads and
// then exits before the child's buffered output is flushed, failing a child whose work was verified.
// In-process, test binaries turn the exit-time check off once UCX is loaded (support/lsan_ucx.cc).
inline std::string UcxChildAsanOptions() {
  const char* now = std::getenv("ASAN_OPTIONS");
  const std::string base = now && *now ? std::string(now) + ":" : "";
  return "ASAN_OPTIONS=" + base + "detect_leaks=0";
}

// Runs a shell command; its exit status, and its output (stdout+stderr) in *out.
inline int Sh(const std::string& cmd, std::string* out = nullptr) {
  FILE* f = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!f) return -1;
  std::string text;
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof buf, f)) text.append(buf, n);
  int rc = ::pclose(f);
  if (out) *out = text;
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// A process started with its stdout and stderr in one pipe that the test reads line by line with
// a time limit, so that a process that hangs fails the test instead of hanging it. Killed (by
// its own pid, never a group) and reaped on destruction.
class Spawned {
 public:
  // argv[0] is looked up in PATH; env: "NAME=value" entries added to ours.
  Spawned(const std::vector<std::string>& argv, const std::vector<std::string>& env = {}) {
    // Made before the fork: the child only execs.
    std::vector<std::string> vars(env);
    for (char** e = environ; *e; ++e) {
      const std::string var(*e);
      bool overridden = false;
      for (const auto& mine : env) {
        const std::string name = mine.substr(0, mine.find('=') + 1);  // "NAME="
        overridden = overridden || var.rfind(name, 0) == 0;
      }
      if (!overridden) vars.push_back(var);
    }
    std::vector<char*> args, envp;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    for (const auto& v : vars) envp.push_back(const_cast<char*>(v.c_str()));
    envp.push_back(nullptr);
    int out[2];
    if (argv.empty() || ::pipe(out) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      ::dup2(out[1], 2);
      ::close(out[0]);
      ::close(out[1]);
      ::execvpe(args[0], args.data(), envp.data());
      ::_exit(127);
    }
    ::close(out[1]);
    fd_ = pid_ > 0 ? out[0] : -1;
    if (pid_ <= 0) ::close(out[0]);
  }
  ~Spawned() {
    Kill();
    if (fd_ >= 0) ::close(fd_);
  }
  Spawned(const Spawned&) = delete;
  Spawned& operator=(const Spawned&) = delete;

  bool started() const { return fd_ >= 0; }
  pid_t pid() const { return pid_; }
  // Everything it printed so far.
  const std::string& output() const { return text_; }

  // Reads until a line containing `what` arrives (returns it), or end of output or `limit`
  // (returns "").
  std::string WaitFor(const std::string& what, std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    for (;;) {
      for (size_t end; (end = text_.find('\n', scanned_)) != std::string::npos;) {
        std::string line = text_.substr(scanned_, end - scanned_);
        scanned_ = end + 1;
        if (line.find(what) != std::string::npos) return line;
      }
      if (!ReadSome(until)) return "";
    }
  }
  // Its exit status once it exited (its output read to the end), or -1 after `limit` (then it is
  // killed) or on a signal.
  int Wait(std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (ReadSome(until)) {
    }
    if (pid_ <= 0) return -1;
    int status = 0;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > until) {
        Kill();
        return -1;
      }
      ::usleep(10000);
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  void Kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

 private:
  // Appends what arrives before `until`; false at end of output or on the time limit.
  bool ReadSome(std::chrono::steady_clock::time_point until) {
    if (fd_ < 0) return false;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char buf[4096];
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n <= 0) return false;
    text_.append(buf, static_cast<size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int fd_ = -1;
  std::string text_;
  size_t scanned_ = 0;
};

class NetnsHosts {
 public:
  // tag: a short unique prefix for names (the test's pid, say); subnet: the second octet.
  NetnsHosts(std::string tag, int subnet) : tag_(std::move(tag)), subnet_(subnet) {}
  ~NetnsHosts() { Cleanup(); }
  NetnsHosts(const NetnsHosts&) = delete;
  NetnsHosts& operator=(const NetnsHosts&) = delete;

  // Empty on success, else why it could not (not root, no `ip`, ...).
  std::string Build(int hosts) {
    if (::geteuid() != 0) return "needs root to create network namespaces";
    std::string why;
    auto run = [&](const std::string& cmd) {
      std::string out;
      if (Sh(cmd, &out) == 0) return true;
      why = "`" + cmd + "` failed: " + out;
      return false;
    };
    for (int i = 0; i <= hosts; ++i) {
      if (!run("ip netns add " + Ns(i))) return why;
      created_.push_back(Ns(i));
    }
    if (!run("ip -n " + Ns(0) + " link add br0 type bridge") || !run("ip -n " + Ns(0) + " link set br0 up")) return why;
    for (int i = 1; i <= hosts; ++i) {
      std::string peer = tag_ + "b" + std::to_string(i);
      if (!run("ip link add " + If(i) + " netns " + Ns(i) + " type veth peer name " + peer + " netns " + Ns(0)) ||
          !run("ip -n " + Ns(0) + " link set " + peer + " master br0") ||
          !run("ip -n " + Ns(0) + " link set " + peer + " up") ||
          !run("ip -n " + Ns(i) + " addr add " + Ip(i) + "/24 dev " + If(i)) ||
          !run("ip -n " + Ns(i) + " link set " + If(i) + " up") || !run("ip -n " + Ns(i) + " link set lo up"))
        return why;
    }
    return "";
  }

  void Cleanup() {
    // Deleting a namespace deletes the veth ends in it (and with them their peers).
    for (auto it = created_.rbegin(); it != created_.rend(); ++it) Sh("ip netns del " + *it);
    created_.clear();
  }

  std::string Ns(int i) const { return tag_ + (i == 0 ? std::string("br") : std::to_string(i)); }
  std::string If(int i) const { return tag_ + "a" + std::to_string(i); }
  std::string Ip(int i) const { return "10." + std::to_string(subnet_) + ".1." + std::to_string(i); }
  // A shell command run inside host i.
  std::string In(int i, const std::string& cmd) const { return "ip netns exec " + Ns(i) + " " + cmd; }

 private:
  std::string tag_;
  int subnet_;
  std::vector<std::string> created_;
};

}  // namespace weft::testing
