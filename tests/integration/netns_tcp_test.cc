// The TCP data plane across "hosts": network namespaces joined by veth pairs to a bridge that
// lives in a namespace of its own. Addresses are 10.77.1.0/24 and exist only inside the
// namespaces this test creates (and removes in TearDown); the host's own interfaces are never
// touched. The server runs as a forked process inside ns1 (setns before it makes any socket);
// clients run on threads that setns into ns2 or ns3 before they make theirs.
//
// Needs root and `ip netns`; otherwise the tests skip with the reason, except on CI (CI=true)
// where a missing capability is a failure.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/random.h"
#include "transport/tcp/access_table.h"
#include "transport/tcp/tcp_client.h"
#include "transport/tcp/tcp_server.h"

namespace weft::transport::tcp {
namespace {

constexpr char kSecret[] = "netns-test-secret-0d9c";
constexpr uint32_t kSeg = 1;
constexpr uint64_t kKey = 0x5eed5eed1234ull;
constexpr uint64_t kSegSize = 96ull << 20;

bool OnCi() {
  const char* ci = std::getenv("CI");
  return ci && (std::string(ci) == "true" || std::string(ci) == "1");
}

// Runs a shell command; returns its exit status and its output (stdout+stderr).
int Sh(const std::string& cmd, std::string* out = nullptr) {
  std::string full = cmd + " 2>&1";
  FILE* f = ::popen(full.c_str(), "r");
  if (!f) return -1;
  std::string text;
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof buf, f)) text.append(buf, n);
  int rc = ::pclose(f);
  if (out) *out = text;
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

class NetnsTcpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tag_ = "wt" + std::to_string(::getpid() % 100000);
    std::string why;
    if (::geteuid() != 0) {
      why = "needs root to create network namespaces";
    } else if (!Build(&why)) {
      why = "cannot build the namespace topology: " + why;
    }
    if (!why.empty()) {
      Cleanup();
      if (OnCi()) FAIL() << why;
      GTEST_SKIP() << why;
    }
  }

  void TearDown() override {
    StopServer();
    Cleanup();
  }

  std::string Ns(int i) const { return tag_ + (i == 0 ? std::string("br") : std::to_string(i)); }
  std::string If(int i) const { return tag_ + "a" + std::to_string(i); }
  std::string Ip(int i) const { return "10.77.1." + std::to_string(i); }

  bool Run(const std::string& cmd, std::string* why) {
    std::string out;
    if (Sh(cmd, &out) == 0) return true;
    *why = "`" + cmd + "` failed: " + out;
    return false;
  }

  bool Build(std::string* why) {
    for (int i = 0; i <= 3; ++i) {
      if (!Run("ip netns add " + Ns(i), why)) return false;
      created_.push_back(Ns(i));
    }
    if (!Run("ip -n " + Ns(0) + " link add br0 type bridge", why)) return false;
    if (!Run("ip -n " + Ns(0) + " link set br0 up", why)) return false;
    for (int i = 1; i <= 3; ++i) {
      std::string peer = tag_ + "b" + std::to_string(i);
      if (!Run("ip link add " + If(i) + " netns " + Ns(i) + " type veth peer name " + peer + " netns " + Ns(0), why))
        return false;
      if (!Run("ip -n " + Ns(0) + " link set " + peer + " master br0", why)) return false;
      if (!Run("ip -n " + Ns(0) + " link set " + peer + " up", why)) return false;
      if (!Run("ip -n " + Ns(i) + " addr add " + Ip(i) + "/24 dev " + If(i), why)) return false;
      if (!Run("ip -n " + Ns(i) + " link set " + If(i) + " up", why)) return false;
      if (!Run("ip -n " + Ns(i) + " link set lo up", why)) return false;
    }
    return true;
  }

  void Cleanup() {
    // Deleting a namespace deletes the veth ends in it (and with them their peers).
    for (auto it = created_.rbegin(); it != created_.rend(); ++it) Sh("ip netns del " + *it);
    created_.clear();
  }

  static bool EnterNetns(const std::string& ns) {
    std::string path = "/var/run/netns/" + ns;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = ::setns(fd, CLONE_NEWNET) == 0;
    ::close(fd);
    return ok;
  }

  // Forks the server into ns1. The parent has no threads at this point (each test starts its
  // client threads only after this), so the child may safely start its own.
  void StartServer() {
    int ports[2];
    ASSERT_EQ(::pipe(ports), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(ports[0]);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (!EnterNetns(Ns(1))) _exit(3);
      auto* mem = static_cast<uint8_t*>(std::aligned_alloc(4096, kSegSize));
      std::memset(mem, 0, kSegSize);
      AccessTable table;
      if (!table.Register({kSeg, mem, kSegSize, kKey, kPermReadWrite}).ok()) _exit(4);
      TcpServerOptions o;
      o.host = Ip(1);
      o.auth.cluster_secret = kSecret;
      o.threads = 2;
      o.stall_timeout_ms = 3000;
      auto server = TcpServer::Start(o, &table);
      if (!server.ok()) _exit(5);
      uint16_t port = (*server)->port();
      if (::write(ports[1], &port, sizeof port) != sizeof port) _exit(6);
      for (;;) ::pause();  // until the parent kills us
    }
    ::close(ports[1]);
    server_pid_ = pid;
    uint16_t port = 0;
    ssize_t n = ::read(ports[0], &port, sizeof port);
    ::close(ports[0]);
    ASSERT_EQ(n, static_cast<ssize_t>(sizeof port)) << "the server process did not start";
    peer_ = PeerAddr{Ip(1), port};
  }

  void StopServer() {
    if (server_pid_ > 0) {  // never kill(0) or kill(-1)
      ::kill(server_pid_, SIGKILL);
      ::waitpid(server_pid_, nullptr, 0);
      server_pid_ = -1;
    }
  }

  // Runs fn on a new thread inside namespace ns; joins it.
  void InNetns(int ns, const std::function<void()>& fn) {
    std::thread t([&] {
      if (!EnterNetns(Ns(ns))) {
        ADD_FAILURE() << "setns into " << Ns(ns) << " failed";
        return;
      }
      fn();
    });
    t.join();
  }

  static std::unique_ptr<TcpClient> Client() {
    TcpClientOptions o;
    o.auth.cluster_secret = kSecret;
    o.lanes = 4;
    o.connect_timeout_ms = 2000;
    return std::make_unique<TcpClient>(o);
  }

  // Writes fresh random bytes at off and reads them back; both checked byte for byte.
  static void WriteReadBack(TcpClient& c, const PeerAddr& peer, uint64_t off, uint64_t len, int deadline_ms = 30000) {
    SCOPED_TRACE(::testing::Message() << "len " << len << " off " << off);
    std::vector<uint8_t> src(len), dst(len + 16, 0x5A);
    const uint64_t seed = FreshSeed();
    FillRandom(src.data(), len, seed);
    Status w = c.Write(peer, kSeg, kKey, off, src.data(), len, Deadline::After(Millis(deadline_ms)));
    ASSERT_TRUE(w.ok()) << w.ToString();
    Status r = c.Read(peer, kSeg, kKey, off, dst.data(), len, Deadline::After(Millis(deadline_ms)));
    ASSERT_TRUE(r.ok()) << r.ToString();
    ASSERT_FALSE(FirstMismatch(dst.data(), len, seed).has_value());
    for (int i = 0; i < 16; ++i) ASSERT_EQ(dst[len + i], 0x5A);
  }

  std::string tag_;
  std::vector<std::string> created_;
  pid_t server_pid_ = -1;
  PeerAddr peer_;
};

