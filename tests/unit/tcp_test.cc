// The TCP data plane on loopback, in one process: data frames, authentication, the server's
// access checks, the client's slicing/striping/pipelining, failures (garbage, dead server,
// stalled server) and the "tcp" transport. Fresh random data for every check, destinations
// poisoned first, every byte compared.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <future>
#include <optional>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "base/random.h"
#include "net/auth.h"
#include "net/tcp_socket.h"
#include "mem/access_table.h"
#include "transport/tcp/tcp_client.h"
#include "transport/tcp/tcp_server.h"
#include "transport/tcp/tcp_transport.h"
#include "wire/data.h"

namespace weft::transport::tcp {
namespace {

constexpr char kSecret[] = "unit-test-cluster-secret-7f3a";
constexpr uint64_t kBigSize = (64ull << 20) + (1ull << 20);  // room for 64 MiB at an offset
constexpr uint64_t kKey = 0x1234abcd5678ef90ull;
constexpr uint64_t kRoKey = 0x0badc0ffee15600dull;
constexpr uint32_t kSeg = 7;
constexpr uint32_t kRoSeg = 9;
constexpr uint64_t kRoSize = 4ull << 20;

Deadline Soon(int ms = 20000) { return Deadline::After(Millis(ms)); }

// What a hand-written server does after the handshake: takes the client's FENCE and accepts it.
Status AnswerFence(int fd) {
  uint8_t h[wire::kDataRequestSize];
  WEFT_RETURN_IF_ERROR(net::RecvAllTcp(fd, h, sizeof h, Soon(), "c"));
  WEFT_ASSIGN_OR_RETURN(wire::DataRequest r, wire::DecodeDataRequest(h));
  if (r.op != wire::DataOp::kFence) return Error(Code::kProtocol, "expected a FENCE, got {}", wire::DataOpName(r.op));
  auto rb = wire::EncodeDataResponse({r.op, 0, r.request_id, Code::kOk, 0, 0});
  return net::SendAllTcp(fd, rb.data(), rb.size(), Soon(), "c");
}

struct Buffer {
  explicit Buffer(uint64_t n) : size(n), data(static_cast<uint8_t*>(std::aligned_alloc(4096, (n + 4095) / 4096 * 4096))) {}
  ~Buffer() { std::free(data); }
  uint64_t size;
  uint8_t* data;
};

bool AllBytes(const uint8_t* p, uint64_t n, uint8_t v) {
  for (uint64_t i = 0; i < n; ++i)
    if (p[i] != v) return false;
  return true;
}

class TcpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    big_ = std::make_unique<Buffer>(kBigSize);
    ro_ = std::make_unique<Buffer>(kRoSize);
    std::memset(big_->data, 0, kBigSize);
    FillRandom(ro_->data, kRoSize, FreshSeed());
    ASSERT_TRUE(table_.Register({kSeg, big_->data, kBigSize, kKey, mem::kReadWrite}).ok());
    ASSERT_TRUE(table_.Register({kRoSeg, ro_->data, kRoSize, kRoKey, mem::kRead}).ok());
    TcpServerOptions so;
    so.host = "127.0.0.1";
    so.auth.cluster_secret = kSecret;
    so.threads = 2;
    auto s = TcpServer::Start(so, &table_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    server_ = std::move(*s);
    peer_ = PeerAddr{"127.0.0.1", server_->port()};
    client_ = MakeClient(kSecret);
  }
  void TearDown() override {
    client_.reset();
    if (server_) server_->Stop();
    server_.reset();
  }

  // Another data server over the same segments (another peer, as a client sees it).
  Result<std::unique_ptr<TcpServer>> StartAnotherServer() {
    TcpServerOptions so;
    so.host = "127.0.0.1";
    so.auth.cluster_secret = kSecret;
    return TcpServer::Start(so, &table_);
  }

  std::unique_ptr<TcpClient> MakeClient(std::string secret, bool allow_empty = false, uint64_t slice = 1 << 20) {
    TcpClientOptions o;
    o.auth.cluster_secret = std::move(secret);
    o.auth.allow_unauthenticated = allow_empty;
    o.lanes = 4;
    o.slice_bytes = slice;
    return std::make_unique<TcpClient>(o);
  }

  // WRITE then READ of len bytes at off, checked byte for byte with poisoned guards.
  void RoundTrip(TcpClient& c, uint64_t off, uint64_t len) {
    SCOPED_TRACE(::testing::Message() << "len " << len << " off " << off);
    const uint64_t seed = FreshSeed();
    Buffer src(len);
    FillRandom(src.data, len, seed);
    // Poison the segment around and inside the target.
    uint64_t lo = off >= 64 ? off - 64 : 0, hi = std::min(kBigSize, off + len + 64);
    std::memset(big_->data + lo, 0xA5, hi - lo);
    Status w = c.Write(peer_, kSeg, kKey, off, src.data, len, Soon());
    ASSERT_TRUE(w.ok()) << w.ToString();
    auto bad = FirstMismatch(big_->data + off, len, seed);
    ASSERT_FALSE(bad.has_value()) << "segment byte " << *bad << " differs after WRITE";
    ASSERT_TRUE(AllBytes(big_->data + lo, off - lo, 0xA5)) << "WRITE touched bytes before its range";
    ASSERT_TRUE(AllBytes(big_->data + off + len, hi - off - len, 0xA5)) << "WRITE touched bytes after its range";

    const uint64_t seed2 = FreshSeed();
    FillRandom(big_->data + off, len, seed2);
    Buffer dst(len + 64);
    std::memset(dst.data, 0x5A, len + 64);
    Status r = c.Read(peer_, kSeg, kKey, off, dst.data, len, Soon());
    ASSERT_TRUE(r.ok()) << r.ToString();
    bad = FirstMismatch(dst.data, len, seed2);
    ASSERT_FALSE(bad.has_value()) << "READ byte " << *bad << " differs";
    ASSERT_TRUE(AllBytes(dst.data + len, 64, 0x5A)) << "READ wrote past its destination";
  }

  AccessTable table_;
  std::unique_ptr<Buffer> big_, ro_;
  std::unique_ptr<TcpServer> server_;
  std::unique_ptr<TcpClient> client_;
  PeerAddr peer_;
};

// ---------------------------------------------------------------------------------------------
// Frames

TEST(DataFrameTest, RoundTripAndRejects) {
  wire::DataRequest r{wire::DataOp::kWrite, 0, 42, 3, 0xfeedull, 123, 4096};
  auto b = wire::EncodeDataRequest(r);
  auto d = wire::DecodeDataRequest(b);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(*d, r);
  auto bad = b;
  bad[0] ^= 1;
  EXPECT_EQ(wire::DecodeDataRequest(bad).status().code(), Code::kProtocol);  // magic
  bad = b;
  bad[6] = 9;
  EXPECT_EQ(wire::DecodeDataRequest(bad).status().code(), Code::kProtocol);  // op
  bad = b;
  bad[20] = 1;
  EXPECT_EQ(wire::DecodeDataRequest(bad).status().code(), Code::kProtocol);  // reserved
  r.length = wire::kMaxDataLength + 1;
  EXPECT_EQ(wire::DecodeDataRequest(wire::EncodeDataRequest(r)).status().code(), Code::kProtocol);
  EXPECT_EQ(wire::DecodeDataRequest(std::span<const uint8_t>(b.data(), 47)).status().code(), Code::kProtocol);

  wire::DataResponse resp{wire::DataOp::kRead, 0, 42, Code::kOk, 0, 4096};
  auto rb = wire::EncodeDataResponse(resp);
  auto rd = wire::DecodeDataResponse(rb);
  ASSERT_TRUE(rd.ok());
  EXPECT_EQ(*rd, resp);
  resp.status = Code::kPermissionDenied;  // an error with a payload
  EXPECT_EQ(wire::DecodeDataResponse(wire::EncodeDataResponse(resp)).status().code(), Code::kProtocol);
  resp.length = 0;
  resp.message_length = wire::kMaxDataMessage + 1;
  EXPECT_EQ(wire::DecodeDataResponse(wire::EncodeDataResponse(resp)).status().code(), Code::kProtocol);
  resp.message_length = 10;
  EXPECT_TRUE(wire::DecodeDataResponse(wire::EncodeDataResponse(resp)).ok());
  auto rbad = wire::EncodeDataResponse(resp);
  rbad[16] = 0x7f;  // status code far out of range
  EXPECT_EQ(wire::DecodeDataResponse(rbad).status().code(), Code::kProtocol);
}

TEST(DataFrameTest, NotifyFramesAndPayloads) {
  wire::DataRequest r{wire::DataOp::kNotify, 0, 7, 0, 0, 0, 100};
  auto d = wire::DecodeDataRequest(wire::EncodeDataRequest(r));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(*d, r);
  auto bad = r;
  bad.segment_id = 3;  // a NOTIFY addresses no memory
  EXPECT_EQ(wire::DecodeDataRequest(wire::EncodeDataRequest(bad)).status().code(), Code::kProtocol);
  bad = r;
  bad.length = wire::kMaxNotifyPayload + 1;
  EXPECT_EQ(wire::DecodeDataRequest(wire::EncodeDataRequest(bad)).status().code(), Code::kProtocol);
  wire::DataResponse resp{wire::DataOp::kNotify, 0, 7, Code::kOk, 0, 5};  // payload on a NOTIFY answer
  EXPECT_EQ(wire::DecodeDataResponse(wire::EncodeDataResponse(resp)).status().code(), Code::kProtocol);

  auto p = wire::EncodeNotification("name", std::string("msg\0with nul", 13));
  ASSERT_TRUE(p.ok());
  auto n = wire::DecodeNotification(*p);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->name, "name");
  EXPECT_EQ(n->message, std::string("msg\0with nul", 13));
  std::vector<uint8_t> truncated(p->begin(), p->begin() + 6);  // the name runs past the end
  EXPECT_EQ(wire::DecodeNotification(truncated).status().code(), Code::kProtocol);
  EXPECT_EQ(wire::DecodeNotification(std::vector<uint8_t>{1, 2}).status().code(), Code::kProtocol);
  EXPECT_EQ(wire::EncodeNotification("", std::string(wire::kMaxNotifyPayload, 'x')).status().code(),
            Code::kInvalidArgument);
}

