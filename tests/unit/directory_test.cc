// The directory (src/meta): one suite of behaviour run against every backend that has a shared
// store (the in-process MemoryStore, the embedded server through its HTTP client, and etcd from
// Debian's etcd-server), plus the pieces only one backend has: the embedded server's
// Mooncake-compatible /metadata endpoint and its handling of bad requests, server restarts,
// p2p fetches from a peer, the request decoder and the base64 codec.
//
// The etcd cases start a private etcd on 127.0.0.1 with free ports and a temporary data dir.
// Without the etcd binary they are skipped, except under CI=true, where they fail (CI installs
// etcd-server through scripts/install-deps.sh).
#include <gtest/gtest.h>
#include <httplib.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include "base/random.h"
#include "meta/base64.h"
#include "meta/directory.h"
#include "meta/directory_server.h"
#include "meta/etcd_directory.h"
#include "meta/memory_store.h"
#include "meta/p2p_directory.h"
#include "support/etcd_process.h"

namespace weft::meta {
namespace {

using namespace std::chrono_literals;

// Generous bounds for things that should happen "soon": they only decide when a test gives up,
// never what it asserts about speed.
constexpr auto kPatience = 30s;

std::string Fresh(const char* what) { return fmt::format("{}-{:016x}", what, FreshSeed()); }

std::string RandomBytes(size_t n) {
  std::string s(n, '\0');
  FillRandom(s.data(), n, FreshSeed());
  return s;
}

// Collects watch events; tests wait for a count.
struct EventSink {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<WatchEvent> events;

  WatchCallback Callback() {
    return [this](const WatchEvent& e) {
      std::lock_guard lk(mu);
      events.push_back(e);
      cv.notify_all();
    };
  }
  bool WaitFor(size_t n) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, kPatience, [&] { return events.size() >= n; });
  }
  bool WaitForDelete(const std::string& key) {
    std::unique_lock lk(mu);
    return cv.wait_for(lk, kPatience, [&] {
      for (const auto& e : events) {
        if (e.kind == WatchEvent::Kind::kDelete && e.key == key) return true;
      }
      return false;
    });
  }
  std::vector<WatchEvent> Snapshot() {
    std::lock_guard lk(mu);
    return events;
  }
};

using etcd_test::EtcdProcess;
using etcd_test::FindEtcd;
using etcd_test::FreePort;
using etcd_test::InCi;

enum class Backend { kLocal, kEmbedded, kEtcd };

std::string BackendName(const testing::TestParamInfo<Backend>& info) {
  switch (info.param) {
    case Backend::kLocal: return "Local";
    case Backend::kEmbedded: return "Embedded";
    case Backend::kEtcd: return "Etcd";
  }
  return "Unknown";
}

// The behaviour every shared-store backend must have.
class DirectoryTest : public testing::TestWithParam<Backend> {
 protected:
  static void SetUpTestSuite() {}
  static void TearDownTestSuite() {
    delete etcd_;
    etcd_ = nullptr;
  }

  void SetUp() override {
    DirectoryOptions options;
    options.timeout = 10s;
    switch (GetParam()) {
      case Backend::kLocal: {
        auto d = OpenDirectory("local", options);
        ASSERT_TRUE(d.ok()) << d.status().ToString();
        dir_ = std::move(d).value();
        break;
      }
      case Backend::kEmbedded: {
        auto s = DirectoryServer::Start({});
        ASSERT_TRUE(s.ok()) << s.status().ToString();
        server_ = std::move(s).value();
        auto d = OpenDirectory("embedded://" + server_->address(), options);
        ASSERT_TRUE(d.ok()) << d.status().ToString();
        dir_ = std::move(d).value();
        break;
      }
      case Backend::kEtcd: {
        if (FindEtcd().empty()) {
          if (InCi()) FAIL() << "etcd is not installed; scripts/install-deps.sh installs etcd-server";
          GTEST_SKIP() << "etcd is not installed (apt-get install etcd-server, or scripts/install-deps.sh); "
                          "skipping the etcd backend";
        }
        if (etcd_ == nullptr) {
          etcd_ = new EtcdProcess;
          Status s = etcd_->Start();
          if (!s.ok()) {
            delete etcd_;
            etcd_ = nullptr;
            FAIL() << "could not start etcd: " << s.ToString();
          }
        }
        auto d = OpenDirectory(fmt::format("etcd://127.0.0.1:{}", etcd_->port()), options);
        ASSERT_TRUE(d.ok()) << d.status().ToString();
        dir_ = std::move(d).value();
        break;
      }
    }
    // Every test works under its own prefix, so tests sharing one etcd do not see each other.
    prefix_ = Fresh("t") + "/";
  }