TEST_F(NetnsTcpTest, TransfersBetweenHostsAreExact) {
  StartServer();
  if (HasFatalFailure()) return;
  const uint64_t seed = FreshSeed();
  const uint64_t shared_off = 80ull << 20, shared_len = (5 << 20) + 77;
  std::atomic<int> done{0};
  std::thread a([&] {
    InNetns(2, [&] {
      auto c = Client();
      std::mt19937_64 rng(FreshSeed());
      for (uint64_t len : {1ull, 4096ull, 65537ull, 1ull << 20, (7ull << 20) + 3, 16ull << 20}) {
        WriteReadBack(*c, peer_, rng() % ((40ull << 20) - len), len);
        if (::testing::Test::HasFatalFailure()) return;
      }
      std::vector<uint8_t> src(shared_len);
      FillRandom(src.data(), shared_len, seed);
      Status w = c->Write(peer_, kSeg, kKey, shared_off, src.data(), shared_len, Deadline::After(Millis(30000)));
      EXPECT_TRUE(w.ok()) << w.ToString();
      done++;
    });
  });
  std::thread b([&] {
    InNetns(3, [&] {
      auto c = Client();
      std::mt19937_64 rng(FreshSeed());
      for (uint64_t len : {3ull, 8191ull, (2ull << 20) + 1, 12ull << 20})
        WriteReadBack(*c, peer_, (40ull << 20) + rng() % ((38ull << 20) - len), len);
    });
  });
  a.join();
  b.join();
  ASSERT_EQ(done.load(), 1);
  // What ns2 wrote, ns3 reads.
  InNetns(3, [&] {
    auto c = Client();
    std::vector<uint8_t> dst(shared_len, 0x5A);
    Status r = c->Read(peer_, kSeg, kKey, shared_off, dst.data(), shared_len, Deadline::After(Millis(30000)));
    ASSERT_TRUE(r.ok()) << r.ToString();
    EXPECT_FALSE(FirstMismatch(dst.data(), shared_len, seed).has_value());
  });
}