// FENCE (wire/data.h): a client id and a generation, neither 0; no segment, no payload.
TEST(DataFrameTest, FenceFrames) {
  wire::DataRequest r{wire::DataOp::kFence, 0, 0, 0, 0xC11E47ull, 3, 0};
  auto d = wire::DecodeDataRequest(wire::EncodeDataRequest(r));
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(*d, r);
  EXPECT_EQ(wire::DataOpName(d->op), "FENCE");
  for (auto broken : {+[](wire::DataRequest& f) { f.segment_id = 1; }, +[](wire::DataRequest& f) { f.length = 8; },
                      +[](wire::DataRequest& f) { f.access_key = 0; }, +[](wire::DataRequest& f) { f.offset = 0; }}) {
    auto bad = r;
    broken(bad);
    EXPECT_EQ(wire::DecodeDataRequest(wire::EncodeDataRequest(bad)).status().code(), Code::kProtocol);
  }
  auto past = wire::EncodeDataRequest(r);
  past[6] = 5;  // the op after FENCE
  EXPECT_EQ(wire::DecodeDataRequest(past).status().code(), Code::kProtocol);
  wire::DataResponse resp{wire::DataOp::kFence, 0, 0, Code::kOk, 0, 4};  // payload on a FENCE answer
  EXPECT_EQ(wire::DecodeDataResponse(wire::EncodeDataResponse(resp)).status().code(), Code::kProtocol);
  resp.length = 0;
  EXPECT_TRUE(wire::DecodeDataResponse(wire::EncodeDataResponse(resp)).ok());
}

TEST(HostPortTest, Parse) {
  auto a = net::ParseHostPort("10.77.1.2:5000");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "10.77.1.2");
  EXPECT_EQ(a->port, 5000);
  auto b = net::ParseHostPort("[::1]:80");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->host, "::1");
  EXPECT_EQ(b->ToString(), "[::1]:80");
  EXPECT_FALSE(net::ParseHostPort("nohost").ok());
  EXPECT_FALSE(net::ParseHostPort("h:99999").ok());
  EXPECT_FALSE(net::ParseHostPort("h:").ok());
}

// ---------------------------------------------------------------------------------------------
// Transfers

TEST_F(TcpTest, RandomSizesAndOffsets) {
  std::mt19937_64 rng(FreshSeed());
  std::vector<uint64_t> sizes = {1, 2, 7, 4095, 4096, 4097, 65536, (1 << 20) - 1, 1 << 20, (1 << 20) + 1,
                                 3 << 20, (9 << 20) + 17, 64ull << 20};
  for (int i = 0; i < 10; ++i) sizes.push_back(1 + rng() % (1ull << (1 + rng() % 25)));
  for (uint64_t len : sizes) {
    uint64_t off = rng() % (kBigSize - len + 1);
    RoundTrip(*client_, off, len);
    if (HasFatalFailure()) return;
  }
  EXPECT_GE(client_->stats().connects, 1u);
}

// The same random batches through the caller-driven path (parallel_min_bytes 0) and through
// the one-thread-per-lane path (requests cut at part boundaries): exact either way.
TEST_F(TcpTest, RandomBatchesOnBothPaths) {
  std::mt19937_64 rng(FreshSeed());
  for (uint64_t parallel_min : {uint64_t{0}, uint64_t{4096}}) {
    TcpClientOptions o;
    o.auth.cluster_secret = kSecret;
    o.lanes = 4;
    o.slice_bytes = 64 << 10;
    o.parallel_min_bytes = parallel_min;
    TcpClient c(o);
    for (int round = 0; round < 4; ++round) {
      SCOPED_TRACE(::testing::Message() << "parallel_min " << parallel_min << " round " << round);
      const int n = 1 + static_cast<int>(rng() % 40);
      std::vector<TcpRequest> reqs;
      std::vector<uint64_t> offs, lens;
      uint64_t at = rng() % 4096, total = 0;
      for (int i = 0; i < n; ++i) {
        uint64_t len = 1 + rng() % (rng() % 4 == 0 ? (3u << 20) : 70000u);
        offs.push_back(at);
        lens.push_back(len);
        at += len + rng() % 100;
        total += len;
      }
      ASSERT_LT(at, kBigSize);
      Buffer src(total), dst(total + 64);
      const uint64_t seed = FreshSeed();
      FillRandom(src.data, total, seed);
      std::memset(big_->data, 0xC3, at + 64);
      uint64_t pos = 0;
      for (int i = 0; i < n; ++i) {
        reqs.push_back({wire::DataOp::kWrite, kSeg, kKey, offs[i], src.data + pos, lens[i]});
        pos += lens[i];
      }
      auto w = c.Transfer(peer_, reqs, Soon());
      for (int i = 0; i < n; ++i) ASSERT_TRUE(w[i].ok()) << i << ": " << w[i].ToString();
      pos = 0;
      for (int i = 0; i < n; ++i) {
        ASSERT_EQ(std::memcmp(big_->data + offs[i], src.data + pos, lens[i]), 0) << "WRITE entry " << i;
        if (i + 1 < n) {
          ASSERT_TRUE(AllBytes(big_->data + offs[i] + lens[i], offs[i + 1] - offs[i] - lens[i], 0xC3));
        }
        pos += lens[i];
      }
      std::memset(dst.data, 0x5A, total + 64);
      pos = 0;
      for (int i = 0; i < n; ++i) {
        reqs[i].op = wire::DataOp::kRead;
        reqs[i].local = dst.data + pos;
        pos += lens[i];
      }
      auto r = c.Transfer(peer_, reqs, Soon());
      for (int i = 0; i < n; ++i) ASSERT_TRUE(r[i].ok()) << i << ": " << r[i].ToString();
      auto bad = FirstMismatch(dst.data, total, seed);
      ASSERT_FALSE(bad.has_value()) << "READ byte " << *bad;
      ASSERT_TRUE(AllBytes(dst.data + total, 64, 0x5A));
    }
  }
}

// A refusal in one part of a parallel call fails its own entry only.
TEST_F(TcpTest, ParallelCallReportsEachEntry) {
  Buffer src(8u << 20);
  FillRandom(src.data, src.size, FreshSeed());
  std::vector<TcpRequest> reqs{{wire::DataOp::kWrite, kSeg, kKey, 0, src.data, 4u << 20},
                               {wire::DataOp::kWrite, kSeg, kKey + 1, 0, src.data, 1u << 20},
                               {wire::DataOp::kWrite, kSeg, kKey, 5u << 20, src.data, 3u << 20}};
  auto res = client_->Transfer(peer_, reqs, Soon());
  EXPECT_TRUE(res[0].ok()) << res[0].ToString();
  EXPECT_EQ(res[1].code(), Code::kPermissionDenied) << res[1].ToString();
  EXPECT_TRUE(res[2].ok()) << res[2].ToString();
  EXPECT_EQ(std::memcmp(big_->data + (5u << 20), src.data, 3u << 20), 0);
}