  void TearDown() override {
    dir_.reset();
    server_.reset();
  }

  std::string K(const std::string& k) const { return prefix_ + k; }

  static EtcdProcess* etcd_;
  std::unique_ptr<DirectoryServer> server_;
  std::unique_ptr<Directory> dir_;
  std::string prefix_;
};

EtcdProcess* DirectoryTest::etcd_ = nullptr;

TEST_P(DirectoryTest, PutGetDeleteList) {
  Directory& d = *dir_;
  EXPECT_EQ(d.Get(K("a/1")).status().code(), Code::kNotFound);

  std::string v1 = RandomBytes(1000);  // any bytes, including NUL and 0xff
  v1[0] = '\0';
  v1[1] = static_cast<char>(0xff);
  ASSERT_TRUE(d.Put(K("a/1"), v1).ok());
  ASSERT_TRUE(d.Put(K("a/2"), "two").ok());
  ASSERT_TRUE(d.Put(K("a/0"), "").ok());  // empty values are values
  ASSERT_TRUE(d.Put(K("b/1"), "other").ok());

  auto g = d.Get(K("a/1"));
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(*g, v1);
  auto e = d.Get(K("a/0"));
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(*e, "");

  ASSERT_TRUE(d.Put(K("a/2"), "TWO").ok());  // overwrite
  EXPECT_EQ(d.Get(K("a/2")).value_or("?"), "TWO");

  auto l = d.List(K("a/"));
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  KeyValues want = {{K("a/0"), ""}, {K("a/1"), v1}, {K("a/2"), "TWO"}};
  EXPECT_EQ(*l, want);

  auto all = d.List(prefix_);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 4u);

  ASSERT_TRUE(d.Delete(K("a/1")).ok());
  EXPECT_EQ(d.Get(K("a/1")).status().code(), Code::kNotFound);
  EXPECT_EQ(d.Delete(K("a/1")).code(), Code::kNotFound);  // documented: absent is NOT_FOUND
  auto l2 = d.List(K("a/"));
  ASSERT_TRUE(l2.ok());
  EXPECT_EQ(l2->size(), 2u);
  EXPECT_TRUE(d.List(K("nothing/")).value_or({{"x", "y"}}).empty());
}

TEST_P(DirectoryTest, PutIfAbsentRaceHasExactlyOneWinner) {
  constexpr int kThreads = 8;
  std::atomic<int> winners{0};
  std::atomic<int> failures{0};
  std::vector<std::string> values(kThreads);
  std::vector<bool> won(kThreads, false);
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    values[i] = fmt::format("rank-claim-{}", i);
    threads.emplace_back([&, i] {
      while (!go) std::this_thread::yield();
      auto r = dir_->PutIfAbsent(K("rank/0"), values[i]);
      if (!r.ok()) {
        ++failures;
      } else if (*r) {
        ++winners;
        won[i] = true;
      }
    });
  }
  go = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_EQ(winners.load(), 1);
  int winner = static_cast<int>(std::find(won.begin(), won.end(), true) - won.begin());
  EXPECT_EQ(dir_->Get(K("rank/0")).value_or("?"), values[winner]);
  // Existing key: false, and the value is untouched.
  auto again = dir_->PutIfAbsent(K("rank/0"), "late");
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again);
  EXPECT_EQ(dir_->Get(K("rank/0")).value_or("?"), values[winner]);
  // After a delete the key can be created again.
  ASSERT_TRUE(dir_->Delete(K("rank/0")).ok());
  EXPECT_TRUE(dir_->PutIfAbsent(K("rank/0"), "fresh").value_or(false));
}

