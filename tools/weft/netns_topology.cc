#include "tools/weft/netns_topology.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace weft::tools {
namespace {

Status Run(const std::string& cmd) {
  std::string full = cmd + " 2>&1";
  FILE* f = popen(full.c_str(), "r");
  if (!f) return Error(Code::kIo, "cannot run '{}'", cmd);
  std::string out;
  char buf[256];
  while (size_t n = fread(buf, 1, sizeof buf, f)) out.append(buf, n);
  int rc = pclose(f);
  if (rc != 0) return Error(Code::kUnavailable, "'{}' failed: {}", cmd, out);
  return OkStatus();
}

}  // namespace

Result<std::unique_ptr<NetnsTopology>> NetnsTopology::Create(int k, const std::string& prefix) {
  if (geteuid() != 0) return Error(Code::kPermissionDenied, "network namespaces need root");
  std::unique_ptr<NetnsTopology> t(new NetnsTopology());
  t->tag_ = fmt::format("{}{}", prefix, getpid() % 100000);
  const std::string bridge_ns = t->tag_ + "br";
  WEFT_RETURN_IF_ERROR(Run("ip netns add " + bridge_ns));
  t->created_.push_back(bridge_ns);
  WEFT_RETURN_IF_ERROR(Run("ip -n " + bridge_ns + " link add br0 type bridge"));
  WEFT_RETURN_IF_ERROR(Run("ip -n " + bridge_ns + " link set br0 up"));
  for (int h = 1; h <= k; ++h) {
    const std::string ns = t->Namespace(h);
    WEFT_RETURN_IF_ERROR(Run("ip netns add " + ns));
    t->created_.push_back(ns);
    const std::string inner = fmt::format("{}e{}", t->tag_, h), outer = fmt::format("{}p{}", t->tag_, h);
    WEFT_RETURN_IF_ERROR(
        Run(fmt::format("ip link add {} netns {} type veth peer name {} netns {}", inner, ns, outer, bridge_ns)));
    WEFT_RETURN_IF_ERROR(Run(fmt::format("ip -n {} link set {} master br0", bridge_ns, outer)));
    WEFT_RETURN_IF_ERROR(Run(fmt::format("ip -n {} link set {} up", bridge_ns, outer)));
    WEFT_RETURN_IF_ERROR(Run(fmt::format("ip -n {} addr add {}/24 dev {}", ns, t->Address(h), inner)));
    WEFT_RETURN_IF_ERROR(Run(fmt::format("ip -n {} link set {} up", ns, inner)));
    WEFT_RETURN_IF_ERROR(Run(fmt::format("ip -n {} link set lo up", ns)));
  }
  return t;
}

NetnsTopology::~NetnsTopology() { Remove(); }

void NetnsTopology::Remove() {
  std::vector<std::string> made;
  {
    std::lock_guard lock(mu_);
    made.swap(created_);
  }
  // Deleting a namespace deletes the veth ends in it, and with them their peers.
  for (auto it = made.rbegin(); it != made.rend(); ++it) (void)Run("ip netns del " + *it);
}

Status NetnsTopology::SetLink(int host, bool up) const {
  return Run(fmt::format("ip -n {}br link set {}p{} {}", tag_, tag_, host, up ? "up" : "down"));
}

std::string NetnsTopology::Namespace(int host) const { return fmt::format("{}h{}", tag_, host); }
std::string NetnsTopology::Address(int host) const { return fmt::format("10.79.0.{}", host); }

Status NetnsTopology::Enter(int host) const {
  const std::string path = "/var/run/netns/" + Namespace(host);
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("open " + path, errno);
  int rc = setns(fd, CLONE_NEWNET);
  int err = errno;
  close(fd);
  if (rc != 0) return ErrnoStatus("setns into " + Namespace(host), err);
  return OkStatus();
}

}  // namespace weft::tools