TEST_F(NetnsTcpTest, LinkDownMidTransferFailsWithinDeadlineThenRecovers) {
  StartServer();
  if (HasFatalFailure()) return;
  std::atomic<bool> first_ok{false};
  Status failure;
  std::thread client([&] {
    InNetns(2, [&] {
      auto c = Client();
      std::vector<uint8_t> src(32 << 20);
      FillRandom(src.data(), src.size(), FreshSeed());
      for (int i = 0; i < 2000; ++i) {
        Status s = c->Write(peer_, kSeg, kKey, 0, src.data(), src.size(), Deadline::After(Millis(2000)));
        if (!s.ok()) {
          failure = s;
          return;
        }
        first_ok = true;
      }
    });
  });
  while (!first_ok) std::this_thread::sleep_for(Millis(5));
  std::string out;
  ASSERT_EQ(Sh("ip netns exec " + Ns(1) + " ip link set " + If(1) + " down", &out), 0) << out;
  client.join();  // a hang here would be the bug
  EXPECT_TRUE(failure.code() == Code::kTimeout || failure.code() == Code::kPeerDown || failure.code() == Code::kIo)
      << failure.ToString();
  ASSERT_EQ(Sh("ip netns exec " + Ns(1) + " ip link set " + If(1) + " up", &out), 0) << out;
  InNetns(2, [&] {
    auto c = Client();
    // The bridge port and the address come back within moments; allow a few tries.
    Status last;
    for (int i = 0; i < 50; ++i) {
      std::vector<uint8_t> probe(16);
      last = c->Read(peer_, kSeg, kKey, 0, probe.data(), probe.size(), Deadline::After(Millis(1000)));
      if (last.ok()) break;
      std::this_thread::sleep_for(Millis(100));
    }
    ASSERT_TRUE(last.ok()) << last.ToString();
    WriteReadBack(*c, peer_, 4096, (9 << 20) + 1);
  });
}

TEST_F(NetnsTcpTest, LossAndDelayStillExact) {
  std::string out;
  if (Sh("ip netns exec " + Ns(1) + " tc qdisc add dev " + If(1) + " root netem loss 5% delay 20ms", &out) != 0)
    GTEST_SKIP() << "netem is not available (the sch_netem kernel module is needed): " << out;
  StartServer();
  if (HasFatalFailure()) return;
  InNetns(3, [&] {
    auto c = Client();
    for (uint64_t len : {1ull, 100000ull, 4ull << 20}) {
      std::vector<uint8_t> src(len), dst(len, 0x5A);
      const uint64_t seed = FreshSeed();
      FillRandom(src.data(), len, seed);
      Status w = c->Write(peer_, kSeg, kKey, 512, src.data(), len, Deadline::After(Millis(60000)));
      if (w.code() == Code::kTimeout) continue;  // a clean timeout is allowed on a lossy link
      ASSERT_TRUE(w.ok()) << w.ToString();
      Status r = c->Read(peer_, kSeg, kKey, 512, dst.data(), len, Deadline::After(Millis(60000)));
      if (r.code() == Code::kTimeout) continue;
      ASSERT_TRUE(r.ok()) << r.ToString();
      EXPECT_FALSE(FirstMismatch(dst.data(), len, seed).has_value());
    }
  });
}

TEST_F(NetnsTcpTest, ServerKilledMidTransfer) {
  StartServer();
  if (HasFatalFailure()) return;
  std::atomic<bool> first_ok{false};
  Status failure;
  std::thread client([&] {
    InNetns(3, [&] {
      auto c = Client();
      std::vector<uint8_t> buf(48 << 20);
      FillRandom(buf.data(), buf.size(), FreshSeed());
      for (int i = 0; i < 2000; ++i) {
        Status s = (i % 2) ? c->Read(peer_, kSeg, kKey, 0, buf.data(), buf.size(), Deadline::After(Millis(10000)))
                           : c->Write(peer_, kSeg, kKey, 0, buf.data(), buf.size(), Deadline::After(Millis(10000)));
        if (!s.ok()) {
          failure = s;
          return;
        }
        first_ok = true;
      }
    });
  });
  while (!first_ok) std::this_thread::sleep_for(Millis(5));
  std::this_thread::sleep_for(Millis(3));
  StopServer();  // SIGKILL to the server's own pid (> 0)
  client.join();
  EXPECT_TRUE(failure.code() == Code::kPeerDown || failure.code() == Code::kIo) << failure.ToString();
  // Later calls fail fast as well.
  InNetns(3, [&] {
    auto c = Client();
    std::vector<uint8_t> probe(16);
    Status s = c->Read(peer_, kSeg, kKey, 0, probe.data(), probe.size(), Deadline::After(Millis(10000)));
    EXPECT_TRUE(s.code() == Code::kPeerDown || s.code() == Code::kIo) << s.ToString();
  });
}

}  // namespace
}  // namespace weft::transport::tcp