TEST_P(DirectoryTest, LeaseExpiryRemovesKeysAndFiresDeleteEvents) {
  EventSink sink;
  auto w = dir_->Watch(prefix_, sink.Callback());
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  auto lease = dir_->Grant(1000ms);  // etcd raises this to its minimum (2 s)
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  ASSERT_TRUE(dir_->Put(K("member/1"), "alive", *lease).ok());
  ASSERT_TRUE(dir_->PutIfAbsent(K("member/2"), "alive", *lease).value_or(false));
  ASSERT_TRUE(dir_->Put(K("forever"), "stays").ok());
  ASSERT_TRUE(sink.WaitForDelete(K("member/1"))) << "no delete event after the lease expired";
  ASSERT_TRUE(sink.WaitForDelete(K("member/2")));
  EXPECT_EQ(dir_->Get(K("member/1")).status().code(), Code::kNotFound);
  EXPECT_EQ(dir_->Get(K("member/2")).status().code(), Code::kNotFound);
  EXPECT_EQ(dir_->Get(K("forever")).value_or("?"), "stays");
  EXPECT_EQ(dir_->KeepAlive(*lease).code(), Code::kNotFound);
  EXPECT_EQ(dir_->Put(K("member/3"), "late", *lease).code(), Code::kNotFound);
}