// Lanes unused for idle_close_ms close (a process that once talked to many peers keeps no socket
// to each), by the explicit call and by the next call to any peer; a closed lane reconnects on
// its next use and the bytes still arrive.
TEST_F(TcpTest, IdleLanesCloseAndReconnectOnNextUse) {
  TcpClientOptions o;
  o.auth.cluster_secret = kSecret;
  o.lanes = 4;
  o.idle_close_ms = 200;
  TcpClient c(o);
  ASSERT_NO_FATAL_FAILURE(RoundTrip(c, 4096, 5u << 20));  // 5 MiB: every lane of the peer is used
  const size_t lanes = c.ConnectedLanes(peer_);
  ASSERT_GE(lanes, 1u);
  EXPECT_EQ(c.CloseIdleLanes(), 0u) << "lanes used just now are not idle";
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(c.CloseIdleLanes(), lanes);
  EXPECT_EQ(c.ConnectedLanes(peer_), 0u);
  EXPECT_EQ(c.stats().open_lanes, 0u);
  const Deadline until = Soon(10000);
  while (server_->connections() != 0 && !until.expired()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(server_->connections(), 0u) << "the server still holds the closed lanes";
  ASSERT_NO_FATAL_FAILURE(RoundTrip(c, 0, 64u << 10));  // reconnects
  EXPECT_GE(c.ConnectedLanes(peer_), 1u);

  // The next call to another peer closes the lanes to this one once they are idle.
  auto other = StartAnotherServer();
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const uint64_t closes_before = c.stats().idle_closes;
  std::vector<uint8_t> dst(4096);
  FillRandom(big_->data, 4096, 77);
  ASSERT_TRUE(c.Read(PeerAddr{"127.0.0.1", (*other)->port()}, kSeg, kKey, 0, dst.data(), 4096, Soon()).ok());
  EXPECT_FALSE(FirstMismatch(dst.data(), 4096, 77).has_value());
  EXPECT_EQ(c.ConnectedLanes(peer_), 0u);
  EXPECT_GT(c.stats().idle_closes, closes_before);
  EXPECT_EQ(c.stats().open_lanes, c.ConnectedLanes(PeerAddr{"127.0.0.1", (*other)->port()}));
  (*other)->Stop();
}

// With max_open_lanes, a call that starts at the cap first closes the least recently used idle
// lanes (to any peer); the peer whose lane went reconnects on its next use.
TEST_F(TcpTest, LaneCapClosesTheLeastRecentlyUsedIdleLanes) {
  TcpClientOptions o;
  o.auth.cluster_secret = kSecret;
  o.lanes = 1;
  o.max_open_lanes = 2;
  TcpClient c(o);
  std::vector<std::unique_ptr<TcpServer>> others;
  std::vector<PeerAddr> addrs = {peer_};
  for (int i = 0; i < 2; ++i) {
    auto started = StartAnotherServer();
    ASSERT_TRUE(started.ok()) << started.status().ToString();
    addrs.push_back(PeerAddr{"127.0.0.1", (*started)->port()});
    others.push_back(std::move(*started));
  }
  auto read_from = [&](const PeerAddr& at) {
    const uint64_t seed = FreshSeed();
    FillRandom(big_->data, 4096, seed);
    std::vector<uint8_t> dst(4096, 0xee);
    ASSERT_TRUE(c.Read(at, kSeg, kKey, 0, dst.data(), dst.size(), Soon()).ok());
    EXPECT_FALSE(FirstMismatch(dst.data(), dst.size(), seed).has_value());
  };
  ASSERT_NO_FATAL_FAILURE(read_from(addrs[0]));
  ASSERT_NO_FATAL_FAILURE(read_from(addrs[1]));
  EXPECT_EQ(c.stats().open_lanes, 2u);
  EXPECT_EQ(c.stats().cap_closes, 0u);
  ASSERT_NO_FATAL_FAILURE(read_from(addrs[2]));  // at the cap: the lane to addrs[0] goes first
  EXPECT_EQ(c.ConnectedLanes(addrs[0]), 0u);
  EXPECT_EQ(c.ConnectedLanes(addrs[1]), 1u);
  EXPECT_EQ(c.ConnectedLanes(addrs[2]), 1u);
  EXPECT_EQ(c.stats().cap_closes, 1u);
  ASSERT_NO_FATAL_FAILURE(read_from(addrs[0]));  // reconnects; now addrs[1]'s lane is the oldest
  EXPECT_EQ(c.ConnectedLanes(addrs[1]), 0u);
  EXPECT_EQ(c.ConnectedLanes(addrs[0]), 1u);
  EXPECT_EQ(c.stats().open_lanes, 2u);
  EXPECT_EQ(c.stats().cap_closes, 2u);
  for (auto& s : others) s->Stop();
}

TEST_F(TcpTest, DefaultLaneCapIsHalfTheOpenFileLimit) {
  rlimit lim{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &lim), 0);
  TcpClient c(TcpClientOptions{});
  if (lim.rlim_cur == RLIM_INFINITY) EXPECT_EQ(c.options().max_open_lanes, 0);
  else EXPECT_EQ(static_cast<rlim_t>(c.options().max_open_lanes), std::max<rlim_t>(1, lim.rlim_cur / 2));
}

TEST_F(TcpTest, SmallSlicesAcrossManyLanes) {
  auto c = MakeClient(kSecret, false, 4096);  // 5 MiB becomes 1280 slices over 4 lanes
  RoundTrip(*c, 12345, (5 << 20) + 3);
  EXPECT_EQ(c->ConnectedLanes(peer_), 4u);
}

TEST_F(TcpTest, BatchMixedWithOneRefusal) {
  std::mt19937_64 rng(FreshSeed());
  const int n = 200;
  std::vector<std::unique_ptr<Buffer>> bufs;
  std::vector<uint64_t> seeds;
  std::vector<TcpRequest> reqs;
  uint64_t next_off = 3;
  for (int i = 0; i < n; ++i) {
    uint64_t len = (i % 50 == 0) ? (3 << 20) + i : 1 + rng() % 8192;
    uint64_t off = next_off;  // disjoint regions
    next_off += len + 1 + rng() % 100;
    bufs.push_back(std::make_unique<Buffer>(len));
    seeds.push_back(FreshSeed());
    TcpRequest r;
    r.segment_id = kSeg;
    r.access_key = kKey;
    r.remote_offset = off;
    r.local = bufs.back()->data;
    r.len = len;
    if (i % 2 == 0) {
      r.op = wire::DataOp::kWrite;
      FillRandom(bufs.back()->data, len, seeds.back());
    } else {
      r.op = wire::DataOp::kRead;
      FillRandom(big_->data + off, len, seeds.back());
      std::memset(bufs.back()->data, 0x5A, len);
    }
    reqs.push_back(r);
  }
  reqs[57].access_key = kKey ^ 1;  // one entry with a wrong key
  auto st = client_->Transfer(peer_, reqs, Soon());
  ASSERT_EQ(st.size(), reqs.size());
  for (int i = 0; i < n; ++i) {
    SCOPED_TRACE(i);
    if (i == 57) {
      EXPECT_EQ(st[i].code(), Code::kPermissionDenied) << st[i].ToString();
      EXPECT_TRUE(AllBytes(bufs[i]->data, reqs[i].len, 0x5A));
      continue;
    }
    ASSERT_TRUE(st[i].ok()) << st[i].ToString();
    const uint8_t* got = reqs[i].op == wire::DataOp::kWrite ? big_->data + reqs[i].remote_offset : bufs[i]->data;
    EXPECT_FALSE(FirstMismatch(got, reqs[i].len, seeds[i]).has_value());
  }
}

