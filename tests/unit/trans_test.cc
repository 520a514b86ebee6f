// The transfer engine (api/trans) on loopback: engines in this process and in a forked child,
// p2p and directory modes (weft's embedded server, Mooncake's HTTP metadata protocol), batches,
// notifications, and every kind of bad input. Fresh random data, destinations poisoned, every
// byte compared.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>
#include <vector>

#include <weft/transfer_engine.h>

#include "api/trans/segment_descriptor.h"
#include "api/trans/transfer_engine_internal.h"
#include "base/random.h"
#include "meta/directory.h"
#include "meta/directory_server.h"
#include "net/tcp_socket.h"
#include "wire/codec.h"

namespace weft::trans {
namespace {

// The tcp transport's blobs (transport/tcp/tcp_regions.cc, format version 1), for descriptors
// of peers that are not transfer engines.
std::string TcpEndpointBlob(const std::string& host, uint16_t port) {
  wire::Writer w;
  w.U8(1);
  w.String(host);
  w.U16(port);
  return std::string(w.buffer().begin(), w.buffer().end());
}

std::string TcpRegionBlob(uint32_t segment, uint64_t key) {
  wire::Writer w;
  w.U8(1);
  w.U32(segment);
  w.U64(key);
  return std::string(w.buffer().begin(), w.buffer().end());
}

constexpr char kSecret[] = "trans-test-secret-51c2";

TransferEngineOptions Opts(std::string metadata = "P2PHANDSHAKE", std::string name = "127.0.0.1") {
  TransferEngineOptions o;
  o.local_name = std::move(name);
  o.metadata = std::move(metadata);
  o.bind_host = "127.0.0.1";
  o.advertise_host = "127.0.0.1";
  o.auth.cluster_secret = kSecret;
  o.transfer_timeout = std::chrono::milliseconds(20000);
  return o;
}

std::unique_ptr<TransferEngine> Make(const TransferEngineOptions& o) {
  auto te = TransferEngine::Create(o);
  EXPECT_TRUE(te.ok()) << te.status().ToString();
  return te.ok() ? std::move(te).value() : nullptr;
}

struct Region {
  explicit Region(size_t n, uint8_t poison = 0) : bytes(n, poison) {}
  uint8_t* data() { return bytes.data(); }
  uint64_t addr() { return reinterpret_cast<uint64_t>(bytes.data()); }
  std::vector<uint8_t> bytes;
};

bool CheckRandom(const void* p, size_t n, uint64_t seed) { return !FirstMismatch(p, n, seed).has_value(); }

void ExpectAllOk(const std::vector<Status>& results) {
  for (size_t i = 0; i < results.size(); ++i) EXPECT_TRUE(results[i].ok()) << "request " << i << ": " << results[i].ToString();
}

// Two engines, A and B, each with a registered region; A opens B.
class TransTest : public ::testing::TestWithParam<std::string> {
 protected:
  static constexpr size_t kSize = 8u << 20;

  void Start(const std::string& metadata_a, const std::string& metadata_b, const std::string& name_a,
             const std::string& name_b) {
    a_ = Make(Opts(metadata_a, name_a));
    b_ = Make(Opts(metadata_b, name_b));
    ASSERT_TRUE(a_ && b_);
    ASSERT_TRUE(a_->RegisterMemory(mem_a_.data(), kSize, "cpu:0").ok());
    ASSERT_TRUE(b_->RegisterMemory(mem_b_.data(), kSize, "cpu:0").ok());
    auto h = a_->OpenSegment(b_->name());
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    hb_ = *h;
  }

  void SetUp() override {
    std::string mode = GetParam();
    if (mode == "p2p") {
      Start("P2PHANDSHAKE", "P2PHANDSHAKE", "127.0.0.1", "127.0.0.1");
      return;
    }
    meta::DirectoryServerOptions so;
    auto server = meta::DirectoryServer::Start(so);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
    std::string url = mode == "embedded" ? "embedded://" + server_->address()
                                          : "http://" + server_->address() + "/metadata";
    Start(url, url, "engine-a", "engine-b");
  }

  // Writes `len` fresh random bytes at A+off_a to B+off_b, reads them back into poisoned A
  // memory and compares every byte (also on B's side).
  void RoundTrip(uint64_t off_a, uint64_t off_b, uint64_t len) {
    uint64_t seed = FreshSeed();
    FillRandom(mem_a_.data() + off_a, len, seed);
    std::memset(mem_b_.data() + off_b, 0xEE, len);
    auto w = a_->Transfer({{{Opcode::kWrite, mem_a_.data() + off_a, hb_, mem_b_.addr() + off_b, len}}});
    ExpectAllOk(w);
    EXPECT_TRUE(CheckRandom(mem_b_.data() + off_b, len, seed)) << "WRITE of " << len << " bytes";
    std::memset(mem_a_.data() + off_a, 0x5A, len);
    auto r = a_->Transfer({{{Opcode::kRead, mem_a_.data() + off_a, hb_, mem_b_.addr() + off_b, len}}});
    ExpectAllOk(r);
    EXPECT_TRUE(CheckRandom(mem_a_.data() + off_a, len, seed)) << "READ of " << len << " bytes";
  }