TEST_P(DirectoryTest, KeepAliveKeepsKeys) {
  auto lease = dir_->Grant(1000ms);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  ASSERT_TRUE(dir_->Put(K("member/1"), "alive", *lease).ok());
  // Renew well inside the TTL for several TTLs' worth of time (etcd's TTL is 2 s).
  auto until = Clock::now() + 4500ms;
  while (Clock::now() < until) {
    Status s = dir_->KeepAlive(*lease);
    ASSERT_TRUE(s.ok()) << s.ToString();
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_EQ(dir_->Get(K("member/1")).value_or("?"), "alive");
  ASSERT_TRUE(dir_->Revoke(*lease).ok());
}

TEST_P(DirectoryTest, RevokeDeletesKeysAndNotifies) {
  EventSink sink;
  auto w = dir_->Watch(K("m/"), sink.Callback());
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  auto lease = dir_->Grant(60s);
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE(dir_->Put(K("m/1"), "x", *lease).ok());
  ASSERT_TRUE(dir_->Put(K("m/2"), "y", *lease).ok());
  ASSERT_TRUE(dir_->Put(K("m/3"), "z").ok());
  ASSERT_TRUE(dir_->Revoke(*lease).ok());
  EXPECT_EQ(dir_->Get(K("m/1")).status().code(), Code::kNotFound);
  EXPECT_EQ(dir_->Get(K("m/2")).status().code(), Code::kNotFound);
  EXPECT_EQ(dir_->Get(K("m/3")).value_or("?"), "z");
  EXPECT_TRUE(sink.WaitForDelete(K("m/1")));
  EXPECT_TRUE(sink.WaitForDelete(K("m/2")));
  EXPECT_EQ(dir_->Revoke(*lease).code(), Code::kNotFound);
  EXPECT_EQ(dir_->KeepAlive(*lease).code(), Code::kNotFound);
}

TEST_P(DirectoryTest, WatchDeliversEventsInOrder) {
  EventSink sink;
  ASSERT_TRUE(dir_->Put(K("w/before"), "old").ok());  // before the watch: not delivered
  auto w = dir_->Watch(K("w/"), sink.Callback());
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  std::vector<std::pair<WatchEvent::Kind, std::string>> done;  // (kind, key) in the order done
  std::vector<std::string> values;
  for (int i = 0; i < 40; ++i) {
    std::string key = K(i % 2 ? "w/odd" : "w/even");
    std::string value = std::to_string(i);
    ASSERT_TRUE(dir_->Put(key, value).ok());
    done.emplace_back(WatchEvent::Kind::kPut, key);
    values.push_back(value);
    ASSERT_TRUE(dir_->Put(K("other/x"), value).ok());  // outside the prefix
  }
  ASSERT_TRUE(dir_->Delete(K("w/odd")).ok());
  done.emplace_back(WatchEvent::Kind::kDelete, K("w/odd"));
  values.push_back("");
  ASSERT_TRUE(sink.WaitFor(done.size()));
  auto got = sink.Snapshot();
  ASSERT_EQ(got.size(), done.size());
  for (size_t i = 0; i < done.size(); ++i) {
    EXPECT_EQ(got[i].kind, done[i].first) << i;
    EXPECT_EQ(got[i].key, done[i].second) << i;
    EXPECT_EQ(got[i].value, values[i]) << i;
  }

  // After Cancel returns the callback never runs again.
  w->Cancel();
  ASSERT_TRUE(dir_->Put(K("w/after"), "x").ok());
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(sink.Snapshot().size(), done.size());
}

TEST_P(DirectoryTest, WatchCanCancelItselfFromItsCallback) {
  std::atomic<int> calls{0};
  WatchHandle handle;
  std::mutex mu;
  std::condition_variable cv;
  auto w = dir_->Watch(K("c/"), [&](const WatchEvent&) {
    std::unique_lock lk(mu);
    ++calls;
    handle.Cancel();  // allowed from inside the callback
    cv.notify_all();
  });
  ASSERT_TRUE(w.ok());
  {
    std::lock_guard lk(mu);
    handle = std::move(w).value();
  }
  ASSERT_TRUE(dir_->Put(K("c/1"), "x").ok());
  std::unique_lock lk(mu);
  ASSERT_TRUE(cv.wait_for(lk, kPatience, [&] { return calls.load() >= 1; }));
  lk.unlock();
  ASSERT_TRUE(dir_->Put(K("c/2"), "x").ok());
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(calls.load(), 1);
}

TEST_P(DirectoryTest, UnknownLeaseIsNotFound) {
  Status put = dir_->Put(K("k"), "v", 12345);
  EXPECT_EQ(put.code(), Code::kNotFound) << put.ToString();
  EXPECT_EQ(dir_->KeepAlive(12345).code(), Code::kNotFound);
  EXPECT_EQ(dir_->Revoke(12345).code(), Code::kNotFound);
  EXPECT_EQ(dir_->Grant(0ms).status().code(), Code::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Backends, DirectoryTest,
                         testing::Values(Backend::kLocal, Backend::kEmbedded, Backend::kEtcd), BackendName);

// --- the embedded server ---

TEST(DirectoryServerTest, ClientFailsWhileServerIsDownAndRecoversAfterRestart) {
  auto s = DirectoryServer::Start({});
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  auto server = std::move(s).value();
  uint16_t port = server->port();
  DirectoryOptions options;
  options.timeout = 2s;
  auto d = OpenDirectory(fmt::format("embedded://127.0.0.1:{}", port), options);
  ASSERT_TRUE(d.ok());
  auto& dir = *d.value();
  ASSERT_TRUE(dir.Put("k", "v").ok());
  EventSink sink;
  auto w = dir.Watch("w/", sink.Callback());
  ASSERT_TRUE(w.ok()) << w.status().ToString();

  server->Stop();
  server.reset();
  auto g = dir.Get("k");
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), Code::kUnavailable) << g.status().ToString();
  EXPECT_NE(g.status().message().find(fmt::format("127.0.0.1:{}", port)), std::string::npos)
      << g.status().ToString();
  EXPECT_EQ(dir.Put("k", "v2").code(), Code::kUnavailable);
  EXPECT_EQ(dir.Watch("x/", [](const WatchEvent&) {}).status().code(), Code::kUnavailable);

  DirectoryServerOptions again;
  again.bind = fmt::format("127.0.0.1:{}", port);
  auto s2 = DirectoryServer::Start(again);
  ASSERT_TRUE(s2.ok()) << s2.status().ToString();
  // The restarted server is empty (the embedded store is in memory), but it serves.
  EXPECT_EQ(dir.Get("k").status().code(), Code::kNotFound);
  ASSERT_TRUE(dir.Put("k", "v3").ok());
  EXPECT_EQ(dir.Get("k").value_or("?"), "v3");
  // The watch from before the restart resumes on the new server.
  ASSERT_TRUE(dir.Put("w/1", "after-restart").ok());
  ASSERT_TRUE(sink.WaitFor(1));
  EXPECT_EQ(sink.Snapshot().back().key, "w/1");
}