TEST_F(TcpTest, ConcurrentThreads) {
  const int threads = 6;
  const uint64_t region = kBigSize / threads;
  std::atomic<int> failures{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(FreshSeed());
      for (int i = 0; i < 12; ++i) {
        uint64_t len = 1 + rng() % std::min<uint64_t>(region, 3 << 20);
        uint64_t off = t * region + rng() % (region - len + 1);
        uint64_t seed = FreshSeed();
        Buffer src(len), dst(len);
        FillRandom(src.data, len, seed);
        std::memset(dst.data, 0x5A, len);
        Status w = client_->Write(peer_, kSeg, kKey, off, src.data, len, Soon(60000));
        Status r = client_->Read(peer_, kSeg, kKey, off, dst.data, len, Soon(60000));
        if (!w.ok() || !r.ok() || FirstMismatch(dst.data, len, seed).has_value()) {
          ADD_FAILURE() << "thread " << t << " op " << i << ": " << w.ToString() << " / " << r.ToString();
          failures++;
          return;
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_LE(client_->ConnectedLanes(peer_), 4u);
}

// ---------------------------------------------------------------------------------------------
// Access checks

TEST_F(TcpTest, NotifyWithoutAHandlerIsRefusedAndProbesAnswer) {
  // The fixture's server takes no notifications: NOT_SUPPORTED, and the lane stays usable.
  auto payload = wire::EncodeNotification("a", "b");
  ASSERT_TRUE(payload.ok());
  EXPECT_EQ(client_->Notify(peer_, *payload, Soon()).code(), Code::kNotSupported);
  EXPECT_TRUE(client_->Notify(peer_, {}, Soon()).ok());  // a probe
  RoundTrip(*client_, 100, 5000);
}

TEST(TcpNotifyTest, DeliveredInOrderAfterTheWritesBeforeThem) {
  AccessTable table;
  std::vector<uint8_t> mem(1 << 20, 0);
  ASSERT_TRUE(table.Register({1, mem.data(), mem.size(), kKey, mem::kReadWrite}).ok());
  std::mutex mu;
  std::vector<std::pair<std::string, std::string>> got;
  std::vector<bool> data_was_there;
  const uint64_t seed = FreshSeed();
  TcpServerOptions so;
  so.host = "127.0.0.1";
  so.auth.cluster_secret = kSecret;
  so.on_notify = [&](std::string n, std::string m) {
    std::lock_guard g(mu);
    data_was_there.push_back(!FirstMismatch(mem.data(), mem.size(), seed).has_value());
    got.emplace_back(std::move(n), std::move(m));
    return OkStatus();
  };
  auto server = TcpServer::Start(so, &table);
  ASSERT_TRUE(server.ok());
  TcpClientOptions co;
  co.auth.cluster_secret = kSecret;
  TcpClient client(co);
  PeerAddr peer{"127.0.0.1", (*server)->port()};
  std::vector<uint8_t> src(mem.size());
  FillRandom(src.data(), src.size(), seed);
  ASSERT_TRUE(client.Write(peer, 1, kKey, 0, src.data(), src.size(), Soon()).ok());
  for (int i = 0; i < 3; ++i) {
    auto p = wire::EncodeNotification("n" + std::to_string(i), "m" + std::to_string(i));
    ASSERT_TRUE(p.ok());
    ASSERT_TRUE(client.Notify(peer, *p, Soon()).ok());
  }
  ASSERT_TRUE(client.Notify(peer, {}, Soon()).ok());  // a probe reaches no handler
  std::lock_guard g(mu);
  ASSERT_EQ(got.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(got[i].first, "n" + std::to_string(i));
    EXPECT_EQ(got[i].second, "m" + std::to_string(i));
    EXPECT_TRUE(data_was_there[i]);
  }
  // A malformed payload inside a well-formed frame is refused, not delivered.
  std::vector<uint8_t> broken{9, 0, 0, 0, 'x'};
  EXPECT_EQ(client.Notify(peer, broken, Soon()).code(), Code::kInvalidArgument);
  EXPECT_EQ(got.size(), 3u);
  (*server)->Stop();
}

TEST_F(TcpTest, RefusalsKeepTheConnection) {
  std::vector<uint8_t> buf(1 << 20, 0x5A);
  ASSERT_TRUE(client_->Read(peer_, kSeg, kKey, 0, buf.data(), 16, Soon()).ok());
  size_t lanes = client_->ConnectedLanes(peer_);

  Status s = client_->Read(peer_, kSeg, kKey + 1, 0, buf.data(), 16, Soon());
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  EXPECT_EQ(s.message().find("1234abcd"), std::string::npos) << "the key leaked into a message";
  s = client_->Read(peer_, kSeg, kKey, kBigSize - 8, buf.data(), 16, Soon());
  EXPECT_EQ(s.code(), Code::kOutOfRange) << s.ToString();
  s = client_->Read(peer_, 12345, kKey, 0, buf.data(), 16, Soon());
  EXPECT_EQ(s.code(), Code::kNotFound) << s.ToString();
  s = client_->Read(peer_, kSeg, kKey, UINT64_MAX - 4, buf.data(), 4, Soon());
  EXPECT_EQ(s.code(), Code::kOutOfRange) << s.ToString();

  // A refused WRITE of 1 MiB + a bit: the payload is drained, nothing lands in the segment.
  std::vector<uint8_t> before(ro_->data, ro_->data + kRoSize);
  std::vector<uint8_t> big((1 << 20) + 100, 0x77);
  s = client_->Write(peer_, kRoSeg, kRoKey, 0, big.data(), big.size(), Soon());
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  s = client_->Write(peer_, kSeg, kKey ^ 0xff, 0, big.data(), big.size(), Soon());
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  s = client_->Write(peer_, kSeg, kKey, kBigSize - 10, big.data(), 11, Soon());
  EXPECT_EQ(s.code(), Code::kOutOfRange) << s.ToString();
  EXPECT_TRUE(std::memcmp(before.data(), ro_->data, kRoSize) == 0);
  // Reading the read-only segment works.
  std::vector<uint8_t> got(kRoSize);
  ASSERT_TRUE(client_->Read(peer_, kRoSeg, kRoKey, 0, got.data(), kRoSize, Soon()).ok());
  EXPECT_TRUE(std::memcmp(got.data(), ro_->data, kRoSize) == 0);

  // The stream stayed in sync and no lane was reset by the refusals.
  EXPECT_EQ(client_->stats().lane_resets, 0u);
  EXPECT_GE(client_->ConnectedLanes(peer_), lanes);
  RoundTrip(*client_, 99, 70000);
  EXPECT_EQ(server_->stats().protocol_errors, 0u);
}

TEST_F(TcpTest, UnregisterRefusesLaterRequests) {
  std::vector<uint8_t> buf(64);
  ASSERT_TRUE(client_->Read(peer_, kRoSeg, kRoKey, 0, buf.data(), 64, Soon()).ok());
  ASSERT_TRUE(table_.Unregister(kRoSeg).ok());
  EXPECT_EQ(client_->Read(peer_, kRoSeg, kRoKey, 0, buf.data(), 64, Soon()).code(), Code::kNotFound);
  EXPECT_EQ(table_.Unregister(kRoSeg).code(), Code::kNotFound);
}

// ---------------------------------------------------------------------------------------------
// Authentication

TEST_F(TcpTest, WrongSecretIsRefusedAndOthersAreServed) {
  auto bad = MakeClient("another-secret");
  std::vector<uint8_t> buf(4096);
  Status s = bad->Read(peer_, kSeg, kKey, 0, buf.data(), buf.size(), Soon());
  EXPECT_EQ(s.code(), Code::kUnauthenticated) << s.ToString();
  EXPECT_EQ(s.message().find(kSecret), std::string::npos);
  EXPECT_EQ(s.message().find("another-secret"), std::string::npos);
  EXPECT_EQ(bad->ConnectedLanes(peer_), 0u);

  auto none = MakeClient("");
  s = none->Read(peer_, kSeg, kKey, 0, buf.data(), buf.size(), Soon());
  EXPECT_EQ(s.code(), Code::kUnauthenticated) << s.ToString();
  EXPECT_NE(s.message().find("WEFT_CLUSTER_SECRET"), std::string::npos) << s.message();

  auto none_allowed = MakeClient("", /*allow_empty=*/true);
  s = none_allowed->Read(peer_, kSeg, kKey, 0, buf.data(), buf.size(), Soon());
  EXPECT_EQ(s.code(), Code::kUnauthenticated) << s.ToString();

  RoundTrip(*client_, 5, 100000);
}

TEST_F(TcpTest, ForgedProofIsRefusedByTheServer) {
  // A client that skips checking the server and sends a made-up proof.
  auto fd = net::ConnectTcp(peer_, Soon());
  ASSERT_TRUE(fd.ok());
  uint8_t hello[net::kAuthHelloSize] = {};
  uint32_t magic = net::kAuthMagic;
  std::memcpy(hello, &magic, 4);
  hello[4] = net::kAuthVersion;
  ASSERT_TRUE(net::SendAllTcp(fd->get(), hello, sizeof hello, Soon(), "server").ok());
  uint8_t sh[net::kAuthServerHelloSize];
  ASSERT_TRUE(net::RecvAllTcp(fd->get(), sh, sizeof sh, Soon(), "server").ok());
  uint8_t proof[net::kAuthProofSize];
  FillRandom(proof, sizeof proof, FreshSeed());
  ASSERT_TRUE(net::SendAllTcp(fd->get(), proof, sizeof proof, Soon(), "server").ok());
  uint8_t result[4];
  ASSERT_TRUE(net::RecvAllTcp(fd->get(), result, 4, Soon(), "server").ok());
  EXPECT_EQ(result[0], static_cast<uint8_t>(Code::kUnauthenticated));
  // Then the server closes; a request sent anyway is never answered.
  uint8_t b;
  Status s = net::RecvAllTcp(fd->get(), &b, 1, Soon(), "server");
  EXPECT_EQ(s.code(), Code::kPeerDown) << s.ToString();
  EXPECT_GE(server_->stats().auth_failures, 1u);
  RoundTrip(*client_, 0, 4096);
}

TEST(TcpAuthTest, EmptySecretPolicy) {
  AccessTable table;
  TcpServerOptions so;
  so.host = "127.0.0.1";
  auto refused = TcpServer::Start(so, &table);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kUnauthenticated);
  EXPECT_NE(refused.status().message().find("WEFT_CLUSTER_SECRET"), std::string::npos);

  so.auth.allow_unauthenticated = true;  // both sides explicitly without a secret
  auto s = TcpServer::Start(so, &table);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  std::vector<uint8_t> mem(4096, 0x11);
  ASSERT_TRUE(table.Register({1, mem.data(), mem.size(), 5, mem::kReadWrite}).ok());
  TcpClientOptions co;
  co.auth.allow_unauthenticated = true;
  TcpClient c(co);
  std::vector<uint8_t> got(4096, 0);
  Status r = c.Read({"127.0.0.1", (*s)->port()}, 1, 5, 0, got.data(), got.size(), Soon());
  ASSERT_TRUE(r.ok()) << r.ToString();
  EXPECT_EQ(got, mem);
  TcpClientOptions co2;
  co2.auth.cluster_secret = "has-one";
  TcpClient c2(co2);
  EXPECT_EQ(c2.Read({"127.0.0.1", (*s)->port()}, 1, 5, 0, got.data(), 16, Soon()).code(), Code::kUnauthenticated);
}

TEST(TcpAuthTest, MacsDependOnRoleSecretAndNonces) {
  uint8_t a[32] = {1}, b[32] = {2};
  auto m1 = net::AuthMac("s", 'C', a, b);
  EXPECT_EQ(m1, net::AuthMac("s", 'C', a, b));
  EXPECT_NE(m1, net::AuthMac("s", 'S', a, b));
  EXPECT_NE(m1, net::AuthMac("t", 'C', a, b));
  EXPECT_NE(m1, net::AuthMac("s", 'C', b, a));
}

// ---------------------------------------------------------------------------------------------
// Hostile and broken peers

// Waits until the server closes fd (recv returns 0 or an error). false on timeout.
bool ClosedByServer(int fd, int ms = 10000) {
  auto until = Deadline::After(Millis(ms));
  uint8_t buf[4096];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, until.left_ms_for_poll());
    if (rc <= 0) return false;
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return true;
  }
}