  std::unique_ptr<meta::DirectoryServer> server_;
  Region mem_a_{kSize}, mem_b_{kSize};
  std::unique_ptr<TransferEngine> a_, b_;
  SegmentHandle hb_ = 0;
};

TEST_P(TransTest, NamesFollowTheMode) {
  if (GetParam() == "p2p") {
    EXPECT_EQ(a_->name(), "127.0.0.1:" + std::to_string(a_->rpc_port()));
    EXPECT_NE(a_->rpc_port(), 0);
  } else {
    EXPECT_EQ(a_->name(), "engine-a");
  }
  EXPECT_EQ(a_->protocol(), "tcp");
  auto bufs = a_->RemoteBuffers(hb_);
  ASSERT_TRUE(bufs.ok());
  ASSERT_EQ(bufs->size(), 1u);
  EXPECT_EQ((*bufs)[0].addr, mem_b_.addr());
  EXPECT_EQ((*bufs)[0].length, kSize);
  EXPECT_EQ((*bufs)[0].location, "cpu:0");
  // The same name gives the same handle.
  auto again = a_->OpenSegment(b_->name());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, hb_);
}

TEST_P(TransTest, WriteThenReadBackEverySize) {
  for (uint64_t len : {1ull, 7ull, 4096ull, 65537ull, (3ull << 20) + 13})
    RoundTrip(len % 4093, (len * 31) % 8191, len);
}

TEST_P(TransTest, BatchOfManyPagesSyncAndAsync) {
  constexpr size_t kPages = 300, kPage = 16384;
  uint64_t seed = FreshSeed();
  FillRandom(mem_a_.data(), kPages * kPage, seed);
  std::memset(mem_b_.data(), 0, kPages * kPage);
  // Scattered destinations: page i goes to slot (i * 7) % kPages.
  std::vector<TransferRequest> reqs;
  for (size_t i = 0; i < kPages; ++i)
    reqs.push_back({Opcode::kWrite, mem_a_.data() + i * kPage, hb_, mem_b_.addr() + ((i * 7) % kPages) * kPage, kPage});
  auto id = a_->Submit(reqs);
  ASSERT_TRUE(id.ok()) << id.status().ToString();
  EXPECT_NE(*id, 0u);
  auto st = a_->Wait(*id, Deadline::After(Millis(30000)));
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_TRUE(st->done);
  ASSERT_EQ(st->states.size(), kPages);
  for (size_t i = 0; i < kPages; ++i) {
    EXPECT_EQ(st->states[i], TransferState::kCompleted) << i;
    EXPECT_EQ(std::memcmp(mem_a_.data() + i * kPage, mem_b_.data() + ((i * 7) % kPages) * kPage, kPage), 0) << i;
  }
  auto polled = a_->Poll(*id);
  ASSERT_TRUE(polled.ok());
  EXPECT_TRUE(polled->done);
  EXPECT_TRUE(a_->FreeBatch(*id).ok());
  EXPECT_EQ(a_->FreeBatch(*id).code(), Code::kNotFound);
  EXPECT_EQ(a_->Poll(*id).status().code(), Code::kNotFound);

  // And back by reads into poisoned memory.
  std::memset(mem_a_.data(), 0x77, kPages * kPage);
  for (auto& r : reqs) r.op = Opcode::kRead;
  ExpectAllOk(a_->Transfer(reqs));
  EXPECT_TRUE(CheckRandom(mem_a_.data(), kPages * kPage, seed));
}

TEST_P(TransTest, NotificationArrivesAfterTheData) {
  constexpr size_t kLen = 1u << 20;
  uint64_t seed = FreshSeed();
  FillRandom(mem_a_.data(), kLen, seed);
  std::memset(mem_b_.data(), 0, kLen);
  Notification n{"engine-a-tag", "kv layer 3 ready " + std::to_string(seed)};
  ExpectAllOk(a_->Transfer({{{Opcode::kWrite, mem_a_.data(), hb_, mem_b_.addr(), kLen}}}, n));
  // The notification is queued before the sender's call returns, and after the data landed.
  auto got = b_->TakeNotifications();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].name, n.name);
  EXPECT_EQ(got[0].message, n.message);
  EXPECT_TRUE(CheckRandom(mem_b_.data(), kLen, seed));
  EXPECT_TRUE(b_->TakeNotifications().empty());

  // A notification alone, and a large one.
  Notification big{"x", std::string(kMaxNotificationBytes - 1, 'q')};
  EXPECT_TRUE(a_->Notify(hb_, big).ok());
  got = b_->TakeNotifications();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].message, big.message);
  Notification too_big{"x", std::string(kMaxNotificationBytes + 1, 'q')};
  EXPECT_EQ(a_->Notify(hb_, too_big).code(), Code::kInvalidArgument);
  EXPECT_EQ(a_->Submit({{{Opcode::kWrite, mem_a_.data(), hb_, mem_b_.addr(), 8}}}, too_big).status().code(),
            Code::kInvalidArgument);
}

// The queue of untaken notifications is bounded: one more is refused with BUSY at its sender
// (nothing dropped silently), and taking them makes room again.
TEST(TransNotifications, AFullQueueRefusesTheSenderWithBusyUntilTaken) {
  TransferEngineOptions ob = Opts();
  ob.max_queued_notifications = 3;
  auto a = Make(Opts());
  auto b = Make(ob);
  ASSERT_TRUE(a && b);
  auto hb = a->OpenSegment(b->name());
  ASSERT_TRUE(hb.ok()) << hb.status().ToString();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(a->Notify(*hb, {"n", std::to_string(i)}).ok()) << i;
  Status full = a->Notify(*hb, {"n", "3"});
  EXPECT_EQ(full.code(), Code::kBusy) << full.ToString();
  auto got = b->TakeNotifications();
  ASSERT_EQ(got.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(got[i].message, std::to_string(i));
  EXPECT_TRUE(a->Notify(*hb, {"n", "4"}).ok());
  got = b->TakeNotifications();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].message, "4");
}

TEST_P(TransTest, NotificationIsWithheldWhenTheDataFails) {
  Notification n{"a", "must not arrive"};
  auto res = a_->Transfer({{{Opcode::kWrite, mem_a_.data(), hb_, mem_b_.addr() + kSize - 4, 8}}}, n);
  ASSERT_EQ(res.size(), 1u);
  EXPECT_EQ(res[0].code(), Code::kInvalidAddress) << res[0].ToString();
  EXPECT_TRUE(b_->TakeNotifications().empty());
}

