// The transfer engine across "hosts" (network namespaces, tests/integration/netns_hosts.h):
// `weft trans-serve` runs in host 1, `weft bench-trans --target` in host 2 and 3. Bytes must
// arrive exactly (the server checks them when the writer's notification says so, and the writer
// reads them back); a wrong secret, a cut link and a killed server each give an error, never a
// hang, and over ucx a server killed mid-stream and restarted under its name is reached again by
// the same client engine. Skips without root, except on CI (CI=true) where that is a failure.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "netns_hosts.h"
#include "support/ucx_probe.h"

namespace weft {
namespace {

using testing::NetnsHosts;
using testing::Sh;

constexpr char kSecret[] = "netns-trans-secret-8e1f";
constexpr char kSize[] = "24M";

class NetnsTransTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why = hosts_.Build(3);
    if (!why.empty()) {
      hosts_.Cleanup();
      if (testing::OnCi()) FAIL() << why;
      GTEST_SKIP() << why;
    }
    StartServer();
  }
  void TearDown() override { StopServer(); }

  // transports: the server's ("auto", or "ucx,tcp" with UCX_TLS=tcp for ucx over its tcp);
  // name: its --name (its host, or host:port to take that rpc port and so that name again).
  void StartServer(const std::string& transports = "auto", std::string name = "") {
    int in[2], out[2];
    ASSERT_EQ(::pipe(in), 0);
    ASSERT_EQ(::pipe(out), 0);
    std::string ns = hosts_.Ns(1), ip = hosts_.Ip(1);
    if (name.empty()) name = ip;
    std::string asan_options = testing::UcxChildAsanOptions();  // made before the fork
    pid_ = ::fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::close(in[1]);  // else the server's stdin never reaches end of file
      ::close(out[0]);
      ::setenv("WEFT_CLUSTER_SECRET", kSecret, 1);
      ::setenv("UCX_TLS", "tcp", 1);  // what ucx may use between namespaces here (read only by ucx)
      if (transports.find("ucx") != std::string::npos) ::putenv(asan_options.data());
      ::execlp("ip", "ip", "netns", "exec", ns.c_str(), WEFT_BINARY, "trans-serve", "--stdin-lifeline", "--name",
               name.c_str(), "--bind", ip.c_str(), "--size", kSize, "--transports", transports.c_str(),
               static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    to_server_ = in[1];
    from_server_ = ::fdopen(out[0], "r");
    std::istringstream ready(Line());
    std::string word;
    ASSERT_TRUE(ready >> word >> name_ >> addr_ >> size_) << "server did not start";
    ASSERT_EQ(word, "READY");
  }

  void StopServer() {
    if (to_server_ >= 0) ::close(to_server_);
    to_server_ = -1;
    if (pid_ > 0) {
      int status;
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
    }
    if (from_server_) std::fclose(from_server_);
    from_server_ = nullptr;
  }

  // The server's next line (NOTIFY lines skipped).
  std::string Line() {
    char buf[1024];
    while (from_server_ && std::fgets(buf, sizeof buf, from_server_)) {
      std::string line(buf);
      if (!line.empty() && line.back() == '\n') line.pop_back();
      if (line.rfind("NOTIFY ", 0) != 0) return line;
    }
    return "";
  }

  // The bench-trans command line from host h against the server: a batch case of `pages` 16 KiB
  // pages, a large case of 16 MiB, and `extra`.
  std::string ClientCommand(int h, const std::string& extra, const std::string& secret = kSecret,
                            int pages = 256) const {
    const std::string lsan = extra.find("ucx") == std::string::npos ? "" : testing::UcxChildAsanOptions() + " ";
    return lsan + "WEFT_CLUSTER_SECRET=" + secret + " UCX_TLS=tcp " +
           hosts_.In(h, std::string(WEFT_BINARY) + " bench-trans --verify-only --name " + hosts_.Ip(h) + " --bind " +
                            hosts_.Ip(h) + " --target " + name_ + " --remote-addr " + std::to_string(addr_) +
                            " --remote-size " + std::to_string(size_) + " --pages " + std::to_string(pages) +
                            " --page 16K --large 16M " + extra);
  }
  // bench-trans from host h against the server; its exit code and output.
  int Client(int h, const std::string& extra, std::string* out, const std::string& secret = kSecret, int pages = 256) {
    return Sh(ClientCommand(h, extra, secret, pages), out);
  }

  // From hosts 2 and 3: every case verified (the client's rows name `path`), and the server
  // compared the bytes when the notification arrived, i.e. after the data: one verdict per
  // verified case (the client waited for each before it wrote again). pages: 16 KiB pages in the
  // batch case.
  void ExpectExactFromTwoHosts(const std::string& extra, const std::string& path, int pages = 256) {
    for (int h : {2, 3}) {
      std::string out;
      ASSERT_EQ(Client(h, extra, &out, kSecret, pages), 0) << out;
      EXPECT_NE(out.find("verified " + std::to_string(pages) + "x16K (managed, via " + path + ")"), std::string::npos)
          << out;
      EXPECT_NE(out.find("verified 1x16M (managed, via " + path + ")"), std::string::npos) << out;
      int verified = 0;
      for (size_t at = out.find("verified "); at != std::string::npos; at = out.find("verified ", at + 1)) ++verified;
      EXPECT_GE(verified, 3) << out;
      for (int k = 0; k < verified; ++k) EXPECT_EQ(Line(), "CHECK ok") << "host " << h << ", case " << k;
    }
  }

  // SIGKILLs the server (`ip netns exec` execs it in place, so pid_ is the server itself, and
  // only ours: other test processes run servers with the same address in their own namespaces).
  void KillServer() {
    ASSERT_GT(pid_, 0);
    ASSERT_EQ(::kill(pid_, SIGKILL), 0);
    int status;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

  NetnsHosts hosts_{"wx" + std::to_string(::getpid() % 100000), 78};
  pid_t pid_ = -1;
  int to_server_ = -1;
  FILE* from_server_ = nullptr;
  std::string name_;
  uint64_t addr_ = 0, size_ = 0;
};

TEST_F(NetnsTransTest, WritesAndReadsAcrossHostsAreExact) {
  EXPECT_EQ(name_, hosts_.Ip(1) + ":" + name_.substr(name_.rfind(':') + 1));
  ExpectExactFromTwoHosts("", "tcp");
}

TEST_F(NetnsTransTest, WrongSecretIsRefused) {
  std::string out;
  EXPECT_NE(Client(2, "", &out, "not-the-secret"), 0) << out;
  EXPECT_NE(out.find("UNAUTHENTICATED"), std::string::npos) << out;
}

TEST_F(NetnsTransTest, CutLinkFailsWithinTheDeadlineThenRecovers) {
  std::string out;
  ASSERT_EQ(Sh(hosts_.In(1, "ip link set " + hosts_.If(1) + " down"), &out), 0) << out;
  // The descriptor comes from the server itself (p2p), so the failure shows at its first
  // contact; the deadlines bound it either way.
  int rc = Client(2, "--set deadline_ms=3000", &out);
  EXPECT_NE(rc, 0) << out;
  EXPECT_TRUE(out.find("TIMEOUT") != std::string::npos || out.find("UNAVAILABLE") != std::string::npos ||
              out.find("PEER_DOWN") != std::string::npos)
      << out;
  ASSERT_EQ(Sh(hosts_.In(1, "ip link set " + hosts_.If(1) + " up"), &out), 0) << out;
  ASSERT_EQ(Client(2, "", &out), 0) << out;
  EXPECT_EQ(Line(), "CHECK ok");
}

TEST_F(NetnsTransTest, KilledServerIsAnErrorNotAHang) {
  KillServer();
  std::string out;
  EXPECT_NE(Client(2, "--set deadline_ms=3000", &out), 0) << out;
}

#if WEFT_HAVE_UCX
using testing::UcxRunsHere;

// Over ucx (UCX's tcp between the namespaces): the same exact writes and reads from two hosts,
// a batch of 1000 scattered 16 KiB pages among them (issued in a shuffled order), the server's
// check after each notification (tcp carries those), and the route names ucx.
TEST_F(NetnsTransTest, WritesAndReadsOverUcxAreExact) {
  std::string why;
  if (!UcxRunsHere(&why)) GTEST_SKIP() << "no UCX here: " << why;
  StopServer();
  StartServer("ucx,tcp");
  ExpectExactFromTwoHosts("--paths ucx+tcp --scatter", "ucx", 1000);
}

// A server killed while two clients stream batches of 1000 scattered 8 KiB pages to it over ucx,
// each into its own part of the server's buffer (every byte compared each round): both clients'
// ops fail with PEER_DOWN, never hang. The client without --recover exits 1 naming it; the other
// keeps its engine and, once the server is restarted under the same name, finds it again (its new
// descriptor: a new worker address, new rkeys, a buffer elsewhere) and writes and reads it
// exactly, which the new server checks.
TEST_F(NetnsTransTest, PeerKilledMidStreamOverUcxFailsThenTheSameEngineReachesItsRestart) {
  using std::chrono::seconds;
  std::string why;
  if (!UcxRunsHere(&why)) GTEST_SKIP() << "no UCX here: " << why;
  StopServer();
  StartServer("ucx,tcp");
  if (HasFatalFailure()) return;
  const std::string name = name_;
  auto client = [&](int h, const std::string& extra) {
    std::vector<std::string> argv = {"ip", "netns", "exec", hosts_.Ns(h), WEFT_BINARY, "bench-trans", "--verify-only",
                                     "--name", hosts_.Ip(h), "--bind", hosts_.Ip(h), "--target", name,
                                     "--remote-addr", std::to_string(addr_), "--remote-size", std::to_string(size_),
                                     "--pages", "1000", "--page", "8K", "--large", "8M", "--scatter", "--paths",
                                     "ucx+tcp", "--set", "deadline_ms=3000", "--stream", "120"};
    std::istringstream more(extra);
    for (std::string word; more >> word;) argv.push_back(word);
    return std::make_unique<testing::Spawned>(
        argv, std::vector<std::string>{std::string("WEFT_CLUSTER_SECRET=") + kSecret, "UCX_TLS=tcp",
                                       testing::UcxChildAsanOptions()});
  };
  auto quits = client(2, "--remote-offset 0");
  auto recovers = client(3, "--remote-offset 12M --recover 30");
  ASSERT_TRUE(quits->started() && recovers->started());
  for (auto* c : {quits.get(), recovers.get()})
    ASSERT_NE(c->WaitFor("STREAMING", seconds(30)), "") << "the client never streamed: " << c->output();
  EXPECT_NE(quits->output().find("STREAMING 1000x8K via ucx"), std::string::npos) << quits->output();
  for (int k = 0; k < 6; ++k) EXPECT_EQ(Line(), "CHECK ok") << "case " << k << " of the first checks";
  KillServer();
  StopServer();  // its pipes
  // Failures within the clients' 3 s deadline; 20 s is the test's bound on a hang.
  EXPECT_EQ(quits->Wait(seconds(20)), 1) << quits->output();
  EXPECT_NE(quits->output().find("STREAM FAILED PEER_DOWN"), std::string::npos) << quits->output();
  const std::string failed = recovers->WaitFor("STREAM FAILED", seconds(20));
  EXPECT_NE(failed.find("PEER_DOWN"), std::string::npos) << recovers->output();
  // Restarted under the same name (the same rpc port).
  StartServer("ucx,tcp", name);
  if (HasFatalFailure()) return;
  EXPECT_EQ(name_, name);
  EXPECT_EQ(recovers->Wait(seconds(30)), 0) << recovers->output();
  const std::string& out = recovers->output();
  EXPECT_NE(out.find("RECOVERED: '" + name + "' answers again, its buffer at " + std::to_string(addr_)),
            std::string::npos)
      << out;
  const size_t after = out.find("RECOVERED");
  for (const char* row : {"verified 1000x8K (managed, via ucx)", "verified 1x8M (managed, via ucx)",
                          "verified 1x4K (managed, via ucx)"}) {
    EXPECT_NE(out.find(row, after == std::string::npos ? 0 : after), std::string::npos) << row << "\n" << out;
    EXPECT_EQ(Line(), "CHECK ok") << row;  // the new server compared the bytes itself
  }
}

// A killed server: the client's ucx ops fail (PEER_DOWN or its deadline), never hang.
TEST_F(NetnsTransTest, KilledServerOverUcxIsAnErrorNotAHang) {
  std::string why;
  if (!UcxRunsHere(&why)) GTEST_SKIP() << "no UCX here: " << why;
  StopServer();
  StartServer("ucx,tcp");
  KillServer();
  std::string out;
  EXPECT_NE(Client(2, "--paths ucx+tcp --set deadline_ms=3000", &out), 0) << out;
}
#endif

}  // namespace
}  // namespace weft