TEST_F(TcpTest, GarbageAndTruncatedFramesCloseOnlyThatConnection) {
  std::mt19937_64 rng(FreshSeed());
  net::AuthOptions auth{kSecret, false};
  // 1. Garbage instead of a hello.
  {
    auto fd = net::ConnectTcp(peer_, Soon());
    ASSERT_TRUE(fd.ok());
    std::vector<uint8_t> junk(200);
    FillRandom(junk.data(), junk.size(), rng());
    ASSERT_TRUE(net::SendAllTcp(fd->get(), junk.data(), junk.size(), Soon(), "s").ok());
    EXPECT_TRUE(ClosedByServer(fd->get()));
  }
  // 2. Authenticated, then garbage.
  {
    auto fd = net::ConnectTcp(peer_, Soon());
    ASSERT_TRUE(fd.ok());
    ASSERT_TRUE(net::AuthenticateClient(fd->get(), auth, Soon(), "s").ok());
    std::vector<uint8_t> junk(4096);
    FillRandom(junk.data(), junk.size(), rng());
    ASSERT_TRUE(net::SendAllTcp(fd->get(), junk.data(), junk.size(), Soon(), "s").ok());
    EXPECT_TRUE(ClosedByServer(fd->get()));
  }
  // 3. Authenticated, then an oversized request.
  {
    auto fd = net::ConnectTcp(peer_, Soon());
    ASSERT_TRUE(fd.ok());
    ASSERT_TRUE(net::AuthenticateClient(fd->get(), auth, Soon(), "s").ok());
    wire::DataRequest r{wire::DataOp::kWrite, 0, 1, kSeg, kKey, 0, wire::kMaxDataLength + 1};
    auto b = wire::EncodeDataRequest(r);
    ASSERT_TRUE(net::SendAllTcp(fd->get(), b.data(), b.size(), Soon(), "s").ok());
    EXPECT_TRUE(ClosedByServer(fd->get()));
  }
  // 4. Truncated frames: half a header, and a WRITE whose payload stops short, then close.
  size_t errors_before = server_->stats().protocol_errors;
  for (int variant = 0; variant < 2; ++variant) {
    auto fd = net::ConnectTcp(peer_, Soon());
    ASSERT_TRUE(fd.ok());
    ASSERT_TRUE(net::AuthenticateClient(fd->get(), auth, Soon(), "s").ok());
    wire::DataRequest r{wire::DataOp::kWrite, 0, 1, kSeg, kKey, 0, 1000};
    auto b = wire::EncodeDataRequest(r);
    std::vector<uint8_t> bytes(b.begin(), b.begin() + (variant == 0 ? 20 : b.size()));
    if (variant == 1) bytes.resize(bytes.size() + 500, 0xEE);
    ASSERT_TRUE(net::SendAllTcp(fd->get(), bytes.data(), bytes.size(), Soon(), "s").ok());
  }
  // 5. Meanwhile and afterwards, a good client is served.
  RoundTrip(*client_, 777, 2 << 20);
  for (int i = 0; i < 100 && server_->stats().protocol_errors < errors_before + 2; ++i)
    std::this_thread::sleep_for(Millis(20));
  EXPECT_GE(server_->stats().protocol_errors, errors_before + 2);
  RoundTrip(*client_, 1, 1);
}

// A raw connection to the server: authenticated, speaking data frames by hand.
struct RawLane {
  net::UniqueFd fd;
  uint64_t next_id = 1;

  static Result<RawLane> Open(uint16_t port) {
    RawLane l;
    WEFT_ASSIGN_OR_RETURN(l.fd, net::ConnectTcp({"127.0.0.1", port}, Soon()));
    WEFT_RETURN_IF_ERROR(net::AuthenticateClient(l.fd.get(), {kSecret, false}, Soon(), "server"));
    return l;
  }
  Status Send(const wire::DataRequest& r, const void* payload = nullptr, size_t n = 0) {
    auto hdr = wire::EncodeDataRequest(r);
    WEFT_RETURN_IF_ERROR(net::SendAllTcp(fd.get(), hdr.data(), hdr.size(), Soon(), "server"));
    return n ? net::SendAllTcp(fd.get(), payload, n, Soon(), "server") : OkStatus();
  }
  // The answer to a request without payload in its response (WRITE, FENCE): its status.
  Status Answer() {
    wire::DataResponseBytes b;
    WEFT_RETURN_IF_ERROR(net::RecvAllTcp(fd.get(), b.data(), b.size(), Soon(), "server"));
    WEFT_ASSIGN_OR_RETURN(wire::DataResponse r, wire::DecodeDataResponse(b));
    std::string text(r.message_length, '\0');
    WEFT_RETURN_IF_ERROR(net::RecvAllTcp(fd.get(), text.data(), text.size(), Soon(), "server"));
    return Status(r.status, text);
  }
  Status Fence(uint64_t client, uint64_t generation) {
    WEFT_RETURN_IF_ERROR(Send({wire::DataOp::kFence, 0, 0, 0, client, generation, 0}));
    return Answer();
  }
  wire::DataRequest Write(uint64_t off, uint64_t len) {
    return {wire::DataOp::kWrite, 0, next_id++, kSeg, kKey, off, len};
  }
};

// The server side of fencing (wire/data.h, FENCE): once a newer session of a client opened, the
// bytes of its older connections' writes stop entering memory, even mid-payload; their answer is
// CANCELLED. Older generations and second FENCEs are refused; sessionless connections are not fenced.
TEST_F(TcpTest, ANewerSessionFencesOffTheWritesOfOlderOnes) {
  const uint64_t client = 0xC11E47;
  auto old_lane = RawLane::Open(server_->port());
  ASSERT_TRUE(old_lane.ok()) << old_lane.status().ToString();
  ASSERT_TRUE(old_lane->Fence(client, 3).ok());
  EXPECT_EQ(old_lane->Fence(client, 4).code(), Code::kInvalidArgument);  // one session per connection
  auto plain = RawLane::Open(server_->port());  // no session: never fenced
  ASSERT_TRUE(plain.ok());

  // Half a WRITE's payload arrives and lands; then the newer session opens.
  const uint64_t off = 1 << 20, len = 2 << 20;
  std::memset(big_->data + off, 0xA5, len);
  std::vector<uint8_t> stale(len, 0x11);
  ASSERT_TRUE(old_lane->Send(old_lane->Write(off, len), stale.data(), len / 2).ok());
  const auto until = Clock::now() + std::chrono::seconds(20);
  while (!AllBytes(big_->data + off, len / 2, 0x11) && Clock::now() < until) std::this_thread::sleep_for(Millis(2));
  ASSERT_TRUE(AllBytes(big_->data + off, len / 2, 0x11)) << "the first half never landed";
  auto new_lane = RawLane::Open(server_->port());
  ASSERT_TRUE(new_lane.ok());
  ASSERT_TRUE(new_lane->Fence(client, 4).ok());

  // The rest of the old WRITE is taken off the wire and dropped; it is answered CANCELLED.
  ASSERT_TRUE(net::SendAllTcp(old_lane->fd.get(), stale.data() + len / 2, len - len / 2, Soon(), "server").ok());
  Status cut = old_lane->Answer();
  EXPECT_EQ(cut.code(), Code::kCancelled) << cut.ToString();
  EXPECT_TRUE(AllBytes(big_->data + off + len / 2, len - len / 2, 0xA5)) << "the superseded write's bytes landed";
  // A later WRITE on the old connection is refused whole.
  ASSERT_TRUE(old_lane->Send(old_lane->Write(off, 4096), stale.data(), 4096).ok());
  EXPECT_EQ(old_lane->Answer().code(), Code::kCancelled);
  EXPECT_TRUE(AllBytes(big_->data + off + len / 2, len - len / 2, 0xA5));
  EXPECT_EQ(server_->stats().fenced, 2u);

  // The newer session writes; a sessionless connection too.
  std::vector<uint8_t> fresh(len);
  FillRandom(fresh.data(), len, FreshSeed());
  ASSERT_TRUE(new_lane->Send(new_lane->Write(off, len), fresh.data(), len).ok());
  ASSERT_TRUE(new_lane->Answer().ok());
  EXPECT_EQ(std::memcmp(big_->data + off, fresh.data(), len), 0);
  ASSERT_TRUE(plain->Send(plain->Write(off, 4096), stale.data(), 4096).ok());
  EXPECT_TRUE(plain->Answer().ok());
  EXPECT_TRUE(AllBytes(big_->data + off, 4096, 0x11));

  // An older generation than the newest is refused; the client's entry lives while a session does.
  auto late = RawLane::Open(server_->port());
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(late->Fence(client, 3).code(), Code::kCancelled);
  EXPECT_TRUE(late->Fence(client, 4).ok());  // the refused FENCE opened nothing: this one may
}

