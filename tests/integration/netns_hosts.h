// K "hosts" as network namespaces joined by veth pairs to a bridge in a namespace of its own,
// for integration tests that cross nodes. Addresses 10.<subnet>.1.<k> exist only inside the
// namespaces made here; the machine's own interfaces are never touched. Everything is removed
// by the destructor. Needs root and iproute2.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace weft::testing {

inline bool OnCi() {
  const char* ci = std::getenv("CI");
  return ci && (std::string(ci) == "true" || std::string(ci) == "1");
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