TEST_P(TransTest, BadInputGetsSpecificErrors) {
  uint8_t* a = mem_a_.data();
  uint64_t b = mem_b_.addr();
  // Malformed batches are refused whole, before anything moves.
  EXPECT_EQ(a_->Submit({}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(a_->Submit({{{Opcode::kWrite, a, hb_, b, 0}}}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(a_->Submit({{{Opcode::kWrite, nullptr, hb_, b, 8}}}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(a_->Submit({{{Opcode::kWrite, a, 9999, b, 8}}}).status().code(), Code::kNotFound);
  Region unregistered(64);
  EXPECT_EQ(a_->Submit({{{Opcode::kWrite, unregistered.data(), hb_, b, 8}}}).status().code(), Code::kNotRegistered);
  // A local range running past its buffer is not registered either.
  EXPECT_EQ(a_->Submit({{{Opcode::kRead, a + kSize - 4, hb_, b, 8}}}).status().code(), Code::kNotRegistered);
  // Remote ranges outside B's buffers fail per request; the good one in the batch still moves.
  uint64_t seed = FreshSeed();
  FillRandom(a, 64, seed);
  std::memset(mem_b_.data(), 0, 64);
  auto res = a_->Transfer({{{Opcode::kWrite, a, hb_, b, 64},
                            {Opcode::kWrite, a, hb_, b - 64, 64},
                            {Opcode::kRead, a + 128, hb_, b + kSize, 1}}});
  ASSERT_EQ(res.size(), 3u);
  EXPECT_TRUE(res[0].ok()) << res[0].ToString();
  EXPECT_EQ(res[1].code(), Code::kInvalidAddress);
  EXPECT_EQ(res[2].code(), Code::kInvalidAddress);
  EXPECT_TRUE(CheckRandom(mem_b_.data(), 64, seed));
  // Registration errors.
  EXPECT_EQ(a_->RegisterMemory(nullptr, 8).code(), Code::kInvalidArgument);
  EXPECT_EQ(a_->RegisterMemory(a, 0).code(), Code::kInvalidArgument);
  EXPECT_EQ(a_->RegisterMemory(a + 100, 8).code(), Code::kAlreadyExists);
  EXPECT_EQ(a_->RegisterMemory(a - 4, 8).code(), Code::kAlreadyExists);
  EXPECT_EQ(a_->RegisterMemory(unregistered.data(), 64, "cuda:0").code(), Code::kNotSupported);
  EXPECT_EQ(a_->UnregisterMemory(unregistered.data()).code(), Code::kNotFound);
  EXPECT_EQ(a_->UnregisterMemory(a + 1).code(), Code::kNotFound);
  // Unknown peers and batches.
  std::string unknown = GetParam() == "p2p" ? "127.0.0.1:1" : "nobody";
  auto h = a_->OpenSegment(unknown);
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), GetParam() == "p2p" ? Code::kUnavailable : Code::kNotFound) << h.status().ToString();
  EXPECT_EQ(a_->OpenSegment("").status().code(), Code::kInvalidArgument);
  EXPECT_EQ(a_->Poll(123456).status().code(), Code::kNotFound);
  EXPECT_EQ(a_->Wait(123456).status().code(), Code::kNotFound);
  EXPECT_EQ(a_->FreeBatch(123456).code(), Code::kNotFound);
  EXPECT_EQ(a_->CloseSegment(123456).code(), Code::kNotFound);
  // The engine still works after all that.
  RoundTrip(0, 4096, 5000);
}

TEST_P(TransTest, BuffersRegisteredLaterAreFoundAndUnregisteredOnesRefused) {
  Region later(1 << 16);
  ASSERT_TRUE(b_->RegisterMemory(later.data(), later.bytes.size()).ok());
  uint64_t seed = FreshSeed();
  FillRandom(mem_a_.data(), 1000, seed);
  // A's cached descriptor of B predates the buffer: the engine looks again.
  ExpectAllOk(a_->Transfer({{{Opcode::kWrite, mem_a_.data(), hb_, later.addr() + 10, 1000}}}));
  EXPECT_TRUE(CheckRandom(later.data() + 10, 1000, seed));
  ASSERT_TRUE(b_->UnregisterMemory(later.data()).ok());
  auto res = a_->Transfer({{{Opcode::kRead, mem_a_.data(), hb_, later.addr(), 8}}});
  EXPECT_FALSE(res[0].ok());
  EXPECT_TRUE(res[0].code() == Code::kNotFound || res[0].code() == Code::kInvalidAddress) << res[0].ToString();
  auto bufs = a_->RemoteBuffers(hb_, /*refresh=*/true);
  ASSERT_TRUE(bufs.ok());
  EXPECT_EQ(bufs->size(), 1u);
}

TEST_P(TransTest, DeadPeerFailsWithoutHanging) {
  b_.reset();
  auto res = a_->Transfer({{{Opcode::kWrite, mem_a_.data(), hb_, mem_b_.addr(), 4096}}});
  ASSERT_EQ(res.size(), 1u);
  EXPECT_FALSE(res[0].ok());
  EXPECT_TRUE(res[0].code() == Code::kPeerDown || res[0].code() == Code::kUnavailable ||
              res[0].code() == Code::kNotFound)
      << res[0].ToString();
  EXPECT_FALSE(a_->Probe(GetParam() == "p2p" ? "127.0.0.1:1" : "engine-b").ok());
}

TEST_P(TransTest, ProbeAnswersForALivePeer) {
  EXPECT_TRUE(a_->Probe(b_->name()).ok());
  EXPECT_TRUE(b_->Probe(a_->name()).ok());
  EXPECT_TRUE(b_->TakeNotifications().empty());  // a probe is not a notification
}

TEST_P(TransTest, ConcurrentCallersFromManyThreads) {
  constexpr int kThreads = 6;
  constexpr uint64_t kChunk = 256 << 10;
  std::vector<uint64_t> seeds(kThreads);
  for (auto& s : seeds) s = FreshSeed();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      uint8_t* src = mem_a_.data() + t * kChunk;
      FillRandom(src, kChunk, seeds[t]);
      ExpectAllOk(a_->Transfer({{{Opcode::kWrite, src, hb_, mem_b_.addr() + t * kChunk, kChunk}}}));
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_TRUE(CheckRandom(mem_b_.data() + t * kChunk, kChunk, seeds[t])) << t;
}

// FreeBatch (engine lock, then the batch's) racing the worker that finishes the batch (the
// batch's lock, then the engine's) must not deadlock: spin FreeBatch on batches in flight.
TEST_P(TransTest, FreeBatchWhileTheBatchFinishesDoesNotDeadlock) {
  std::atomic<bool> finished{false};
  std::thread watchdog([&] {
    for (int i = 0; i < 1200 && !finished; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!finished) {
      std::fprintf(stderr, "FreeBatch vs. batch completion deadlocked\n");
      std::_Exit(1);
    }
  });
  constexpr int kSpinners = 3;
  std::vector<std::thread> spinners;
  for (int t = 0; t < kSpinners; ++t) {
    spinners.emplace_back([&, t] {
      for (int i = 0; i < 400; ++i) {
        auto id = a_->Submit({{{Opcode::kWrite, mem_a_.data() + t * 64, hb_, mem_b_.addr() + t * 64, 64}}});
        ASSERT_TRUE(id.ok()) << id.status().ToString();
        Status s;
        while ((s = a_->FreeBatch(*id)).code() == Code::kBusy) {
        }
        EXPECT_TRUE(s.ok()) << s.ToString();
      }
    });
  }
  for (auto& th : spinners) th.join();
  finished = true;
  watchdog.join();
}

INSTANTIATE_TEST_SUITE_P(Modes, TransTest, ::testing::Values("p2p", "embedded", "mooncake_http"));

TEST(TransEngine, RefusesWhatItCannotHonour) {
  auto o = Opts();
  o.protocol = "nvlink";  // no such protocol
  EXPECT_EQ(TransferEngine::Create(o).status().code(), Code::kNotSupported);
  // rdma where UCX cannot run (an explicit library that is not there): refused with the reason,
  // or tcp when the fallback is named.
  ::setenv("WEFT_UCX_LIBRARY", "/nonexistent/libucp.so.0", 1);
  o.protocol = "rdma";
  auto te = TransferEngine::Create(o);
  ASSERT_FALSE(te.ok());
  EXPECT_EQ(te.status().code(), Code::kNotSupported);
  EXPECT_NE(te.status().message().find("WEFT_PROTOCOL_FALLBACK"), std::string::npos);
  EXPECT_NE(te.status().message().find("ucx"), std::string::npos) << te.status().ToString();
  o.protocol_fallback = "tcp";
  te = TransferEngine::Create(o);
  ::unsetenv("WEFT_UCX_LIBRARY");
  ASSERT_TRUE(te.ok()) << te.status().ToString();
  EXPECT_EQ((*te)->protocol(), "tcp");

  o = Opts("redis://127.0.0.1:6379", "x");
  EXPECT_EQ(TransferEngine::Create(o).status().code(), Code::kNotSupported);
  o = Opts("gopher://x:1", "x");
  EXPECT_EQ(TransferEngine::Create(o).status().code(), Code::kInvalidArgument);
  o = Opts();
  o.auth.cluster_secret.clear();
  EXPECT_EQ(TransferEngine::Create(o).status().code(), Code::kUnauthenticated);
  o = Opts();
  o.local_name.clear();
  EXPECT_EQ(TransferEngine::Create(o).status().code(), Code::kInvalidArgument);
  // An unreachable metadata server: UNAVAILABLE within the metadata timeout, not a hang.
  o = Opts("http://127.0.0.1:1/metadata", "x");
  o.metadata_timeout = std::chrono::milliseconds(2000);
  EXPECT_EQ(TransferEngine::Create(o).status().code(), Code::kUnavailable);
}

TEST(TransEngine, WrongSecretIsRefused) {
  auto a = Make(Opts());
  auto o = Opts();
  o.auth.cluster_secret = "another-secret";
  auto b = Make(o);
  ASSERT_TRUE(a && b);
  Region ma(4096), mb(4096);
  ASSERT_TRUE(a->RegisterMemory(ma.data(), 4096).ok());
  ASSERT_TRUE(b->RegisterMemory(mb.data(), 4096).ok());
  auto h = a->OpenSegment(b->name());  // the descriptor is public; the data needs the secret
  ASSERT_TRUE(h.ok());
  auto res = a->Transfer({{{Opcode::kWrite, ma.data(), *h, mb.addr(), 64}}});
  EXPECT_EQ(res[0].code(), Code::kUnauthenticated) << res[0].ToString();
  EXPECT_EQ(a->Probe(b->name()).code(), Code::kUnauthenticated);
}

TEST(TransEngine, ABatchOutlivingItsDeadlineTimesOutAndIsBusyUntilThen) {
  // A "peer" whose descriptor points at a socket that accepts connections and never answers.
  meta::DirectoryServerOptions so;
  auto server = meta::DirectoryServer::Start(so);
  ASSERT_TRUE(server.ok());
  std::string url = "embedded://" + (*server)->address();
  auto listener = net::ListenTcp("127.0.0.1", 0, 16);
  ASSERT_TRUE(listener.ok()) << listener.status().ToString();
  auto port = net::LocalPort(listener->get());
  ASSERT_TRUE(port.ok());
  SegmentDescriptor mute{"mute", {{"tcp", TcpEndpointBlob("127.0.0.1", *port)}},
                         {{1 << 20, 4096, "cpu:0", {{"tcp", TcpRegionBlob(1, 42)}}}}};
  ASSERT_TRUE((*server)->store()->Put("mooncake/ram/mute", EncodeDescriptor(mute)).ok());

  auto a = Make(Opts(url, "a"));
  ASSERT_TRUE(a);
  Region m(4096);
  ASSERT_TRUE(a->RegisterMemory(m.data(), 4096).ok());
  auto h = a->OpenSegment("mute");
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  auto id = a->Submit({{{Opcode::kWrite, m.data(), *h, 1 << 20, 64}}}, std::nullopt, Deadline::After(Millis(1500)));
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(a->FreeBatch(*id).code(), Code::kBusy);  // the handshake cannot finish before 1.5 s
  EXPECT_EQ(a->Wait(*id, Deadline::After(Millis(1))).status().code(), Code::kTimeout);
  auto st = a->Wait(*id);  // returns once the batch's own deadline passed
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(st->done);
  EXPECT_NE(st->states[0], TransferState::kCompleted);
  EXPECT_FALSE(st->results[0].ok());
  EXPECT_TRUE(a->FreeBatch(*id).ok());
}

TEST(TransEngine, PeerRestartedUnderItsNameIsFoundAgain) {
  meta::DirectoryServerOptions so;
  auto server = meta::DirectoryServer::Start(so);
  ASSERT_TRUE(server.ok());
  std::string url = "embedded://" + (*server)->address();
  auto a = Make(Opts(url, "a"));
  auto b = Make(Opts(url, "b"));
  ASSERT_TRUE(a && b);
  Region ma(1 << 16), mb(1 << 16);
  ASSERT_TRUE(a->RegisterMemory(ma.data(), ma.bytes.size()).ok());
  ASSERT_TRUE(b->RegisterMemory(mb.data(), mb.bytes.size()).ok());
  auto h = a->OpenSegment("b");
  ASSERT_TRUE(h.ok());
  ExpectAllOk(a->Transfer({{{Opcode::kWrite, ma.data(), *h, mb.addr(), 100}}}));
  // b restarts: new data port, new keys, same buffer address (as a restarted server process
  // that allocates the same way would have).
  b.reset();
  b = Make(Opts(url, "b"));
  ASSERT_TRUE(b);
  ASSERT_TRUE(b->RegisterMemory(mb.data(), mb.bytes.size()).ok());
  uint64_t seed = FreshSeed();
  FillRandom(ma.data(), 4096, seed);
  std::memset(mb.data(), 0, 4096);
  ExpectAllOk(a->Transfer({{{Opcode::kWrite, ma.data(), *h, mb.addr(), 4096}}}));
  EXPECT_TRUE(CheckRandom(mb.data(), 4096, seed));
}

// The directory restarts empty (embedded server on the same port): transfers between engines
// that already know each other go on, and each engine puts its descriptor back once it notices
// that its lease is gone, so a newcomer finds them again.
TEST(TransEngine, DirectoryRestartLosesNothing) {
  meta::DirectoryServerOptions so;
  auto server = meta::DirectoryServer::Start(so);
  ASSERT_TRUE(server.ok());
  std::string address = (*server)->address();
  std::string url = "embedded://" + address;
  auto opts = [&](const std::string& name) {
    auto o = Opts(url, name);
    o.descriptor_lease = std::chrono::milliseconds(600);  // renewed every 200 ms
    o.metadata_timeout = std::chrono::milliseconds(1000);
    return o;
  };
  auto a = Make(opts("a"));
  auto b = Make(opts("b"));
  ASSERT_TRUE(a && b);
  Region ma(1 << 16), mb(1 << 16);
  ASSERT_TRUE(a->RegisterMemory(ma.data(), ma.bytes.size()).ok());
  ASSERT_TRUE(b->RegisterMemory(mb.data(), mb.bytes.size()).ok());
  auto h = a->OpenSegment("b");
  ASSERT_TRUE(h.ok());

  (*server)->Stop();
  server->reset();
  // The directory is down: known peers still work, unknown ones are UNAVAILABLE (not a hang).
  uint64_t seed = FreshSeed();
  FillRandom(ma.data(), 4096, seed);
  ExpectAllOk(a->Transfer({{{Opcode::kWrite, ma.data(), *h, mb.addr(), 4096}}}));
  EXPECT_TRUE(CheckRandom(mb.data(), 4096, seed));
  EXPECT_EQ(a->OpenSegment("c").status().code(), Code::kUnavailable);

  so.bind = address;  // back on the same address, with an empty store
  auto again = meta::DirectoryServer::Start(so);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  auto c = Make(opts("c"));
  ASSERT_TRUE(c);
  Region mc(4096);
  ASSERT_TRUE(c->RegisterMemory(mc.data(), mc.bytes.size()).ok());
  Result<SegmentHandle> hb = Error(Code::kNotFound, "not yet");
  for (int i = 0; i < 100 && !hb.ok(); ++i) {  // the keepers notice within a renewal period
    hb = c->OpenSegment("b");
    if (!hb.ok()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(hb.ok()) << hb.status().ToString();
  seed = FreshSeed();
  FillRandom(mc.data(), 4096, seed);
  ExpectAllOk(c->Transfer({{{Opcode::kWrite, mc.data(), *hb, mb.addr() + 8192, 4096}}}));
  EXPECT_TRUE(CheckRandom(mb.data() + 8192, 4096, seed));
}

// Device buffers through the staging path, with a stand-in "device" (host memory that only the
// supplied copy function may touch, counted): local device sources and destinations, remote
// device segments served through the data server's staging, and a failing device copy.
struct FakeDevice {
  explicit FakeDevice(size_t n = 4u << 20) : arena(n) {}
  Region arena;
  std::atomic<int> copies{0};
  std::atomic<bool> fail{false};
  std::atomic<int64_t> fail_at{-1};  // an arena offset whose copy fails
  std::atomic<int> bounce_allocs{0}, bounce_frees{0};
  bool In(const void* p) {
    auto a = reinterpret_cast<uint64_t>(p);
    return a >= arena.addr() && a < arena.addr() + arena.bytes.size();
  }
  TransferEngineOptions::DeviceMemory Ops() {
    TransferEngineOptions::DeviceMemory d;
    d.is_device = [this](const void* p) { return In(p); };
    d.copy = [this](void* dst, const void* src, uint64_t len) -> Status {
      if (fail) return Error(Code::kCuda, "injected device copy failure");
      const uint8_t* dev = static_cast<const uint8_t*>(In(dst) ? dst : src);
      const int64_t f = fail_at;
      const uint64_t off = reinterpret_cast<uint64_t>(dev) - arena.addr();
      if (f >= 0 && static_cast<uint64_t>(f) >= off && static_cast<uint64_t>(f) < off + len)
        return Error(Code::kCuda, "injected device copy failure at offset {}", f);
      copies++;
      std::memcpy(dst, src, len);
      return OkStatus();
    };
    d.alloc_host = [this](uint64_t bytes) -> Result<void*> {
      bounce_allocs++;
      return std::malloc(bytes);
    };
    d.free_host = [this](void* p, uint64_t) {
      bounce_frees++;
      std::free(p);
    };
    return d;
  }
};

TEST(TransEngine, DeviceBuffersAreStagedAtBothEnds) {
  FakeDevice dev_a, dev_b;
  auto oa = Opts();
  oa.device = dev_a.Ops();
  auto ob = Opts();
  ob.device = dev_b.Ops();
  auto a = Make(oa);
  auto b = Make(ob);
  ASSERT_TRUE(a && b);
  Region host_a(1 << 20);
  ASSERT_TRUE(a->RegisterMemory(host_a.data(), host_a.bytes.size()).ok());
  ASSERT_TRUE(a->RegisterMemory(dev_a.arena.data(), dev_a.arena.bytes.size(), "cuda:0").ok());
  ASSERT_TRUE(b->RegisterMemory(dev_b.arena.data(), dev_b.arena.bytes.size(), "*").ok());  // detected
  EXPECT_EQ(a->RegisterMemory(Region(64).data(), 64, "cuda:0").code(), Code::kInvalidArgument);  // host memory
  auto h = a->OpenSegment(b->name());
  ASSERT_TRUE(h.ok());
  // "*" at a device address is recorded (and advertised) as device memory; the stand-in device
  // has no ordinal, so plain "cuda".
  ASSERT_EQ(b->LocalBuffers().size(), 1u);
  EXPECT_EQ(b->LocalBuffers()[0].location, "cuda");
  auto seen = a->RemoteBuffers(*h);
  ASSERT_TRUE(seen.ok());
  ASSERT_EQ(seen->size(), 1u);
  EXPECT_EQ((*seen)[0].location, "cuda");
  constexpr uint64_t kLen = (1u << 20) + 333;
  const uint64_t remote = dev_b.arena.addr() + 4096;

  // Host -> remote device: the server stages it.
  uint64_t seed = FreshSeed();
  FillRandom(host_a.data(), 1 << 20, seed);
  ExpectAllOk(a->Transfer({{{Opcode::kWrite, host_a.data(), *h, remote, 1 << 20}}}));
  EXPECT_TRUE(CheckRandom(dev_b.arena.data() + 4096, 1 << 20, seed));
  EXPECT_GT(dev_b.copies.load(), 0);
  // Remote device -> local device: both ends stage.
  std::memset(dev_a.arena.data(), 0xEE, kLen);
  int before_a = dev_a.copies, before_b = dev_b.copies;
  ExpectAllOk(a->Transfer({{{Opcode::kRead, dev_a.arena.data(), *h, remote, 1 << 20}}}));
  EXPECT_TRUE(CheckRandom(dev_a.arena.data(), 1 << 20, seed));
  EXPECT_GT(dev_a.copies.load(), before_a);
  EXPECT_GT(dev_b.copies.load(), before_b);
  // Local device -> remote device, unaligned length, after fresh bytes.
  seed = FreshSeed();
  FillRandom(dev_a.arena.data(), kLen, seed);
  std::memset(dev_b.arena.data(), 0, 4096 + kLen);
  ExpectAllOk(a->Transfer({{{Opcode::kWrite, dev_a.arena.data(), *h, remote, kLen}}}));
  EXPECT_TRUE(CheckRandom(dev_b.arena.data() + 4096, kLen, seed));

  // A failing device copy fails its request (at either end), never the process or a neighbour.
  dev_a.fail = true;
  FillRandom(host_a.data(), 4096, seed);
  auto res = a->Transfer({{{Opcode::kWrite, dev_a.arena.data(), *h, remote, 4096},
                           {Opcode::kWrite, host_a.data(), *h, remote + 8192, 4096}}});
  EXPECT_EQ(res[0].code(), Code::kCuda) << res[0].ToString();
  EXPECT_TRUE(res[1].ok()) << res[1].ToString();
  dev_a.fail = false;
  dev_b.fail = true;
  res = a->Transfer({{{Opcode::kRead, host_a.data(), *h, remote, 4096}}});
  EXPECT_EQ(res[0].code(), Code::kCuda) << res[0].ToString();
  res = a->Transfer({{{Opcode::kWrite, host_a.data(), *h, remote, 4096}}});
  EXPECT_EQ(res[0].code(), Code::kCuda) << res[0].ToString();
  dev_b.fail = false;
  ExpectAllOk(a->Transfer({{{Opcode::kRead, host_a.data(), *h, remote, 4096}}}));  // and it recovers
}

// Local device buffers through the staging pipeline (bounce buffers smaller than the requests,
// so every large request takes many rounds): random unaligned sizes up to 64 MiB both ways, a
// batch mixing host and device ends and both ops, a copy failing in the middle of a slice
// failing its request only, the engine's buffers bounded and all returned.
TEST(TransEngine, DeviceBuffersGoThroughTheStagingPipeline) {
  constexpr uint64_t kMax = 64ull << 20;
  FakeDevice dev_a(kMax + 8192);
  auto oa = Opts();
  oa.device = dev_a.Ops();
  oa.staging_slice_bytes = 1u << 20;
  oa.staging_buffers = 4;
  oa.staging_max_buffers = 8;
  auto a = Make(oa);
  auto b = Make(Opts());
  ASSERT_TRUE(a && b);
  Region host_b(kMax + 8192), host_a(8u << 20);
  ASSERT_TRUE(a->RegisterMemory(dev_a.arena.data(), dev_a.arena.bytes.size(), "cuda:0").ok());
  ASSERT_TRUE(a->RegisterMemory(host_a.data(), host_a.bytes.size(), "cpu:0").ok());
  ASSERT_TRUE(b->RegisterMemory(host_b.data(), host_b.bytes.size()).ok());
  auto h = a->OpenSegment(b->name());
  ASSERT_TRUE(h.ok());
  uint64_t state = FreshSeed();
  std::vector<uint64_t> sizes = {1, 4095, (1u << 20) + 1, (5u << 20) + 3, 1 + SplitMix64(state) % kMax, kMax};
  for (uint64_t len : sizes) {
    SCOPED_TRACE(::testing::Message() << len << " bytes");
    const uint64_t off_a = SplitMix64(state) % 4096, off_b = SplitMix64(state) % 4096;
    uint64_t seed = FreshSeed();
    FillRandom(dev_a.arena.data() + off_a, len, seed);
    std::memset(host_b.data() + off_b, 0xEE, len);
    ExpectAllOk(a->Transfer({{{Opcode::kWrite, dev_a.arena.data() + off_a, *h, host_b.addr() + off_b, len}}}));
    EXPECT_TRUE(CheckRandom(host_b.data() + off_b, len, seed)) << "WRITE from device";
    seed = FreshSeed();
    FillRandom(host_b.data() + off_b, len, seed);
    std::memset(dev_a.arena.data() + off_a, 0x5A, len);
    ExpectAllOk(a->Transfer({{{Opcode::kRead, dev_a.arena.data() + off_a, *h, host_b.addr() + off_b, len}}}));
    EXPECT_TRUE(CheckRandom(dev_a.arena.data() + off_a, len, seed)) << "READ into device";
  }
  // One batch: device WRITE, host WRITE, device READ, host READ (disjoint ranges).
  {
    constexpr uint64_t kLen = (3u << 20) + 11;
    const uint64_t s1 = FreshSeed(), s2 = FreshSeed(), s3 = FreshSeed(), s4 = FreshSeed();
    FillRandom(dev_a.arena.data(), kLen, s1);
    FillRandom(host_a.data(), kLen, s2);
    FillRandom(host_b.data() + 2 * kLen, kLen, s3);
    FillRandom(host_b.data() + 3 * kLen, kLen, s4);
    std::memset(host_b.data(), 0xEE, 2 * kLen);
    std::memset(dev_a.arena.data() + kLen, 0xEE, kLen);
    std::memset(host_a.data() + kLen, 0xEE, kLen);
    ExpectAllOk(a->Transfer({{{Opcode::kWrite, dev_a.arena.data(), *h, host_b.addr(), kLen},
                              {Opcode::kWrite, host_a.data(), *h, host_b.addr() + kLen, kLen},
                              {Opcode::kRead, dev_a.arena.data() + kLen, *h, host_b.addr() + 2 * kLen, kLen},
                              {Opcode::kRead, host_a.data() + kLen, *h, host_b.addr() + 3 * kLen, kLen}}}));
    EXPECT_TRUE(CheckRandom(host_b.data(), kLen, s1));
    EXPECT_TRUE(CheckRandom(host_b.data() + kLen, kLen, s2));
    EXPECT_TRUE(CheckRandom(dev_a.arena.data() + kLen, kLen, s3));
    EXPECT_TRUE(CheckRandom(host_a.data() + kLen, kLen, s4));
  }
  // A copy failing in the middle of a slice of the second of three device WRITEs (and READs).
  for (Opcode op : {Opcode::kWrite, Opcode::kRead}) {
    constexpr uint64_t kLen = (4u << 20) + 5;
    const uint64_t seed = FreshSeed();
    FillRandom(op == Opcode::kWrite ? dev_a.arena.data() : host_b.data(), 3 * kLen, seed);
    std::memset(op == Opcode::kWrite ? host_b.data() : dev_a.arena.data(), 0xEE, 3 * kLen);
    dev_a.fail_at = static_cast<int64_t>(kLen + (2u << 20) + 999);
    std::vector<TransferRequest> reqs;
    for (uint64_t i = 0; i < 3; ++i)
      reqs.push_back({op, dev_a.arena.data() + i * kLen, *h, host_b.addr() + i * kLen, kLen});
    auto res = a->Transfer(reqs);
    dev_a.fail_at = -1;
    EXPECT_TRUE(res[0].ok()) << res[0].ToString();
    EXPECT_EQ(res[1].code(), Code::kCuda) << res[1].ToString();
    EXPECT_TRUE(res[2].ok()) << res[2].ToString();
    std::vector<uint8_t> want(3 * kLen);
    FillRandom(want.data(), want.size(), seed);
    const uint8_t* got = op == Opcode::kWrite ? host_b.data() : dev_a.arena.data();
    EXPECT_EQ(std::memcmp(got, want.data(), kLen), 0);
    EXPECT_EQ(std::memcmp(got + 2 * kLen, want.data() + 2 * kLen, kLen), 0);
  }
  auto& m = TransferEngineAccess::Metrics(*a);
  EXPECT_GT(m.counter("weft_trans_staged_bytes_total")->value(), 2 * kMax);
  EXPECT_GT(m.counter("weft_trans_staging_rounds_total")->value(), 64u);  // 64 MiB in 1 MiB slices, 2 per round
  EXPECT_EQ(m.gauge("weft_trans_staging_buffers_in_use")->value(), 0);
  EXPECT_LE(dev_a.bounce_allocs.load(), 8);  // bounded by staging_max_buffers, whatever the sizes
  EXPECT_GT(dev_a.bounce_allocs.load(), 0);
  a.reset();
  EXPECT_EQ(dev_a.bounce_frees.load(), dev_a.bounce_allocs.load());  // every buffer freed with the engine
}

// A peer in another process (fork): p2p by name, write, read back, notifications.
TEST(TransEngine, AcrossProcesses) {
  int to_child[2], to_parent[2];
  ASSERT_EQ(::pipe(to_child), 0);
  ASSERT_EQ(::pipe(to_parent), 0);
  constexpr size_t kLen = 4u << 20;
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(to_child[1]);
    ::close(to_parent[0]);
    auto te = TransferEngine::Create(Opts());
    if (!te.ok()) ::_exit(2);
    std::vector<uint8_t> mem(kLen, 0);
    if (!(*te)->RegisterMemory(mem.data(), kLen).ok()) ::_exit(3);
    std::string hello = (*te)->name() + " " + std::to_string(reinterpret_cast<uint64_t>(mem.data())) + "\n";
    if (::write(to_parent[1], hello.data(), hello.size()) != static_cast<ssize_t>(hello.size())) ::_exit(4);
    // Wait for the parent's notification, then report what arrived.
    std::vector<Notification> got;
    for (int i = 0; i < 3000 && got.empty(); ++i) {
      got = (*te)->TakeNotifications();
      if (got.empty()) ::usleep(10000);
    }
    std::string report = got.empty() ? "none\n" : got[0].message + "\n";
    if (::write(to_parent[1], report.data(), report.size()) < 0) ::_exit(5);
    char c;
    (void)::read(to_child[0], &c, 1);  // until the parent is done reading
    ::_exit(0);
  }
  ::close(to_child[0]);
  ::close(to_parent[1]);
  auto read_line = [&] {
    std::string line;
    char c;
    while (::read(to_parent[0], &c, 1) == 1 && c != '\n') line += c;
    return line;
  };
  std::string hello = read_line();
  auto space = hello.find(' ');
  ASSERT_NE(space, std::string::npos) << "child said '" << hello << "'";
  std::string name = hello.substr(0, space);
  uint64_t remote = std::stoull(hello.substr(space + 1));

  auto a = Make(Opts());
  ASSERT_TRUE(a);
  Region mine(kLen);
  ASSERT_TRUE(a->RegisterMemory(mine.data(), kLen).ok());
  auto h = a->OpenSegment(name);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  uint64_t seed = FreshSeed();
  FillRandom(mine.data(), kLen, seed);
  std::string tag = "done-" + std::to_string(seed);
  ExpectAllOk(a->Transfer({{{Opcode::kWrite, mine.data(), *h, remote, kLen}}}, Notification{"parent", tag}));
  EXPECT_EQ(read_line(), tag);
  std::memset(mine.data(), 0xAB, kLen);
  ExpectAllOk(a->Transfer({{{Opcode::kRead, mine.data(), *h, remote, kLen}}}));
  EXPECT_TRUE(CheckRandom(mine.data(), kLen, seed));
  ::close(to_child[1]);  // the child exits
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  // The child is gone: a transfer to it fails instead of hanging.
  auto res = a->Transfer({{{Opcode::kRead, mine.data(), *h, remote, 64}}});
  EXPECT_FALSE(res[0].ok());
}

// A peer on this node killed (SIGKILL: it withdraws nothing) after we mapped its buffer: the
// mapping outlives it, so a copy into it would "succeed" into memory nobody reads. Every op of a
// batch that touches it is PEER_DOWN instead, never OK.
TEST(TransEngine, AKilledPeerOnThisNodeIsPeerDownNotASuccess) {
  int to_parent[2];
  ASSERT_EQ(::pipe(to_parent), 0);
  constexpr size_t kLen = 1u << 20;
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(to_parent[0]);
    auto te = TransferEngine::Create(Opts());
    if (!te.ok()) ::_exit(2);
    auto mem = (*te)->AllocateManagedBuffer(kLen);  // memfd-backed: peers on this node map it (shm)
    if (!mem.ok()) ::_exit(3);
    std::string hello = (*te)->name() + " " + std::to_string(reinterpret_cast<uint64_t>(*mem)) + "\n";
    if (::write(to_parent[1], hello.data(), hello.size()) != static_cast<ssize_t>(hello.size())) ::_exit(4);
    for (;;) ::pause();  // until killed
  }
  ::close(to_parent[1]);
  std::string hello;
  for (char c; ::read(to_parent[0], &c, 1) == 1 && c != '\n';) hello += c;
  ::close(to_parent[0]);
  const auto space = hello.find(' ');
  ASSERT_NE(space, std::string::npos) << "child said '" << hello << "'";
  const uint64_t remote = std::stoull(hello.substr(space + 1));
  auto a = Make(Opts());
  ASSERT_TRUE(a);
  Region mine(kLen);
  ASSERT_TRUE(a->RegisterMemory(mine.data(), kLen).ok());
  auto h = a->OpenSegment(hello.substr(0, space));
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  FillRandom(mine.data(), kLen, FreshSeed());
  auto route = a->Route({Opcode::kWrite, mine.data(), *h, remote, kLen});
  ASSERT_TRUE(route.ok()) << route.status().ToString();
  EXPECT_NE(route->find("via shm"), std::string::npos) << *route;  // the mapped path is the one under test
  ExpectAllOk(a->Transfer({{{Opcode::kWrite, mine.data(), *h, remote, kLen}}}));
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  std::vector<TransferRequest> batch;
  for (size_t off = 0; off < kLen; off += 64 << 10) batch.push_back({Opcode::kWrite, mine.data() + off, *h, remote + off, 64 << 10});
  auto res = a->Transfer(batch);
  ASSERT_EQ(res.size(), batch.size());
  for (const Status& s : res) {
    EXPECT_FALSE(s.ok()) << "a write to a killed peer reported success";
    EXPECT_TRUE(s.code() == Code::kPeerDown || s.code() == Code::kUnavailable) << s.ToString();
  }
  std::printf("after the kill: %s\n", res[0].ToString().c_str());
}

// A batch over two regions of a killed owner and one of a live owner on this node: the engine asks
// each owner process once (not each region), and only the killed one's ops fail PEER_DOWN.
TEST(TransEngine, ABatchOverADeadAndALiveOwnerFailsOnlyTheDeadOnesRegions) {
  constexpr size_t kLen = 256u << 10;
  struct Child {
    pid_t pid = -1;
    std::string name;
    std::vector<uint64_t> buffers;
  };
  auto spawn = [&](int regions) {  // a peer with `regions` managed buffers, until killed
    Child c;
    int to_parent[2];
    if (::pipe(to_parent) != 0) return c;
    c.pid = ::fork();
    if (c.pid == 0) {
      ::close(to_parent[0]);
      auto te = TransferEngine::Create(Opts());
      if (!te.ok()) ::_exit(2);
      std::string hello = (*te)->name();
      for (int i = 0; i < regions; ++i) {
        auto mem = (*te)->AllocateManagedBuffer(kLen);
        if (!mem.ok()) ::_exit(3);
        hello += " " + std::to_string(reinterpret_cast<uint64_t>(*mem));
      }
      hello += "\n";
      if (::write(to_parent[1], hello.data(), hello.size()) != static_cast<ssize_t>(hello.size())) ::_exit(4);
      for (;;) ::pause();
    }
    ::close(to_parent[1]);
    std::string hello;
    for (char ch; ::read(to_parent[0], &ch, 1) == 1 && ch != '\n';) hello += ch;
    ::close(to_parent[0]);
    std::istringstream words(hello);
    words >> c.name;
    for (uint64_t b; words >> b;) c.buffers.push_back(b);
    return c;
  };
  Child dead = spawn(2), live = spawn(1);
  ASSERT_EQ(dead.buffers.size(), 2u);
  ASSERT_EQ(live.buffers.size(), 1u);
  auto a = Make(Opts());
  ASSERT_TRUE(a);
  Region mine(kLen);
  ASSERT_TRUE(a->RegisterMemory(mine.data(), kLen).ok());
  FillRandom(mine.data(), kLen, FreshSeed());
  auto hd = a->OpenSegment(dead.name);
  auto hl = a->OpenSegment(live.name);
  ASSERT_TRUE(hd.ok() && hl.ok());
  std::vector<TransferRequest> batch;
  for (uint64_t off = 0; off < kLen; off += 64 << 10) {
    for (uint64_t b : dead.buffers) batch.push_back({Opcode::kWrite, mine.data() + off, *hd, b + off, 64 << 10});
    batch.push_back({Opcode::kWrite, mine.data() + off, *hl, live.buffers[0] + off, 64 << 10});
  }
  for (const TransferRequest* r : {&batch[0], &batch[1], &batch[2]}) {  // the mapped path is the one under test
    auto route = a->Route(*r);
    ASSERT_TRUE(route.ok()) << route.status().ToString();
    EXPECT_NE(route->find("via shm"), std::string::npos) << *route;
  }
  ExpectAllOk(a->Transfer(batch));  // both alive
  ASSERT_EQ(::kill(dead.pid, SIGKILL), 0);
  ASSERT_EQ(::waitpid(dead.pid, nullptr, 0), dead.pid);
  auto res = a->Transfer(batch);
  ASSERT_EQ(res.size(), batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    if (batch[i].target == *hl) {
      EXPECT_TRUE(res[i].ok()) << "request " << i << " to the live owner: " << res[i].ToString();
    } else {
      EXPECT_EQ(res[i].code(), Code::kPeerDown) << "request " << i << " to the killed owner: " << res[i].ToString();
    }
  }
  ::kill(live.pid, SIGKILL);
  ::waitpid(live.pid, nullptr, 0);
}

TEST(SegmentDescriptor, RoundTripsAndRefusesMalformedText) {
  SegmentDescriptor d{"n",
                      {{"tcp", TcpEndpointBlob("10.0.0.1", 4242)}, {"future-rdma", std::string("\x07\x00\xff", 3)}},
                      {{4096, 100, "cpu:0", {{"tcp", TcpRegionBlob(1, 0xfedcba9876543210ull)}}},
                       {8192, 5, "*", {}}}};
  auto back = DecodeDescriptor(EncodeDescriptor(d));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, d);  // an unknown transport's blob survives as it was
  EXPECT_EQ(d.Find(4096, 100), &d.buffers[0]);
  EXPECT_EQ(d.Find(4100, 97), nullptr);
  EXPECT_EQ(d.Find(8196, 1), &d.buffers[1]);
  EXPECT_EQ(d.Find(0, 1), nullptr);
  const std::string head = R"({"version":2,"name":"n","transports":{"tcp":"AQ=="},)";
  for (std::string bad : {std::string(""), std::string("[]"), std::string("{}"),
                          std::string(R"({"version":1,"name":"n","transports":{},"buffers":[]})"),
                          std::string(R"({"name":"n","transports":{},"buffers":[]})"),
                          std::string(R"({"version":2,"name":"n","transports":{"TCP":"AQ=="},"buffers":[]})"),
                          std::string(R"({"version":2,"name":"n","transports":{"tcp":"not base64"},"buffers":[]})"),
                          std::string(R"({"version":2,"name":"n","transports":{"tcp":""},"buffers":[]})"),
                          std::string(R"({"version":2,"name":"n","transports":{"tcp":1},"buffers":[]})"),
                          std::string(R"({"version":2,"name":"n","transports":[],"buffers":[]})"),
                          head + R"("buffers":[],"x":1})",
                          head + R"("buffers":[{"addr":1,"length":0,"location":"","blobs":{}}]})",
                          head + R"("buffers":[{"addr":1,"length":1,"location":"","blobs":{},"segment":1}]})",
                          head + R"("buffers":[{"addr":1,"length":1,"location":""}]})",
                          head + R"("buffers":[{"addr":10,"length":10,"location":"","blobs":{}},{"addr":15,"length":1,"location":"","blobs":{}}]})"}) {
    auto r = DecodeDescriptor(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), Code::kProtocol) << bad;
    }
  }
}

}  // namespace
}  // namespace weft::trans