// The client's side: a WRITE that timed out with its lanes up raises the peer's generation, so
// the next call opens lanes of a newer session (and the server refuses the old lanes' bytes).
TEST_F(TcpTest, AClientOpensANewerSessionAfterAWriteTimedOut) {
  auto c = MakeClient(kSecret);
  std::vector<uint8_t> src(64 << 20, 0x22);
  ASSERT_TRUE(c->Write(peer_, kSeg, kKey, 0, src.data(), src.size(), Soon()).ok());  // every lane up
  const uint64_t connects = c->stats().connects;
  EXPECT_EQ(c->stats().superseded, 0u);
  // 64 MiB are not taken in half a millisecond: the deadline passes with the WRITE in flight.
  Status timed_out = c->Write(peer_, kSeg, kKey, 0, src.data(), src.size(), Deadline::After(std::chrono::microseconds(500)));
  ASSERT_EQ(timed_out.code(), Code::kTimeout) << timed_out.ToString();
  EXPECT_EQ(c->stats().superseded, 1u);
  std::vector<uint8_t> fresh(1 << 20);
  FillRandom(fresh.data(), fresh.size(), FreshSeed());
  ASSERT_TRUE(c->Write(peer_, kSeg, kKey, 0, fresh.data(), fresh.size(), Soon()).ok());
  EXPECT_GT(c->stats().connects, connects) << "no lane of the newer session was opened";
  std::this_thread::sleep_for(Millis(100));  // anything of the old lanes still arriving
  EXPECT_EQ(std::memcmp(big_->data, fresh.data(), fresh.size()), 0);
}

// A pool peer declared down: its owner-side PeerDown fences the writer's client (its id travels in
// the writer's endpoint blob), so what it still sends on the sessions it had is refused. A writer
// that lives on gets CANCELLED on such a lane once, then writes through a lane of a newer session.
TEST_F(TcpTest, AnOwnerThatDeclaresAWriterDownRefusesItsWritesUntilANewerSession) {
  auto serving = [] {
    TcpTransportOptions o;
    o.client.auth.cluster_secret = kSecret;
    o.client.lanes = 1;  // the write after the fence goes out on the lane the fence cut off
    TcpServerOptions so;
    so.host = "127.0.0.1";
    so.auth.cluster_secret = kSecret;
    o.serve = so;
    return TcpTransport::Create(o);
  };
  auto owner = serving();
  auto writer = serving();
  ASSERT_TRUE(owner.ok() && writer.ok());
  auto region_blob = (*owner)->ExportRegion(LocalRegion{1, big_->data, kBigSize});
  ASSERT_TRUE(region_blob.ok());
  auto owner_end = (*owner)->EndpointBlob();
  auto writer_end = (*writer)->EndpointBlob();
  ASSERT_TRUE(owner_end.ok() && writer_end.ok());
  auto to_owner = (*writer)->Connect(*owner_end);
  ASSERT_TRUE(to_owner.ok());
  auto region = (*writer)->ImportRegion(**to_owner, 0, kBigSize, *region_blob);
  ASSERT_TRUE(region.ok());
  auto write = [&](uint8_t* src, uint64_t len) {
    RemoteOp op{RemoteOpKind::kWrite, src, false, to_owner->get(), region->get(), 0, len};
    Status s;
    (*writer)->Post({&op, 1}, {&s, 1}, Soon());
    return s;
  };
  std::vector<uint8_t> first(64 << 10, 0x11), refused(64 << 10, 0x22), later(64 << 10);
  FillRandom(later.data(), later.size(), FreshSeed());
  ASSERT_TRUE(write(first.data(), first.size()).ok());

  auto to_writer = (*owner)->Connect(*writer_end);
  ASSERT_TRUE(to_writer.ok());
  (*owner)->PeerDown(**to_writer, Error(Code::kPeerDown, "declared down by the test"));
  Status s = write(refused.data(), refused.size());
  EXPECT_EQ(s.code(), Code::kCancelled) << s.ToString();
  EXPECT_EQ(std::memcmp(big_->data, first.data(), first.size()), 0) << "a fenced write landed";
  s = write(later.data(), later.size());
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(std::memcmp(big_->data, later.data(), later.size()), 0);
}

TEST_F(TcpTest, ServerStoppedMidTransfer) {
  const uint64_t len = 64ull << 20;
  Buffer src(len);
  std::atomic<bool> stop_now{false};
  Status last;
  int ok_count = 0;
  std::thread writer([&] {
    for (int i = 0; i < 1000; ++i) {
      uint64_t seed = FreshSeed();
      FillRandom(src.data, 4096, seed);  // a fresh head each time; the rest stays
      if (i == 1) stop_now = true;
      Status s = client_->Write(peer_, kSeg, kKey, 0, src.data, len, Soon(20000));
      if (!s.ok()) {
        last = s;
        return;
      }
      // OK means complete: the head we just wrote is in the segment.
      if (FirstMismatch(big_->data, 4096, seed).has_value()) {
        ADD_FAILURE() << "a WRITE returned OK but its bytes are not in the segment";
        return;
      }
      ++ok_count;
    }
  });
  while (!stop_now) std::this_thread::sleep_for(Millis(1));
  std::this_thread::sleep_for(Millis(5));
  server_->Stop();
  writer.join();
  EXPECT_TRUE(last.code() == Code::kPeerDown || last.code() == Code::kIo) << last.ToString();
  std::vector<uint8_t> buf(16);
  Status s = client_->Read(peer_, kSeg, kKey, 0, buf.data(), 16, Soon(20000));
  EXPECT_EQ(s.code(), Code::kPeerDown) << s.ToString();
}

// A server that accepts and then never says a word.
TEST(TcpDeadlineTest, SilentServerTimesOut) {
  auto lfd = net::ListenTcp("127.0.0.1", 0);
  ASSERT_TRUE(lfd.ok());
  uint16_t port = *net::LocalPort(lfd->get());
  TcpClientOptions o;
  o.auth.cluster_secret = kSecret;
  TcpClient c(o);
  std::vector<uint8_t> buf(4096);
  Status s = c.Read({"127.0.0.1", port}, 1, 1, 0, buf.data(), buf.size(), Deadline::After(Millis(300)));
  EXPECT_EQ(s.code(), Code::kTimeout) << s.ToString();
  // Nothing listening at all: PEER_DOWN, not a hang.
  lfd->Reset();
  s = c.Read({"127.0.0.1", port}, 1, 1, 0, buf.data(), buf.size(), Deadline::After(Millis(20000)));
  EXPECT_EQ(s.code(), Code::kPeerDown) << s.ToString();
}

