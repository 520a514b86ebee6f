// The CLI end to end: `weft demo` starts real peer processes and must verify every direction;
// `weft route` explains a path; `weft config` reports bad input; `weft status` shows a pool of
// peer processes without joining it.
#include <gtest/gtest.h>
#include <httplib.h>

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <fstream>
#include <functional>
#include <signal.h>
#include <cstdio>
#include <set>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>
#include <weft/pool.h>

#include "integration/netns_hosts.h"
#include "integration/peer_process.h"

namespace {

struct CommandRun {
  int exit_code;
  std::string output;
};

// Runs `cmd` through the shell; `stderr_to` is where its stderr goes ("&1": into the output).
CommandRun RunShell(const std::string& cmd, const std::string& stderr_to) {
  CommandRun r{-1, {}};
  FILE* p = popen((cmd + " 2>" + stderr_to).c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

CommandRun RunCommand(const std::string& cmd) { return RunShell(cmd, "&1"); }

size_t Count(const std::string& text, const std::string& word) {
  size_t n = 0;
  for (size_t at = text.find(word); at != std::string::npos; at = text.find(word, at + 1)) ++n;
  return n;
}

TEST(Cli, DemoVerifiesEveryDirectionAcrossFourPeers) {
  CommandRun r = RunCommand(std::string(WEFT_BINARY) + " demo --peers 4 --size 16MiB");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("every direction verified"), std::string::npos) << r.output;
  for (const char* direction : {"LH -> LH", "LH -> GH own slice", "GH own slice -> LH", "LH -> GH other peer",
                                "GH other peer -> LH", "GH own -> GH other peer", "GH other -> GH third peer",
                                "batch", "async", "written by another peer"})
    EXPECT_NE(r.output.find(direction), std::string::npos) << direction << " missing:\n" << r.output;
  EXPECT_EQ(Count(r.output, "4/4"), 12u) << r.output;
  EXPECT_EQ(r.output.find("FAILED"), std::string::npos) << r.output;
}

// --nodes: peers on separate hosts (network namespaces when root, else loopback), joined through
// a tcp:// coordinator and reached only over authenticated tcp.
TEST(Cli, DemoAcrossThreeNodesGoesOverTcp) {
  CommandRun r = RunCommand(std::string(WEFT_BINARY) + " demo --peers 4 --size 16MiB --nodes 3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("transport tcp"), std::string::npos) << r.output;
  // The coordinator is on tcp as well: the peers share no filesystem path.
  EXPECT_NE(r.output.find("(coordinator tcp://"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("LH -> GH other peer                         tcp"), std::string::npos) << r.output;
  EXPECT_EQ(Count(r.output, "4/4"), 12u) << r.output;
  EXPECT_NE(r.output.find("every direction verified"), std::string::npos) << r.output;
  if (geteuid() == 0) {
    EXPECT_NE(r.output.find("network namespaces"), std::string::npos) << r.output;
    // The demo removes the namespaces it made (named wd<pid>br and wd<pid>h<k>).
    CommandRun left = RunCommand("ip netns list | grep -E '^wd[0-9]+(br|h[0-9]+)' || true");
    EXPECT_EQ(left.output, "") << left.output;
  }
}

TEST(Cli, DemoRefusesBadSizes) {
  CommandRun r = RunCommand(std::string(WEFT_BINARY) + " demo --peers 2 --size lots");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--size"), std::string::npos) << r.output;
}

TEST(Cli, RouteExplainsThePathAndMetaServesPeers) {
  const std::string pool = "cli-route-" + std::to_string(getpid());
  const std::string flags = " --set pool_name=" + pool + " --set rank_size=4MiB";
  FILE* meta = popen((std::string(WEFT_BINARY) + " meta" + flags + " 2>&1").c_str(), "r");
  ASSERT_NE(meta, nullptr);
  char line[512] = {};
  ASSERT_NE(fgets(line, sizeof line, meta), nullptr);
  EXPECT_NE(std::string(line).find("listening"), std::string::npos) << line;
  // rank 0's slice (the route command joins as the only peer, so it is its own) from local memory.
  CommandRun r = RunCommand(std::string(WEFT_BINARY) + " route 0x200000000000 local --len 4096" + flags);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("LH -> GH"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("via memcpy"), std::string::npos) << r.output;
  CommandRun bad = RunCommand(std::string(WEFT_BINARY) + " route 0x200000000000 nowhere" + flags);
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  CommandRun logged = RunCommand("WEFT_LOG_PATHS=1 " + std::string(WEFT_BINARY) + " route 0x200000300000 local" + flags);
  EXPECT_NE(logged.output.find("(LH) -> 0x200000300000 (GH) via memcpy"), std::string::npos) << logged.output;
  // 2 KiB before the end of the 4 MiB slice, 4 KiB long.
  CommandRun past = RunCommand(std::string(WEFT_BINARY) + " route 0x2000003ff800 local --len 4096" + flags);
  EXPECT_EQ(past.exit_code, 1) << past.output;
  EXPECT_NE(past.output.find("no route: OUT_OF_RANGE"), std::string::npos) << past.output;
  // --len is only a number to route: 1 TiB used to be allocated (bad_alloc, abort) as "local".
  CommandRun huge = RunCommand(std::string(WEFT_BINARY) + " route local local --len 1TiB" + flags);
  EXPECT_EQ(huge.exit_code, 0) << huge.output;
  EXPECT_NE(huge.output.find("LH -> LH"), std::string::npos) << huge.output;
  CommandRun huge_gva = RunCommand(std::string(WEFT_BINARY) + " route 0x200000000000 local --len 1TiB" + flags);
  EXPECT_EQ(huge_gva.exit_code, 1) << huge_gva.output;
  EXPECT_NE(huge_gva.output.find("no route: OUT_OF_RANGE"), std::string::npos) << huge_gva.output;
  std::system(("pkill -f 'weft meta --set pool_name=" + pool + "'").c_str());
  pclose(meta);
}

// `weft meta --directory-only` as a Mooncake-style metadata server: a trans-serve peer publishes
// its descriptor through http://.../metadata, and bench-trans finds it there by name and proves
// that its bytes arrive exactly.
TEST(Cli, MetaServesMooncakeMetadataForTransferEngines) {
  const std::string tag = std::to_string(getpid());
  FILE* meta = popen((std::string(WEFT_BINARY) + " meta --directory 127.0.0.1:0 --directory-only --set pool_name=cli-dir-" +
                      tag + " 2>&1")
                         .c_str(),
                     "r");
  ASSERT_NE(meta, nullptr);
  char line[512] = {};
  ASSERT_NE(fgets(line, sizeof line, meta), nullptr);
  std::string text(line);
  auto at = text.find("directory on ");
  ASSERT_NE(at, std::string::npos) << text;
  std::string address = text.substr(at + 13, text.find(' ', at + 13) - at - 13);
  const std::string url = "http://" + address + "/metadata";
  const std::string env = "WEFT_CLUSTER_SECRET=cli-meta-" + tag + " ";
  FILE* serve = popen((env + WEFT_BINARY + " trans-serve --name serve-" + tag + " --metadata " + url +
                       " --advertise 127.0.0.1 --bind 127.0.0.1 --size 8M 2>&1")
                          .c_str(),
                      "r");
  ASSERT_NE(serve, nullptr);
  ASSERT_NE(fgets(line, sizeof line, serve), nullptr);
  std::string ready(line);
  ASSERT_EQ(ready.rfind("READY serve-" + tag + " ", 0), 0u) << ready;
  std::string addr = ready.substr(ready.find(' ', 6) + 1);
  addr = addr.substr(0, addr.find(' '));
  CommandRun r = RunCommand(env + WEFT_BINARY + " bench-trans --verify-only --name bench-" + tag + " --metadata " +
                            url + " --advertise 127.0.0.1 --bind 127.0.0.1 --target serve-" + tag +
                            " --remote-addr " + addr + " --remote-size 8388608 --pages 64 --page 16K --large 4M");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("verified 64x16K"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("verified 1x4M"), std::string::npos) << r.output;
  // The descriptor is readable with Mooncake's protocol (any HTTP client).
  CommandRun get = RunCommand("curl -s 'http://" + address + "/metadata?key=mooncake/ram/serve-" + tag + "'");
  if (get.exit_code == 0) {
    EXPECT_NE(get.output.find("\"transports\""), std::string::npos) << get.output;
  }
  std::system(("pkill -f 'trans-serve --name serve-" + tag + "'").c_str());
  std::system(("pkill -f 'pool_name=cli-dir-" + tag + "'").c_str());
  pclose(serve);
  pclose(meta);
}

// `weft meta --directory` with a cluster secret: a trans-serve peer with the secret publishes its
// descriptor; a client without it can read the descriptor but neither replace nor delete it
// (401), and the peer is still found by name afterwards.
TEST(Cli, MetaDirectoryWithASecretRefusesStrangersWrites) {
  const std::string tag = std::to_string(getpid());
  const std::string env = "WEFT_CLUSTER_SECRET=cli-dirauth-" + tag + " ";
  // Each process prints its pid first ("echo $$; exec"), so the test stops exactly what it started.
  FILE* meta = popen(("echo $$; exec env " + env + WEFT_BINARY + " meta --directory 127.0.0.1:0 --directory-only "
                      "--set pool_name=cli-dirauth-" + tag + " 2>&1")
                         .c_str(),
                     "r");
  ASSERT_NE(meta, nullptr);
  char line[512] = {};
  ASSERT_NE(fgets(line, sizeof line, meta), nullptr);
  const pid_t meta_pid = static_cast<pid_t>(std::stol(line));
  ASSERT_NE(fgets(line, sizeof line, meta), nullptr);
  std::string text(line);
  auto at = text.find("directory on ");
  ASSERT_NE(at, std::string::npos) << text;
  std::string address = text.substr(at + 13, text.find(' ', at + 13) - at - 13);
  ASSERT_NE(fgets(line, sizeof line, meta), nullptr);
  EXPECT_NE(std::string(line).find("directory writes require the cluster secret"), std::string::npos) << line;
  const std::string url = "embedded://" + address;
  FILE* serve = popen(("echo $$; exec env " + env + WEFT_BINARY + " trans-serve --name serve-" + tag + " --metadata " +
                       url + " --advertise 127.0.0.1 --bind 127.0.0.1 --size 8M 2>&1")
                          .c_str(),
                      "r");
  ASSERT_NE(serve, nullptr);
  ASSERT_NE(fgets(line, sizeof line, serve), nullptr);
  const pid_t serve_pid = static_cast<pid_t>(std::stol(line));
  ASSERT_NE(fgets(line, sizeof line, serve), nullptr);
  std::string ready(line);
  ASSERT_EQ(ready.rfind("READY serve-" + tag + " ", 0), 0u) << ready;
  std::string addr = ready.substr(ready.find(' ', 6) + 1);
  addr = addr.substr(0, addr.find(' '));

  auto colon = address.rfind(':');
  httplib::Client c(address.substr(0, colon), std::stoi(address.substr(colon + 1)));
  c.set_read_timeout(std::chrono::seconds(10));
  const std::string path = "/metadata?key=mooncake/ram/serve-" + tag;
  auto before = c.Get(path);
  ASSERT_TRUE(before);
  ASSERT_EQ(before->status, 200);
  auto del = c.Delete(path);
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 401) << del->body;
  auto put = c.Put(path, "forged", "application/json");
  ASSERT_TRUE(put);
  EXPECT_EQ(put->status, 401) << put->body;
  auto after = c.Get(path);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 200);
  EXPECT_EQ(after->body, before->body);
  CommandRun r = RunCommand(env + WEFT_BINARY + " bench-trans --verify-only --name bench-" + tag + " --metadata " +
                            url + " --advertise 127.0.0.1 --bind 127.0.0.1 --target serve-" + tag +
                            " --remote-addr " + addr + " --remote-size 8388608 --pages 16 --page 16K --large 1M");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  if (serve_pid > 0) kill(serve_pid, SIGTERM);
  if (meta_pid > 0) kill(meta_pid, SIGTERM);
  pclose(serve);
  pclose(meta);
}

// A transfer engine peer on this host with a managed buffer: `weft trans-route` and the
// bench-trans checks name the path each preference takes (shm, or tcp when it is the only one).
TEST(Cli, TransRouteNamesTheSameHostPath) {
  const std::string tag = std::to_string(getpid());
  const std::string env = "WEFT_CLUSTER_SECRET=cli-route-" + tag + " ";
  // A size of its own names this server's process for the pkill at the end.
  const std::string size = std::to_string((4u << 20) + (getpid() % 4096) * 4096);
  const std::string serve_args = "trans-serve --bind 127.0.0.1 --size " + size + " --location managed";
  FILE* serve = popen((env + WEFT_BINARY + " " + serve_args + " --name 127.0.0.1 --advertise 127.0.0.1 2>&1").c_str(), "r");
  ASSERT_NE(serve, nullptr);
  char line[512] = {};
  ASSERT_NE(fgets(line, sizeof line, serve), nullptr);
  std::istringstream ready(line);
  std::string word, name, addr;
  ASSERT_TRUE(ready >> word >> name >> addr) << line;
  ASSERT_EQ(word, "READY") << line;
  CommandRun shm = RunCommand(env + WEFT_BINARY + " trans-route " + name + " " + addr + " --len 1M --bind 127.0.0.1");
  EXPECT_EQ(shm.exit_code, 0) << shm.output;
  EXPECT_NE(shm.output.find("write LH -> GH (same node) via shm"), std::string::npos) << shm.output;
  EXPECT_NE(shm.output.find("read  GH -> LH (same node) via shm"), std::string::npos) << shm.output;
  CommandRun tcp = RunCommand(env + WEFT_BINARY + " trans-route " + name + " " + addr +
                              " --len 1M --bind 127.0.0.1 --transports tcp");
  EXPECT_EQ(tcp.exit_code, 0) << tcp.output;
  EXPECT_NE(tcp.output.find("via tcp"), std::string::npos) << tcp.output;
  CommandRun bad = RunCommand(env + WEFT_BINARY + " trans-route " + name + " " + addr + " --transports rdma");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("NOT_SUPPORTED"), std::string::npos) << bad.output;
  CommandRun bench = RunCommand(env + WEFT_BINARY + " bench-trans --verify-only --bind 127.0.0.1 --target " + name +
                                " --remote-addr " + addr + " --remote-size " + size + " --pages 16 --page 16K --large 2M");
  EXPECT_EQ(bench.exit_code, 0) << bench.output;
  EXPECT_NE(bench.output.find("verified 1x2M (managed, via shm)"), std::string::npos) << bench.output;
  EXPECT_NE(bench.output.find("verified 1x2M (managed, via tcp)"), std::string::npos) << bench.output;
  std::system(("pkill -f '" + serve_args + "'").c_str());
  pclose(serve);
}

// `weft trans-serve` with metrics_address serves its engine's registry, and says where on
// stderr (its stdout is the READY protocol).
TEST(Cli, TransServeServesItsMetrics) {
  const std::string tag = std::to_string(getpid());
  weft::testing::Spawned serve({WEFT_BINARY, "trans-serve", "--bind", "127.0.0.1", "--name", "127.0.0.1", "--size", "1M",
                          "--set", "metrics_address=127.0.0.1:0"},
                         {"WEFT_CLUSTER_SECRET=cli-metrics-" + tag});
  ASSERT_TRUE(serve.started());
  const std::string line = serve.WaitFor("metrics on http://", std::chrono::seconds(30));
  ASSERT_NE(line, "") << serve.output();
  const auto from = line.find("http://") + 7;
  const std::string address = line.substr(from, line.find("/metrics") - from);
  const auto colon = address.rfind(':');
  httplib::Client client(address.substr(0, colon), std::stoi(address.substr(colon + 1)));
  client.set_read_timeout(std::chrono::seconds(10));
  auto r = client.Get("/metrics");
  ASSERT_TRUE(r) << address;
  EXPECT_EQ(r->status, 200);
  EXPECT_NE(r->body.find("\nweft_trans_batches_total 0\n"), std::string::npos) << r->body;
  EXPECT_NE(r->body.find("# TYPE weft_trans_batch_latency_ns histogram\n"), std::string::npos) << r->body;
}

// The coordinator benchmark checks what it measures: every join announced both ways, every
// heartbeat counted and answered; its JSON says so.
TEST(Cli, BenchCoordinatorAccountsForEveryJoinAndHeartbeat) {
  const std::string json = "/tmp/weft-bench-coordinator-" + std::to_string(::getpid()) + ".json";
  CommandRun r = RunCommand(std::string(WEFT_BINARY) + " bench-coordinator --peers 40 --heartbeat-ms 50 --seconds 1 " +
                            "--json " + json);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("heartbeat round trip"), std::string::npos) << r.output;
  std::ifstream in(json);
  ASSERT_TRUE(in) << "no " << json;
  const auto j = nlohmann::json::parse(in);
  std::remove(json.c_str());
  EXPECT_EQ(j["peers"], 40);
  EXPECT_EQ(j["announcements"], 40 * 39);
  EXPECT_GT(j["heartbeats_sent"].get<uint64_t>(), 0u);
  EXPECT_EQ(j["heartbeats_answered"], j["heartbeats_sent"]);
  EXPECT_EQ(j["heartbeats_counted"], j["heartbeats_sent"]);
  EXPECT_GT(j["join_us"]["p50"].get<double>(), 0.0);
}