TEST(DirectoryServerTest, DeadlineBoundsACallToAServerThatNeverAnswers) {
  // A socket that listens but never accepts: connects succeed (backlog), answers never come.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(listen(fd, 16), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  uint16_t port = ntohs(a.sin_port);
  for (const char* scheme : {"embedded", "etcd"}) {
    auto d = OpenDirectory(fmt::format("{}://127.0.0.1:{}", scheme, port));
    ASSERT_TRUE(d.ok());
    auto g = d.value()->Get("k", Deadline::After(300ms));
    ASSERT_FALSE(g.ok());
    EXPECT_TRUE(g.status().code() == Code::kTimeout || g.status().code() == Code::kUnavailable)
        << g.status().ToString();
    EXPECT_NE(g.status().message().find(fmt::format("127.0.0.1:{}", port)), std::string::npos);
  }
  close(fd);
}

TEST(DirectoryServerTest, MooncakeMetadataProtocol) {
  auto s = DirectoryServer::Start({});
  ASSERT_TRUE(s.ok());
  auto& server = *s.value();
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(10s);
  std::string key = "mooncake/ram/" + Fresh("seg");
  std::string value = R"({"name":"seg","buffers":[]})";

  auto r = c.Get("/metadata?key=" + key);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  r = c.Put("/metadata?key=" + key, value, "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  r = c.Get("/metadata?key=" + key);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, value);
  // The same store as the JSON API.
  auto d = OpenDirectory("embedded://" + server.address());
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d.value()->Get(key).value_or("?"), value);
  // Keys with characters that need escaping.
  std::string odd = "a b/c?d=e&f";
  ASSERT_TRUE(d.value()->Put(odd, "odd").ok());
  r = c.Get("/metadata?key=a%20b%2Fc%3Fd%3De%26f");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "odd");

  r = c.Delete("/metadata?key=" + key);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  r = c.Delete("/metadata?key=" + key);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  r = c.Get("/metadata?key=" + key);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  r = c.Get("/metadata");  // no key
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_FALSE(r->body.empty());
}

TEST(DirectoryServerTest, MalformedRequestsGet4xxAndTheServerKeepsServing) {
  auto s = DirectoryServer::Start({});
  ASSERT_TRUE(s.ok());
  auto& server = *s.value();
  httplib::Client c("127.0.0.1", server.port());
  c.set_read_timeout(30s);
  c.set_write_timeout(30s);
  struct Case {
    std::string path, body;
    int status;
  };
  std::vector<Case> cases = {
      {"/v1/kv/get", "not json", 400},
      {"/v1/kv/get", "[1,2]", 400},
      {"/v1/kv/get", "{}", 400},
      {"/v1/kv/get", R"({"key": 5})", 400},
      {"/v1/kv/get", R"({"key": "!!!"})", 400},  // not base64
      {"/v1/kv/get", R"({"key": "YQ==", "extra": 1})", 400},
      {"/v1/kv/put", R"({"key": "YQ==", "value": "YQ==", "lease": -1})", 400},
      {"/v1/lease/grant", R"({"ttl_ms": 0})", 400},
      {"/v1/watch", R"({"prefix": "", "wait_ms": 99999999})", 400},
      {"/v1/kv/get", std::string("{\"key\": \"\xff\xfe\"}"), 400},  // invalid UTF-8
      {"/v1/nope", "{}", 404},
  };
  for (const auto& tc : cases) {
    auto r = c.Post(tc.path, tc.body, "application/json");
    ASSERT_TRUE(r) << tc.path << " " << tc.body;
    EXPECT_EQ(r->status, tc.status) << tc.path << " " << tc.body;
    EXPECT_FALSE(r->body.empty()) << "no reason given for " << tc.body;
  }
  auto r = c.Get("/v1/kv/get");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  // Over the 16 MiB limit: refused before it is read (413 is HTTP's code for exactly this).
  r = c.Post("/v1/kv/put", std::string(kMaxDirectoryBody + 1, 'x'), "application/json");
  if (r) {  // the server may also just close the connection
    EXPECT_EQ(r->status, 413);
  }
  r = c.Put("/metadata?key=big", std::string(kMaxDirectoryBody + 1, 'x'), "application/json");
  if (r) {
    EXPECT_EQ(r->status, 413);
  }
  // Raw garbage instead of HTTP.
  {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(server.port());
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    const char junk[] = "\x01\x02GARBAGE\r\n\r\n";
    ASSERT_GT(write(fd, junk, sizeof junk - 1), 0);
    close(fd);
  }
  // Still serving.
  auto d = OpenDirectory("embedded://" + server.address());
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(d.value()->Put("still", "here").ok());
  EXPECT_EQ(d.value()->Get("still").value_or("?"), "here");
}