// A server that authenticates, then answers the very first request only after the client's
// deadline has passed, with a correct-looking response. The client must time out, drop the
// lane, and serve its next call on a new connection without mistaking the late response.
TEST(TcpDeadlineTest, LateResponseIsNeverMistakenForANewOne) {
  auto lfd = net::ListenTcp("127.0.0.1", 0);
  ASSERT_TRUE(lfd.ok());
  uint16_t port = *net::LocalPort(lfd->get());
  net::AuthOptions auth{kSecret, false};
  std::atomic<bool> done{false};
  std::vector<uint8_t> mem(4096);
  const uint64_t seed = FreshSeed();
  FillRandom(mem.data(), mem.size(), seed);
  std::thread server([&] {
    int conn_index = 0;
    std::vector<std::thread> handlers;
    while (!done) {
      auto fd = net::AcceptTcp(lfd->get());
      if (!fd.ok() || !fd->valid()) {
        std::this_thread::sleep_for(Millis(2));
        continue;
      }
      int index = conn_index++;
      handlers.emplace_back([&, index, f = std::make_shared<net::UniqueFd>(std::move(*fd))] {
        if (!net::AuthenticateServer(f->get(), auth, Soon(), "c").ok()) return;
        for (;;) {
          uint8_t h[wire::kDataRequestSize];
          if (!net::RecvAllTcp(f->get(), h, sizeof h, Soon(5000), "c").ok()) return;
          auto r = wire::DecodeDataRequest(h);
          if (!r.ok()) return;
          wire::DataResponse resp{r->op, 0, r->request_id, Code::kOk, 0, r->length};
          if (r->op == wire::DataOp::kFence) {  // the lane's session: accepted at once
            auto fb = wire::EncodeDataResponse(resp);
            if (!net::SendAllTcp(f->get(), fb.data(), fb.size(), Soon(), "c").ok()) return;
            continue;
          }
          if (index == 0) std::this_thread::sleep_for(Millis(600));  // late
          auto rb = wire::EncodeDataResponse(resp);
          // The late answer carries different bytes, so a mix-up would show.
          std::vector<uint8_t> payload(r->length, index == 0 ? 0xEE : 0);
          if (index != 0) std::memcpy(payload.data(), mem.data(), std::min<size_t>(payload.size(), mem.size()));
          if (!net::SendAllTcp(f->get(), rb.data(), rb.size(), Soon(), "c").ok()) return;
          if (!net::SendAllTcp(f->get(), payload.data(), payload.size(), Soon(), "c").ok()) return;
        }
      });
    }
    for (auto& h : handlers) h.join();
  });
  TcpClientOptions o;
  o.auth.cluster_secret = kSecret;
  o.lanes = 1;
  TcpClient c(o);
  std::vector<uint8_t> got(4096, 0x5A);
  Status s = c.Read({"127.0.0.1", port}, 1, 1, 0, got.data(), got.size(), Deadline::After(Millis(250)));
  EXPECT_EQ(s.code(), Code::kTimeout) << s.ToString();
  EXPECT_GE(c.stats().lane_resets, 1u);
  std::this_thread::sleep_for(Millis(500));  // the late answer is sent now, to a closed lane
  std::fill(got.begin(), got.end(), 0x5A);
  s = c.Read({"127.0.0.1", port}, 1, 1, 0, got.data(), got.size(), Soon());
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_FALSE(FirstMismatch(got.data(), got.size(), seed).has_value());
  c.Forget({"127.0.0.1", port});  // closes the lane, so the fake server's handler ends
  done = true;
  server.join();
}

// ---------------------------------------------------------------------------------------------
// The transport

// The region contract (transport.h): one transport runs a data
// server and exports regions of this process, another connects to its endpoint blob, imports the
// region blobs and posts one-sided ops. Local ends are host memory here (tcp_staging_test.cc has
// device ends).
TEST_F(TcpTest, TransportPostsReadsAndWritesToRegions) {
  TcpTransportOptions oo;
  oo.client.auth.cluster_secret = kSecret;
  TcpServerOptions so;
  so.host = "127.0.0.1";
  so.auth.cluster_secret = kSecret;
  so.threads = 2;
  oo.serve = so;
  auto owner = TcpTransport::Create(oo);
  ASSERT_TRUE(owner.ok()) << owner.status().ToString();
  EXPECT_NE((*owner)->capabilities() & kCapRegions, 0u);
  EXPECT_EQ((*owner)->capabilities() & kCapDeviceMemory, 0u);  // no device copy given
  ASSERT_TRUE((*owner)->ListenPort().has_value());
  auto endpoint = (*owner)->EndpointBlob();
  ASSERT_TRUE(endpoint.ok()) << endpoint.status().ToString();
  // The fixture's memory, exported again under keys of the owner's own table.
  constexpr uint64_t kRegion = 1, kOther = 2;
  auto blob = (*owner)->ExportRegion(LocalRegion{kRegion, big_->data, kBigSize});
  ASSERT_TRUE(blob.ok()) << blob.status().ToString();
  auto other_blob = (*owner)->ExportRegion(LocalRegion{kOther, ro_->data, kRoSize});
  ASSERT_TRUE(other_blob.ok()) << other_blob.status().ToString();
  // A device region needs a device copy at the serving side.
  EXPECT_EQ((*owner)->ExportRegion(LocalRegion{3, ro_->data, 4096, /*device=*/true, 0}).status().code(),
            Code::kNotSupported);

  TcpTransportOptions io;
  io.client.auth.cluster_secret = kSecret;
  auto initiator = TcpTransport::Create(io);
  ASSERT_TRUE(initiator.ok()) << initiator.status().ToString();
  TcpTransport& t = **initiator;
  // Without `serve` it reaches peers and exports nothing.
  EXPECT_EQ(t.EndpointBlob().status().code(), Code::kNotSupported);
  EXPECT_EQ(t.ExportRegion(LocalRegion{1, ro_->data, 4096}).status().code(), Code::kNotSupported);
  EXPECT_FALSE(t.ListenPort().has_value());
  EXPECT_LT(t.RemoteCostNanos(4096), t.RemoteCostNanos(1 << 20));
  // Blobs that do not parse (empty, cut short, another format version) are PROTOCOL.
  EXPECT_EQ(t.Connect("").status().code(), Code::kProtocol);
  EXPECT_EQ(t.Connect(endpoint->substr(0, endpoint->size() - 1)).status().code(), Code::kProtocol);
  std::string other_version = *endpoint;
  other_version[0] ^= 0x40;
  EXPECT_EQ(t.Connect(other_version).status().code(), Code::kProtocol);
  auto peer = t.Connect(*endpoint);
  ASSERT_TRUE(peer.ok()) << peer.status().ToString();
  EXPECT_EQ(t.ImportRegion(**peer, 0, kBigSize, blob->substr(0, blob->size() - 1)).status().code(), Code::kProtocol);
  auto region = t.ImportRegion(**peer, reinterpret_cast<uint64_t>(big_->data), kBigSize, *blob);
  ASSERT_TRUE(region.ok()) << region.status().ToString();
  auto other = t.ImportRegion(**peer, reinterpret_cast<uint64_t>(ro_->data), kRoSize, *other_blob);
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  EXPECT_EQ((*region)->mapped, nullptr);  // only Post reaches it
  auto post = [&](RemoteOpKind kind, uint8_t* local, const ImportedRegion& r, uint64_t offset, uint64_t len,
                  bool local_device = false) {
    RemoteOp op{kind, local, local_device, peer->get(), &r, offset, len};
    std::vector<Status> res(1);
    t.Post({&op, 1}, res, Soon());
    return res[0];
  };

  // WRITE then READ at an odd offset, with poisoned guards on both sides.
  const uint64_t len = (5u << 20) + 321, off = 8191;
  Buffer src(len), dst(len + 64);
  uint64_t seed = FreshSeed();
  FillRandom(src.data, len, seed);
  std::memset(big_->data + off - 64, 0xA5, len + 128);
  Status s = post(RemoteOpKind::kWrite, src.data, **region, off, len);
  ASSERT_TRUE(s.ok()) << s.ToString();
  auto bad = FirstMismatch(big_->data + off, len, seed);
  EXPECT_FALSE(bad.has_value()) << "region byte " << *bad << " differs after WRITE";
  EXPECT_TRUE(AllBytes(big_->data + off - 64, 64, 0xA5)) << "WRITE touched bytes before its range";
  EXPECT_TRUE(AllBytes(big_->data + off + len, 64, 0xA5)) << "WRITE touched bytes after its range";
  seed = FreshSeed();
  FillRandom(big_->data + off, len, seed);
  std::memset(dst.data, 0x5A, len + 64);
  s = post(RemoteOpKind::kRead, dst.data, **region, off, len);
  ASSERT_TRUE(s.ok()) << s.ToString();
  bad = FirstMismatch(dst.data, len, seed);
  EXPECT_FALSE(bad.has_value()) << "READ byte " << *bad << " differs";
  EXPECT_TRUE(AllBytes(dst.data + len, 64, 0x5A)) << "READ wrote past its destination";

  // 64 ops in one Post: READs and WRITEs alternating, odd lengths (some over a client slice),
  // disjoint ranges with poisoned gaps between them.
  {
    std::mt19937_64 rng(FreshSeed());
    std::vector<uint64_t> offs, lens, seeds;
    uint64_t at = 1 + rng() % 4096, total = 0;
    for (int i = 0; i < 64; ++i) {
      const uint64_t n = i % 16 == 0 ? (1u << 20) + 1 + rng() % 65536 : 1 + rng() % 70000;
      offs.push_back(at);
      lens.push_back(n);
      seeds.push_back(FreshSeed());
      at += n + 1 + rng() % 100;
      total += n;
    }
    ASSERT_LT(at, kBigSize);
    Buffer local(total);
    std::memset(big_->data, 0xC3, at + 64);
    std::vector<RemoteOp> ops;
    uint64_t pos = 0;
    for (int i = 0; i < 64; ++i) {
      const bool write = i % 2 == 0;
      if (write) FillRandom(local.data + pos, lens[i], seeds[i]);
      else {
        FillRandom(big_->data + offs[i], lens[i], seeds[i]);
        std::memset(local.data + pos, 0x5A, lens[i]);
      }
      ops.push_back(RemoteOp{write ? RemoteOpKind::kWrite : RemoteOpKind::kRead, local.data + pos, false, peer->get(),
                             region->get(), offs[i], lens[i]});
      pos += lens[i];
    }
    std::vector<Status> results(ops.size());
    t.Post(ops, results, Soon());
    pos = 0;
    for (int i = 0; i < 64; ++i) {
      SCOPED_TRACE(::testing::Message() << "op " << i << (i % 2 == 0 ? " WRITE" : " READ"));
      ASSERT_TRUE(results[i].ok()) << results[i].ToString();
      const uint8_t* got = i % 2 == 0 ? big_->data + offs[i] : local.data + pos;
      EXPECT_FALSE(FirstMismatch(got, lens[i], seeds[i]).has_value());
      const uint64_t gap_end = i + 1 < 64 ? offs[i + 1] : at + 64;
      EXPECT_TRUE(AllBytes(big_->data + offs[i] + lens[i], gap_end - offs[i] - lens[i], 0xC3)) << "gap touched";
      pos += lens[i];
    }
  }

  // Past the region's end: the owner's access table refuses it OUT_OF_RANGE, nothing moves.
  std::memset(big_->data + kBigSize - 64, 0xA5, 64);
  std::memset(dst.data, 0x5A, 64);
  EXPECT_EQ(post(RemoteOpKind::kWrite, src.data, **region, kBigSize - 10, 20).code(), Code::kOutOfRange);
  EXPECT_EQ(post(RemoteOpKind::kRead, dst.data, **region, kBigSize - 10, 20).code(), Code::kOutOfRange);
  EXPECT_EQ(post(RemoteOpKind::kRead, dst.data, **region, kBigSize + 1, 1).code(), Code::kOutOfRange);
  EXPECT_TRUE(AllBytes(big_->data + kBigSize - 64, 64, 0xA5));
  EXPECT_TRUE(AllBytes(dst.data, 64, 0x5A));
  // A local device end and no device copy here (no GPU): NOT_SUPPORTED, nothing moves.
  std::memset(big_->data, 0xA5, 64);
  EXPECT_EQ(post(RemoteOpKind::kWrite, src.data, **region, 0, 64, /*local_device=*/true).code(), Code::kNotSupported);
  EXPECT_EQ(post(RemoteOpKind::kRead, dst.data, **region, 0, 64, /*local_device=*/true).code(), Code::kNotSupported);
  EXPECT_TRUE(AllBytes(big_->data, 64, 0xA5));
  EXPECT_TRUE(AllBytes(dst.data, 64, 0x5A));

  // Withdrawn by its owner: the region's segment is gone from the access table (NOT_FOUND), its
  // memory untouched; the other region is still served. Withdrawing again, or an unknown id, is a no-op.
  (*owner)->WithdrawRegion(kRegion);
  EXPECT_EQ(post(RemoteOpKind::kWrite, src.data, **region, 0, 64).code(), Code::kNotFound);
  EXPECT_EQ(post(RemoteOpKind::kRead, dst.data, **region, 0, 64).code(), Code::kNotFound);
  EXPECT_TRUE(AllBytes(big_->data, 64, 0xA5));
  EXPECT_TRUE(AllBytes(dst.data, 64, 0x5A));
  (*owner)->WithdrawRegion(kRegion);
  (*owner)->WithdrawRegion(999);
  seed = FreshSeed();
  FillRandom(src.data, kRoSize, seed);
  ASSERT_TRUE(post(RemoteOpKind::kWrite, src.data, **other, 0, kRoSize).ok());
  std::memset(dst.data, 0x5A, kRoSize);
  s = post(RemoteOpKind::kRead, dst.data, **other, 0, kRoSize);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_FALSE(FirstMismatch(ro_->data, kRoSize, seed).has_value());
  EXPECT_FALSE(FirstMismatch(dst.data, kRoSize, seed).has_value());

  // The owner gone (its data server stopped): PEER_DOWN, not a hang.
  owner->reset();
  EXPECT_EQ(post(RemoteOpKind::kRead, dst.data, **other, 0, 64).code(), Code::kPeerDown);
}

}  // namespace
}  // namespace weft::transport::tcp