TEST(Cli, ConfigNamesTheBadKey) {
  CommandRun r = RunCommand(std::string(WEFT_BINARY) + " config");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("rank_size=256MiB"), std::string::npos) << r.output;
  CommandRun bad = RunCommand("WEFT_COPY_THREADS=many " + std::string(WEFT_BINARY) + " config");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("WEFT_COPY_THREADS"), std::string::npos) << bad.output;
}

// Bad input is refused with a message saying why, never silently changed or ignored.
TEST(Cli, BadFlagsAndConfigValuesAreRefusedWithWhy) {
  const std::string weft = WEFT_BINARY;
  CommandRun size = RunCommand(weft + " trans-serve --size -1");
  EXPECT_EQ(size.exit_code, 2) << size.output;
  EXPECT_NE(size.output.find("--size"), std::string::npos) << size.output;
  CommandRun zero = RunCommand(weft + " trans-serve --size 0");
  EXPECT_EQ(zero.exit_code, 2) << zero.output;
  EXPECT_NE(zero.output.find("at least 1 byte"), std::string::npos) << zero.output;

  CommandRun level = RunCommand("WEFT_LOG_LEVEL=loud " + weft + " config");
  EXPECT_EQ(level.exit_code, 1) << level.output;
  EXPECT_NE(level.output.find("log_level"), std::string::npos) << level.output;
  EXPECT_NE(level.output.find("trace, debug, info, warn, error, off"), std::string::npos) << level.output;
  CommandRun threads = RunCommand("WEFT_COPY_THREADS=100000 " + weft + " config");
  EXPECT_EQ(threads.exit_code, 1) << threads.output;
  EXPECT_NE(threads.output.find("0..256"), std::string::npos) << threads.output;

  CommandRun dir = RunCommand(weft + " config --file /tmp");
  EXPECT_EQ(dir.exit_code, 1) << dir.output;
  EXPECT_NE(dir.output.find("is a directory"), std::string::npos) << dir.output;
  CommandRun dir_flag = RunCommand(weft + " route local local --config /tmp");
  EXPECT_EQ(dir_flag.exit_code, 2) << dir_flag.output;
  EXPECT_NE(dir_flag.output.find("is a directory"), std::string::npos) << dir_flag.output;

  CommandRun lanes = RunCommand(weft + " bench-tcp --lanes 0");
  EXPECT_EQ(lanes.exit_code, 2) << lanes.output;
  EXPECT_NE(lanes.output.find("--lanes 0 is out of range (1..64)"), std::string::npos) << lanes.output;
}