TEST(DirectoryServerTest, BindFailureIsUnavailable) {
  auto a = DirectoryServer::Start({});
  ASSERT_TRUE(a.ok());
  DirectoryServerOptions o;
  o.bind = a.value()->address();
  auto b = DirectoryServer::Start(o);
  EXPECT_EQ(b.status().code(), Code::kUnavailable);
  o.bind = "no-port";
  EXPECT_EQ(DirectoryServer::Start(o).status().code(), Code::kInvalidArgument);
}

// --- the request decoder (also fuzzed: fuzz/directory_request_fuzz.cc) ---

TEST(DirectoryRequestTest, EveryOpRoundTrips) {
  using Op = DirectoryRequest::Op;
  std::vector<DirectoryRequest> all;
  DirectoryRequest r;
  r.op = Op::kGet;
  r.key = RandomBytes(33);
  all.push_back(r);
  r = {};
  r.op = Op::kPut;
  r.key = "k";
  r.value = RandomBytes(100);
  r.lease = 77;
  all.push_back(r);
  r.op = Op::kPutIfAbsent;
  all.push_back(r);
  r = {};
  r.op = Op::kDelete;
  r.key = "";
  all.push_back(r);
  r = {};
  r.op = Op::kList;
  r.prefix = "p/";
  all.push_back(r);
  r = {};
  r.op = Op::kGrant;
  r.ttl_ms = 1500;
  all.push_back(r);
  r = {};
  r.op = Op::kKeepAlive;
  r.lease = std::numeric_limits<int64_t>::max();
  all.push_back(r);
  r.op = Op::kRevoke;
  all.push_back(r);
  r = {};
  r.op = Op::kWatch;
  r.prefix = "w";
  r.since = 12;
  r.wait_ms = kMaxWatchWaitMs;
  all.push_back(r);
  for (const auto& req : all) {
    auto back = DecodeDirectoryRequest("POST", DirectoryRequestPath(req.op), EncodeDirectoryRequest(req));
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(*back, req) << DirectoryRequestPath(req.op);
  }
}

TEST(DirectoryRequestTest, RejectsWhatIsNotTheApi) {
  EXPECT_EQ(DecodeDirectoryRequest("POST", "/v1/kv/nope", "{}").status().code(), Code::kNotFound);
  EXPECT_EQ(DecodeDirectoryRequest("GET", "/v1/kv/get", R"({"key":"YQ=="})").status().code(),
            Code::kInvalidArgument);
  for (const char* body : {"", "{", "null", "\"s\"", R"({"key":"YQ="})", R"({"key":null})",
                           R"({"key":"YQ==","key2":"YQ=="})"}) {
    EXPECT_EQ(DecodeDirectoryRequest("POST", "/v1/kv/get", body).status().code(), Code::kProtocol) << body;
  }
  EXPECT_EQ(DecodeDirectoryRequest("POST", "/v1/lease/keepalive", R"({"lease":0})").status().code(),
            Code::kProtocol);
  EXPECT_EQ(DecodeDirectoryRequest("POST", "/v1/lease/keepalive", R"({"lease":18446744073709551615})")
                .status()
                .code(),
            Code::kProtocol);
  EXPECT_EQ(DecodeDirectoryRequest("POST", "/v1/lease/grant", R"({"ttl_ms":1.5})").status().code(),
            Code::kProtocol);
  auto w = DecodeDirectoryRequest("POST", "/v1/watch", R"({"prefix":""})");
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->since, -1);
  EXPECT_EQ(w->wait_ms, 0);
}