namespace weft::transport::tcp {
namespace {

// Runs `call` on a thread, declares the peer down after `after`, and returns what the call
// returned, or nullopt if it still ran 10 s later (it would have waited for its 30 s deadline).
std::optional<Status> AbortedCall(TcpClient& c, const PeerAddr& peer, const std::function<Status()>& call,
                                  std::chrono::milliseconds after) {
  std::promise<Status> result;
  auto got = result.get_future();
  std::thread t([&] { result.set_value(call()); });
  std::this_thread::sleep_for(after);
  c.Abort(peer, Error(Code::kPeerDown, "{} was declared down by the test", peer.ToString()));
  const bool ended = got.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  t.join();  // once it ended or, on failure, at its deadline
  if (!ended) return std::nullopt;
  return got.get();
}

// Issue 15: a peer that froze answers no handshake; declaring it down ends the call at once.
TEST(TcpAbortTest, PeerDeclaredDownEndsAHandshakeAndLaterCallsUntilRevived) {
  auto lfd = net::ListenTcp("127.0.0.1", 0);  // accepts nothing: connects complete, nothing answers
  ASSERT_TRUE(lfd.ok());
  const PeerAddr peer{"127.0.0.1", *net::LocalPort(lfd->get())};
  TcpClientOptions o;
  o.auth.cluster_secret = kSecret;
  o.connect_timeout_ms = 30000;
  TcpClient c(o);
  std::vector<uint8_t> buf(4096);
  auto read = [&](Deadline d) { return c.Read(peer, 1, 1, 0, buf.data(), buf.size(), d); };
  auto s = AbortedCall(c, peer, [&] { return read(Deadline::After(Millis(30000))); }, Millis(200));
  ASSERT_TRUE(s.has_value()) << "the handshake waited out its deadline";
  EXPECT_EQ(s->code(), Code::kPeerDown) << s->ToString();
  EXPECT_NE(s->message().find("declared down by the test"), std::string::npos) << s->ToString();
  Status later = read(Deadline::After(Millis(30000)));
  EXPECT_EQ(later.code(), Code::kPeerDown) << later.ToString();
  c.Revive(peer);  // a peer rejoined at that address: it is tried again
  EXPECT_EQ(read(Deadline::After(Millis(300))).code(), Code::kTimeout);
}

// The case: lanes up and a large WRITE in flight to a peer that stops answering.
TEST(TcpAbortTest, PeerDeclaredDownEndsTransfersInFlight) {
  auto lfd = net::ListenTcp("127.0.0.1", 0);
  ASSERT_TRUE(lfd.ok());
  const PeerAddr peer{"127.0.0.1", *net::LocalPort(lfd->get())};
  net::AuthOptions auth{kSecret, false};
  std::atomic<bool> done{false};
  std::thread server([&] {  // authenticates every lane and opens its session, then never reads or answers again
    std::vector<net::UniqueFd> conns;
    while (!done) {
      auto fd = net::AcceptTcp(lfd->get());
      if (!fd.ok() || !fd->valid()) {
        std::this_thread::sleep_for(Millis(2));
        continue;
      }
      if (!net::AuthenticateServer(fd->get(), auth, Soon(), "c").ok()) continue;
      if (AnswerFence(fd->get()).ok()) conns.push_back(std::move(*fd));
    }
  });
  TcpClientOptions o;
  o.auth.cluster_secret = kSecret;
  TcpClient c(o);
  std::vector<uint8_t> big(64 << 20, 3);
  auto s = AbortedCall(
      c, peer, [&] { return c.Write(peer, 1, 1, 0, big.data(), big.size(), Deadline::After(Millis(30000))); },
      Millis(500));
  done = true;
  server.join();
  ASSERT_TRUE(s.has_value()) << "the transfer waited out its deadline";
  EXPECT_EQ(s->code(), Code::kPeerDown) << s->ToString();
  EXPECT_NE(s->message().find("declared down by the test"), std::string::npos) << s->ToString();
}

}  // namespace
}  // namespace weft::transport::tcp