// pool_name names the demo's pool (it used to be replaced by demo-<pid> without a word).
TEST(Cli, DemoHonoursPoolName) {
  const std::string pool = "cli-demo-" + std::to_string(getpid());
  CommandRun r = RunCommand(std::string(WEFT_BINARY) + " demo --peers 2 --size 16MiB --set pool_name=" + pool);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("pool '" + pool + "'"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("every direction verified"), std::string::npos) << r.output;
}

// A peer process that dies before joining is noticed at once (it used to cost the demo its 120 s
// join wait), and the demo says how it ended and quotes its stderr. The peers read WEFT_* from
// the environment they inherit while --set binds only the demo itself, so a bad WEFT_TRANSPORT
// makes every peer exit (status 1: its Pool::Join refuses the transport) while the demo runs.
TEST(Cli, DemoReportsAPeerThatDiesBeforeJoining) {
  const auto started = std::chrono::steady_clock::now();
  CommandRun r = RunCommand("WEFT_TRANSPORT=bogus " + std::string(WEFT_BINARY) +
                            " demo --peers 3 --size 16MiB --set transport=auto");
  const auto took = std::chrono::steady_clock::now() - started;
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("before joining the pool"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("exited with status 1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("bogus"), std::string::npos) << "the peer's own error is quoted:\n" << r.output;
  EXPECT_LT(took, std::chrono::seconds(30)) << "the demo waited for the join deadline";
}

// Starts `weft demo` with `args`, waits until its peers are started, sends it SIGTERM and
// returns its exit status (its output in *output).
int TerminateDemo(const std::vector<std::string>& args, std::string* output, pid_t* demo_pid = nullptr,
                  const std::function<void()>& before_signal = {}) {
  std::vector<std::string> argv = {WEFT_BINARY, "demo"};
  argv.insert(argv.end(), args.begin(), args.end());
  weft::testing::Spawned demo(argv);
  if (!demo.started()) return -2;
  if (demo_pid) *demo_pid = demo.pid();
  if (demo.WaitFor("peer processes", std::chrono::seconds(60)).empty()) {
    *output = demo.output();
    return -3;
  }
  if (before_signal) before_signal();
  ::kill(demo.pid(), SIGTERM);
  const int status = demo.Wait(std::chrono::seconds(60));
  *output = demo.output();
  return status;
}

// SIGTERM kills the peer processes, removes the coordinator's socket and exits non-zero.
TEST(Cli, TerminatedDemoLeavesNoSocketOrPeers) {
  const std::string pool = "cli-term-" + std::to_string(getpid());
  const std::string socket = "/tmp/weft-" + pool + ".sock";
  std::string output;
  bool socket_was_there = false;
  std::string peer_masks;  // the peers' blocked signals: none, so that a plain kill ends a peer
  const int status = TerminateDemo({"--peers", "3", "--size", "64MiB", "--set", "pool_name=" + pool}, &output,
                                   nullptr, [&] {
                                     socket_was_there = ::access(socket.c_str(), F_OK) == 0;
                                     peer_masks = RunCommand("for p in $(pgrep -f '[d]emo-peer .*--pool " + pool +
                                                             "'); do grep SigBlk /proc/$p/status; done").output;
                                   });
  EXPECT_TRUE(socket_was_there) << output;
  EXPECT_EQ(Count(peer_masks, "SigBlk:"), 2u) << peer_masks;
  EXPECT_EQ(Count(peer_masks, "SigBlk:\t0000000000000000"), 2u) << peer_masks;
  EXPECT_EQ(status, 128 + SIGTERM) << output;
  EXPECT_NE(access(socket.c_str(), F_OK), 0) << socket << " is left behind:\n" << output;
  // No peer process of this pool is left ("[d]" keeps the shell running pgrep from matching).
  CommandRun left = RunCommand("pgrep -f '[d]emo-peer .*--pool " + pool + "' || true");
  EXPECT_EQ(left.output, "") << left.output;
}

// With --nodes, the namespaces it made go too (only where the demo can make them: as root).
TEST(Cli, TerminatedDemoAcrossNodesRemovesItsNamespaces) {
  if (geteuid() != 0) GTEST_SKIP() << "making network namespaces needs root; the demo would use loopback";
  std::string output;
  pid_t demo_pid = 0;
  std::string during;
  const int status = TerminateDemo({"--peers", "3", "--size", "64MiB", "--nodes", "3"}, &output, &demo_pid, [&] {
    CommandRun made = RunCommand("ip netns list | grep -E '^wd" + std::to_string(demo_pid % 100000) + "(br|h[0-9]+)' || true");
    during = made.output;
  });
  if (output.find("network namespaces") == std::string::npos) {
    GTEST_SKIP() << "the demo could not make network namespaces here (it fell back to loopback):\n" << output;
  }
  EXPECT_NE(during, "") << "no namespace of the demo was seen while it ran:\n" << output;
  EXPECT_EQ(status, 128 + SIGTERM) << output;
  CommandRun left = RunCommand("ip netns list | grep -E '^wd" + std::to_string(demo_pid % 100000) + "(br|h[0-9]+)' || true");
  EXPECT_EQ(left.output, "") << "namespaces left behind:\n" << left.output << output;
}


// ---- weft status ----

// stdout alone (a JSON document must not be mixed with log lines), and the exit status.
CommandRun RunStdout(const std::string& cmd) { return RunShell(cmd, "/dev/null"); }

const nlohmann::json* PeerNamed(const nlohmann::json& status, const std::string& name) {
  for (const auto& p : status["peers"])
    if (p["name"] == name) return &p;
  return nullptr;
}

// Runs `weft status --json` until pred holds on what it prints (bounded); the last document.
nlohmann::json StatusWhen(const std::string& flags, const std::function<bool(const nlohmann::json&)>& pred) {
  nlohmann::json last;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < until) {
    CommandRun r = RunStdout(std::string(WEFT_BINARY) + " status --json" + flags);
    if (r.exit_code == 0) {
      last = nlohmann::json::parse(r.output, nullptr, false);
      if (!last.is_discarded() && pred(last)) return last;
    }
    usleep(100 * 1000);
  }
  return last;
}

// Three peer processes join a pool served by `weft meta`; one allocates. `weft status` lists
// every rank by name with its usage, without taking a rank itself, and shows a killed peer down.
TEST(Cli, StatusShowsPeersTheirUsageAndADeath) {
  weft::Config config = weft::testing::TestConfig("cli-status", 16u << 20);
  // Forked before this process starts any thread; each waits for Release().
  weft::testing::PeerProcesses peers(3, [&](int i) {
    weft::Config c = config;
    c.peer_name = "status-peer-" + std::to_string(i);
    auto pool = weft::bm::Pool::Join(c, weft::bm::JoinMode::kJoin);
    if (!pool.ok()) {
      fprintf(stderr, "%s: %s\n", c.peer_name.c_str(), pool.status().ToString().c_str());
      return 1;
    }
    if (i == 0 && !(*pool)->Alloc(3u << 20).ok()) return 2;
    for (;;) pause();  // until killed
  });
  const std::string flags = " --set pool_name=" + config.pool_name + " --set rank_size=16MiB --set coordinator=" +
                            config.coordinator + " --set peer_timeout_ms=1500";
  weft::testing::Spawned meta({WEFT_BINARY, "meta", "--set", "pool_name=" + config.pool_name, "--set",
                               "rank_size=16MiB", "--set", "coordinator=" + config.coordinator, "--set",
                               "peer_timeout_ms=1500"});
  ASSERT_NE(meta.WaitFor("listening", std::chrono::seconds(30)), "") << meta.output();
  peers.Release();

  nlohmann::json s = StatusWhen(flags, [](const nlohmann::json& j) {
    const nlohmann::json* first = PeerNamed(j, "status-peer-0");
    return j["peers_up"] == 3 && first && (*first)["host_usage"]["allocations"] == 1;
  });
  ASSERT_EQ(s["peers_up"], 3) << s.dump(2);
  EXPECT_EQ(s["pool"], config.pool_name);
  EXPECT_EQ(s["coordinator"], config.coordinator);
  EXPECT_EQ(s["rank_size"], 16u << 20);
  ASSERT_EQ(s["peers"].size(), 3u) << "status itself took no rank";
  std::set<int> ranks;
  for (int i = 0; i < 3; ++i) {
    const nlohmann::json* p = PeerNamed(s, "status-peer-" + std::to_string(i));
    ASSERT_NE(p, nullptr) << i << s.dump(2);
    EXPECT_EQ((*p)["state"], "up");
    EXPECT_EQ((*p)["pid"], peers.pid(i));
    EXPECT_EQ((*p)["host_slice"], 16u << 20);
    EXPECT_EQ((*p)["host_usage"]["capacity"], 16u << 20);
    EXPECT_FALSE((*p)["paths"].empty()) << "a peer advertises how it is reached";
    ranks.insert((*p)["rank"].get<int>());
  }
  EXPECT_EQ(ranks, (std::set<int>{0, 1, 2}));
  const nlohmann::json& allocating = *PeerNamed(s, "status-peer-0");
  EXPECT_GE(allocating["host_usage"]["used"].get<uint64_t>(), 3u << 20);
  EXPECT_EQ(PeerNamed(s, "status-peer-1")->at("host_usage")["used"], 0);
  EXPECT_GE(s["usage"]["host"]["used"].get<uint64_t>(), 3u << 20);
  EXPECT_EQ(s["usage"]["host"]["capacity"], 3 * (16u << 20));

  // The table shows the same, columns aligned under their headers.
  CommandRun table = RunCommand(std::string(WEFT_BINARY) + " status" + flags);
  ASSERT_EQ(table.exit_code, 0) << table.output;
  for (const char* what : {"RANK", "HOST USED", "PATHS", "status-peer-2", "3 up, 0 down", "recent errors: none"})
    EXPECT_NE(table.output.find(what), std::string::npos) << what << " missing:\n" << table.output;
  std::istringstream lines(table.output);
  std::string line, header;
  size_t rows = 0;
  while (std::getline(lines, line)) {
    if (line.rfind("RANK", 0) == 0) header = line;
    if (header.empty() || line.find("status-peer-") == std::string::npos) continue;
    ++rows;
    const size_t state_col = header.find("STATE");
    EXPECT_EQ(line.substr(state_col, 2), "up") << header << "\n" << line;
  }
  EXPECT_EQ(rows, 3u) << table.output;

  // A killed peer is down (within the peer timeout), and the coordinator says why.
  peers.Kill(1);
  s = StatusWhen(flags, [](const nlohmann::json& j) {
    const nlohmann::json* p = PeerNamed(j, "status-peer-1");
    return p && (*p)["state"] == "down";
  });
  const nlohmann::json* dead = PeerNamed(s, "status-peer-1");
  ASSERT_NE(dead, nullptr) << s.dump(2);
  EXPECT_EQ((*dead)["state"], "down") << s.dump(2);
  EXPECT_FALSE((*dead)["reason"].get<std::string>().empty());
  EXPECT_EQ(s["peers_up"], 2);
  EXPECT_EQ(s["peers_down"], 1);
  ASSERT_FALSE(s["errors"].empty());
  EXPECT_EQ(s["errors"].back()["code"], "PEER_DOWN");
  EXPECT_NE(s["errors"].back()["message"].get<std::string>().find("status-peer-1"), std::string::npos);

  // --watch with --count: that many documents, one per line, then it stops by itself.
  CommandRun watched = RunStdout(std::string(WEFT_BINARY) + " status --json --watch 0.1 --count 3" + flags);
  EXPECT_EQ(watched.exit_code, 0);
  std::istringstream docs(watched.output);
  size_t n = 0;
  while (std::getline(docs, line)) {
    auto doc = nlohmann::json::parse(line, nullptr, false);
    ASSERT_FALSE(doc.is_discarded()) << line;
    EXPECT_EQ(doc["peers_down"], 1);
    ++n;
  }
  EXPECT_EQ(n, 3u) << watched.output;
}

// A tcp:// coordinator wants the cluster secret from status as from any peer; a wrong one, or
// no coordinator at all, is one line and exit status 1, within the timeout.
TEST(Cli, StatusRefusesAWrongSecretAndReportsAMissingCoordinator) {
  const std::string pool = "cli-status-tcp-" + std::to_string(getpid());
  weft::testing::Spawned meta({WEFT_BINARY, "meta", "--set", "pool_name=" + pool, "--set", "rank_size=4MiB", "--set",
                               "coordinator=tcp://127.0.0.1:0"},
                              {"WEFT_CLUSTER_SECRET=cli-status-secret"});
  const std::string listening = meta.WaitFor("listening on tcp://", std::chrono::seconds(30));
  ASSERT_NE(listening, "") << meta.output();
  const std::string address = listening.substr(listening.find("tcp://"));
  const std::string flags = " --set pool_name=" + pool + " --set coordinator=" + address;

  CommandRun wrong = RunCommand("WEFT_CLUSTER_SECRET=not-it " + std::string(WEFT_BINARY) + " status" + flags);
  EXPECT_EQ(wrong.exit_code, 1) << wrong.output;
  EXPECT_NE(wrong.output.find("UNAUTHENTICATED"), std::string::npos) << wrong.output;
  EXPECT_EQ(Count(wrong.output, "\n"), 1u) << "one line:\n" << wrong.output;

  CommandRun right = RunCommand("WEFT_CLUSTER_SECRET=cli-status-secret " + std::string(WEFT_BINARY) + " status" + flags);
  EXPECT_EQ(right.exit_code, 0) << right.output;
  EXPECT_NE(right.output.find("(no peer has joined)"), std::string::npos) << right.output;
  EXPECT_NE(right.output.find("UNAUTHENTICATED"), std::string::npos) << "the refusal is among the recent errors\n"
                                                                   << right.output;

  const auto started = std::chrono::steady_clock::now();
  CommandRun missing = RunCommand(std::string(WEFT_BINARY) + " status --timeout 2 --set pool_name=" + pool +
                                  " --set coordinator=/tmp/weft-no-such-" + pool + ".sock");
  EXPECT_EQ(missing.exit_code, 1) << missing.output;
  EXPECT_NE(missing.output.find("UNAVAILABLE"), std::string::npos) << missing.output;
  EXPECT_EQ(Count(missing.output, "\n"), 1u) << missing.output;
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10));
}

}  // namespace