// --- base64 ---

TEST(Base64Test, Rfc4648Vectors) {
  std::vector<std::pair<std::string, std::string>> v = {{"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},
                                                        {"foo", "Zm9v"},  {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
                                                        {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, coded] : v) {
    EXPECT_EQ(Base64Encode(plain), coded);
    auto back = Base64Decode(coded);
    ASSERT_TRUE(back.ok()) << coded;
    EXPECT_EQ(*back, plain);
  }
  EXPECT_EQ(Base64Encode(std::string("\xff\xfe\x00", 3)), "//4A");
}

TEST(Base64Test, RandomRoundTripsAndRejections) {
  for (size_t n = 0; n < 200; ++n) {
    std::string s = RandomBytes(n);
    auto back = Base64Decode(Base64Encode(s));
    ASSERT_TRUE(back.ok());
    ASSERT_EQ(*back, s);
  }
  for (const char* bad : {"Zg", "Zg=", "Z===", "Zg==Zg==", "Zh==", "Zm9=", "Zm 9", "Zm9v\n", "====", "*m9v"}) {
    EXPECT_EQ(Base64Decode(bad).status().code(), Code::kProtocol) << bad;
  }
}

// --- etcd helpers ---

TEST(EtcdDirectoryTest, PrefixRangeEnd) {
  EXPECT_EQ(PrefixRangeEnd("abc"), "abd");
  EXPECT_EQ(PrefixRangeEnd(std::string("a\xff", 2)), "b");
  EXPECT_EQ(PrefixRangeEnd(std::string("\xff\xff", 2)), std::string(1, '\0'));
  EXPECT_EQ(PrefixRangeEnd(""), std::string(1, '\0'));
}

// --- URLs ---

TEST(OpenDirectoryTest, UrlForms) {
  EXPECT_TRUE(OpenDirectory("local").ok());
  EXPECT_TRUE(OpenDirectory("embedded://").ok());
  EXPECT_TRUE(OpenDirectory("etcd://127.0.0.1:2379,127.0.0.1:22379").ok());
  // ';' separates endpoints too, as Mooncake's HA masters write them; both read the same.
  for (const char* list : {"etcd://127.0.0.1:2379;127.0.0.1:22379", "etcd://127.0.0.1:2379;127.0.0.1:22379,h:3"}) {
    auto d = OpenDirectory(list);
    ASSERT_TRUE(d.ok()) << list << ": " << d.status().ToString();
    EXPECT_EQ(d.value()->Describe().substr(0, 37), "etcd://127.0.0.1:2379,127.0.0.1:22379") << list;
  }
  for (const char* bad : {"", "redis://x:1", "embedded://nohost", "embedded://h:99999", "etcd://h:0", "etcd://",
                          "embedded://h:1/x", "etcd://a:1,", "etcd://a:1;", "etcd://;a:1"}) {
    EXPECT_EQ(OpenDirectory(bad).status().code(), Code::kInvalidArgument) << bad;
  }
  auto hp = ParseHostPort("[::1]:80");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->first, "::1");
  EXPECT_EQ(hp->second, 80);
}

TEST(OpenDirectoryTest, UnreachableServerIsUnavailableWithTheAddress) {
  uint16_t port = FreePort();  // nothing listens there
  for (const char* scheme : {"embedded", "etcd"}) {
    DirectoryOptions o;
    o.timeout = 2s;
    auto d = OpenDirectory(fmt::format("{}://127.0.0.1:{}", scheme, port), o);
    ASSERT_TRUE(d.ok());
    Status s = d.value()->Put("k", "v");
    EXPECT_EQ(s.code(), Code::kUnavailable) << s.ToString();
    EXPECT_NE(s.message().find(fmt::format("127.0.0.1:{}", port)), std::string::npos) << s.ToString();
  }
}

// --- p2p ---

TEST(P2PDirectoryTest, GetFetchesFromTheOwningPeer) {
  DirectoryOptions o;
  o.p2p_cache_ttl = 0ms;  // always fetch, so the test sees updates and failures at once
  auto a = OpenDirectory("p2p://127.0.0.1:0", o);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  auto b = OpenDirectory("p2p://127.0.0.1:0", o);
  ASSERT_TRUE(b.ok());
  auto* pa = dynamic_cast<P2PDirectory*>(a.value().get());
  ASSERT_NE(pa, nullptr);
  std::string a_name = pa->PeerName();

  std::string desc = RandomBytes(300);
  ASSERT_TRUE(a.value()->Put("segments/gpu0", desc).ok());
  // Locally by plain key or by the own-name form.
  EXPECT_EQ(a.value()->Get("segments/gpu0").value_or("?"), desc);
  EXPECT_EQ(a.value()->Get(a_name + "/segments/gpu0").value_or("?"), desc);
  // From the other peer.
  auto got = b.value()->Get(a_name + "/segments/gpu0");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, desc);
  EXPECT_EQ(b.value()->Get(a_name + "/segments/none").status().code(), Code::kNotFound);
  ASSERT_TRUE(a.value()->Put("segments/gpu0", "v2").ok());
  EXPECT_EQ(b.value()->Get(a_name + "/segments/gpu0").value_or("?"), "v2");
  // Only the owner writes its keys; no shared directory features.
  EXPECT_EQ(b.value()->Put(a_name + "/segments/gpu0", "x").code(), Code::kNotSupported);
  EXPECT_EQ(b.value()->List("").status().code(), Code::kNotSupported);
  EXPECT_EQ(b.value()->Grant(1s).status().code(), Code::kNotSupported);
  EXPECT_EQ(b.value()->Watch("", [](const WatchEvent&) {}).status().code(), Code::kNotSupported);
  EXPECT_NE(b.value()->List("").status().message().find("etcd"), std::string::npos);
  // Mooncake's protocol works against a p2p peer's endpoint too.
  httplib::Client c("127.0.0.1", ParseHostPort(a_name)->second);
  auto r = c.Get("/metadata?key=segments%2Fgpu0");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "v2");
  // The owner goes away: a fetch fails UNAVAILABLE naming it.
  a.value().reset();
  auto gone = b.value()->Get(a_name + "/segments/gpu0", Deadline::After(2s));
  EXPECT_EQ(gone.status().code(), Code::kUnavailable) << gone.status().ToString();
  EXPECT_NE(gone.status().message().find(a_name), std::string::npos);
}

TEST(P2PDirectoryTest, CachesUntilForgotten) {
  auto a = OpenDirectory("p2p://127.0.0.1:0");
  auto b = OpenDirectory("p2p://127.0.0.1:0");
  ASSERT_TRUE(a.ok() && b.ok());
  auto* pb = dynamic_cast<P2PDirectory*>(b.value().get());
  std::string a_name = dynamic_cast<P2PDirectory*>(a.value().get())->PeerName();
  ASSERT_TRUE(a.value()->Put("k", "1").ok());
  EXPECT_EQ(b.value()->Get(a_name + "/k").value_or("?"), "1");
  ASSERT_TRUE(a.value()->Put("k", "2").ok());
  EXPECT_EQ(b.value()->Get(a_name + "/k").value_or("?"), "1");  // cached (30 s by default)
  pb->Forget(a_name);
  EXPECT_EQ(b.value()->Get(a_name + "/k").value_or("?"), "2");
}

}  // namespace
}  // namespace weft::meta
