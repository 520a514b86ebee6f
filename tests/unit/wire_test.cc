// The codec, every control message, the frame header and the frame reassembler (fed by hand
// and over a real socketpair with descriptors attached).
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <random>
#include <thread>

#include <fmt/format.h>

#include "net/unix_socket.h"
#include "wire/codec.h"
#include "wire/control.h"

namespace weft::wire {
namespace {

std::mt19937_64& Rng() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  return rng;
}

std::vector<uint8_t> RandomBytes(size_t n) {
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(Rng()());
  return v;
}

TEST(Codec, LittleEndianLayout) {
  Writer w;
  w.U8(0x01);
  w.U16(0x0302);
  w.U32(0x07060504);
  w.U64(0x0f0e0d0c0b0a0908ULL);
  std::vector<uint8_t> expect = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  EXPECT_EQ(w.buffer(), expect);

  Reader r(w.buffer());
  uint8_t a;
  uint16_t b;
  uint32_t c;
  uint64_t d;
  ASSERT_TRUE(r.U8(a).ok());
  ASSERT_TRUE(r.U16(b).ok());
  ASSERT_TRUE(r.U32(c).ok());
  ASSERT_TRUE(r.U64(d).ok());
  EXPECT_EQ(a, 0x01);
  EXPECT_EQ(b, 0x0302);
  EXPECT_EQ(c, 0x07060504u);
  EXPECT_EQ(d, 0x0f0e0d0c0b0a0908ULL);
  EXPECT_TRUE(r.ExpectEnd().ok());
  EXPECT_EQ(r.U8(a).code(), Code::kProtocol);
}

TEST(Codec, BytesAndStringsRoundTrip) {
  auto bytes = RandomBytes(1000);
  Writer w;
  w.Bytes(bytes);
  w.String("pool-α");
  w.Bytes({});
  Reader r(w.buffer());
  std::vector<uint8_t> got, empty{9};
  std::string s;
  ASSERT_TRUE(r.Bytes(got, 1000).ok());
  ASSERT_TRUE(r.String(s, 64).ok());
  ASSERT_TRUE(r.Bytes(empty, 0).ok());
  EXPECT_EQ(got, bytes);
  EXPECT_EQ(s, "pool-α");
  EXPECT_TRUE(empty.empty());
  EXPECT_TRUE(r.ExpectEnd().ok());
}

TEST(Codec, LengthOverLimitIsProtocol) {
  Writer w;
  w.Bytes(RandomBytes(100));
  Reader r(w.buffer());
  std::vector<uint8_t> got;
  EXPECT_EQ(r.Bytes(got, 99).code(), Code::kProtocol);
}

TEST(Codec, LengthPastTheEndIsProtocol) {
  Writer w;
  w.U32(0xffffffffu);  // claims 4 GiB
  w.U8(7);
  for (size_t limit : {size_t{0xffffffffu}, size_t{1} << 40}) {
    Reader r(w.buffer());
    std::vector<uint8_t> got;
    EXPECT_EQ(r.Bytes(got, limit).code(), Code::kProtocol);
    Reader r2(w.buffer());
    std::string s;
    EXPECT_EQ(r2.String(s, limit).code(), Code::kProtocol);
  }
}

TEST(Codec, CountMustFitInTheBytesLeft) {
  Writer w;
  w.U32(1000);
  w.Raw(RandomBytes(8 * 999));
  Reader r(w.buffer());
  uint32_t n;
  EXPECT_EQ(r.Count(n, 8, 1u << 20).code(), Code::kProtocol);
  Reader r2(w.buffer());
  EXPECT_EQ(r2.Count(n, 8, 10).code(), Code::kProtocol);
}

TEST(Codec, BoolHasOneEncoding) {
  std::vector<uint8_t> two = {2};
  Reader r(two);
  bool b;
  EXPECT_EQ(r.Bool(b).code(), Code::kProtocol);
}

// ---- messages ----

// Blobs are opaque here: random bytes under names a pool peer and a newer one would use.
TransportBlobs SampleBlobs() {
  auto blob = [](size_t n) {
    auto b = RandomBytes(n);
    return std::string(b.begin(), b.end());
  };
  return {{"cuda", blob(17)}, {"future-rdma", blob(1 + Rng()() % 100)}, {"shm", blob(5)},
          {"tcp", blob(kMaxTransportBlobBytes)}};
}

Join SampleJoin() {
  return {"pool-" + std::to_string(Rng()() % 1000), Rng()(), "host:1234", static_cast<int32_t>(Rng()()), Rng()(),
          3, Rng()() | 1, static_cast<uint32_t>(Rng()() % (kMaxFdsPerFrame + 1)), SampleBlobs()};
}
JoinAck SampleJoinAck() {
  return {{Code::kOk, ""}, 5, 64, 1u << 20, "pool", 2000, Rng()(), Rng()()};
}
JoinAck SampleJoinAckError() {
  return {{Code::kMismatch, "pool 'a' vs 'b'"}, 0, 0, 0, "", 0, 0, 0};
}
PeerJoined SamplePeerJoined() {
  return {static_cast<uint32_t>(Rng()()), "peer", 77, Rng()(), 1, Rng()() | 1, 2, SampleBlobs()};
}
PeerGone SamplePeerGone() { return {3, true}; }
Heartbeat SampleHeartbeat() { return {}; }
Leave SampleLeave() { return {}; }
BarrierEnter SampleBarrierEnter() { return {Rng()()}; }
BarrierDone SampleBarrierDone() { return {Rng()(), {Code::kPeerDown, "rank 2 died"}}; }
AllgatherEnter SampleAllgatherEnter() { return {Rng()(), RandomBytes(33)}; }
AllgatherDone SampleAllgatherDone() {
  return {Rng()(), {}, {{0, RandomBytes(5)}, {2, {}}, {7, RandomBytes(17)}}};
}
CallRequest SampleCallRequest() { return {Rng()(), RandomBytes(40)}; }
CallReply SampleCallReply() { return {Rng()(), {}, RandomBytes(40)}; }
CallReply SampleCallReplyError() { return {Rng()(), {Code::kPoolFull, "no room"}, {}}; }
StatusPeer SampleStatusPeer(uint32_t rank, PeerState state) {
  return {rank, "peer-" + std::to_string(rank), state, static_cast<int32_t>(Rng()()), state == PeerState::kUp ? "" : "10.0.0.9",
          Rng()(), Rng()(), Rng()(), Rng()(), {Rng()(), Rng()(), Rng()()}, {Rng()(), 0, 0}, {"cuda", "shm", "tcp"},
          state == PeerState::kDown ? "no heartbeat for 2001 ms" : ""};
}
StatusReply SampleStatusReply() {
  StatusReply s;
  s.pool_name = "pool";
  s.rank_size = 1u << 20;
  s.max_ranks = 64;
  s.peer_timeout_ms = 2000;
  s.coordinator_host = "node1";
  s.uptime_ms = Rng()();
  s.peers_up = 2;
  s.peers_down = 1;
  s.peers_left = 1;
  s.joins_total = 5;
  s.join_refusals_total = 1;
  s.peers_down_total = 1;
  s.peers_left_total = 1;
  s.heartbeats_total = Rng()();
  s.connections = 3;
  s.host_usage = {Rng()(), Rng()(), 7};
  s.device_usage = {Rng()(), 0, 0};
  s.peers = {SampleStatusPeer(0, PeerState::kUp), SampleStatusPeer(2, PeerState::kDown),
             SampleStatusPeer(3, PeerState::kLeft), SampleStatusPeer(9, PeerState::kUp)};
  s.more = true;
  s.next_rank = 10;
  s.events = {{5, 1700000000000ull, Code::kMismatch, "refused connection 7: pool 'a' vs 'b'"},
              {1, 1700000000004ull, Code::kPeerDown, "rank 2 is down"}};
  return s;
}

template <typename T>
class MessageTest : public ::testing::Test {};

using Samples = ::testing::Types<Join, JoinAck, PeerJoined, PeerGone, Heartbeat, HeartbeatAck, Leave, BarrierEnter,
                                 BarrierDone, AllgatherEnter, AllgatherDone, CallRequest, CallReply, StatusRequest,
                                 StatusReply>;
TYPED_TEST_SUITE(MessageTest, Samples);

template <typename T>
std::vector<T> SamplesOf() {
  if constexpr (std::is_same_v<T, Join>) return {SampleJoin(), Join{}};
  if constexpr (std::is_same_v<T, JoinAck>) return {SampleJoinAck(), SampleJoinAckError()};
  if constexpr (std::is_same_v<T, PeerJoined>) return {SamplePeerJoined(), PeerJoined{}};
  if constexpr (std::is_same_v<T, PeerGone>) return {SamplePeerGone(), PeerGone{}};
  if constexpr (std::is_same_v<T, Heartbeat>) return {SampleHeartbeat()};
  if constexpr (std::is_same_v<T, HeartbeatAck>) return {HeartbeatAck{}};
  if constexpr (std::is_same_v<T, Leave>) return {SampleLeave()};
  if constexpr (std::is_same_v<T, BarrierEnter>) return {SampleBarrierEnter()};
  if constexpr (std::is_same_v<T, BarrierDone>) return {SampleBarrierDone(), BarrierDone{}};
  if constexpr (std::is_same_v<T, AllgatherEnter>) return {SampleAllgatherEnter(), AllgatherEnter{}};
  if constexpr (std::is_same_v<T, AllgatherDone>) return {SampleAllgatherDone(), AllgatherDone{}};
  if constexpr (std::is_same_v<T, CallRequest>) return {SampleCallRequest()};
  if constexpr (std::is_same_v<T, CallReply>) return {SampleCallReply(), SampleCallReplyError()};
  if constexpr (std::is_same_v<T, StatusRequest>) return {StatusRequest{}, StatusRequest{77, 1}};
  if constexpr (std::is_same_v<T, StatusReply>)
    return {SampleStatusReply(), StatusReply{{Code::kProtocol, "max_peers 0 is not 1..256"}}};
}

TYPED_TEST(MessageTest, RoundTrips) {
  for (const TypeParam& m : SamplesOf<TypeParam>()) {
    auto bytes = Encode(m);
    auto back = Decode<TypeParam>(bytes);
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_TRUE(*back == m);
  }
}

TYPED_TEST(MessageTest, EveryTruncationIsProtocol) {
  for (const TypeParam& m : SamplesOf<TypeParam>()) {
    auto bytes = Encode(m);
    for (size_t n = 0; n < bytes.size(); ++n) {
      auto r = Decode<TypeParam>(std::span<const uint8_t>(bytes).first(n));
      ASSERT_FALSE(r.ok()) << "decoded from " << n << " of " << bytes.size() << " bytes";
      EXPECT_EQ(r.status().code(), Code::kProtocol);
    }
  }
}

TYPED_TEST(MessageTest, TrailingBytesAreProtocol) {
  for (const TypeParam& m : SamplesOf<TypeParam>()) {
    auto bytes = Encode(m);
    bytes.push_back(0);
    auto r = Decode<TypeParam>(bytes);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kProtocol);
  }
}

TYPED_TEST(MessageTest, FrameCarriesTypeAndPayload) {
  for (const TypeParam& m : SamplesOf<TypeParam>()) {
    auto frame = EncodeFrame(m);
    ASSERT_TRUE(frame.ok());
    auto h = DecodeFrameHeader(std::span<const uint8_t>(*frame).first(kFrameHeaderSize));
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    EXPECT_EQ(h->type, TypeParam::kType);
    EXPECT_EQ(h->payload_size, frame->size() - kFrameHeaderSize);
    auto back = Decode<TypeParam>(std::span<const uint8_t>(*frame).subspan(kFrameHeaderSize));
    ASSERT_TRUE(back.ok());
    EXPECT_TRUE(*back == m);
  }
}

// Replaces the u32 at `offset` (a length prefix) in an encoded message.
std::vector<uint8_t> WithU32At(std::vector<uint8_t> bytes, size_t offset, uint32_t v) {
  for (int i = 0; i < 4; ++i) bytes[offset + i] = static_cast<uint8_t>(v >> (8 * i));
  return bytes;
}

TEST(Messages, OversizeLengthsAreProtocol) {
  // Join starts with the pool name's length.
  auto join = Encode(SampleJoin());
  EXPECT_EQ(Decode<Join>(WithU32At(join, 0, 0xffffffffu)).status().code(), Code::kProtocol);
  // A name over kMaxNameLength is refused even when the bytes are there.
  Join big = SampleJoin();
  big.pool_name.assign(kMaxNameLength + 1, 'x');
  EXPECT_EQ(Decode<Join>(Encode(big)).status().code(), Code::kProtocol);
  // CallRequest: id (8), then the payload length.
  auto call = Encode(SampleCallRequest());
  EXPECT_EQ(Decode<CallRequest>(WithU32At(call, 8, kMaxFramePayload + 1)).status().code(), Code::kProtocol);
  EXPECT_EQ(Decode<CallRequest>(WithU32At(call, 8, 41)).status().code(), Code::kProtocol);
  // AllgatherDone: epoch (8), code (4), message length (4) + message, entry count.
  AllgatherDone done = SampleAllgatherDone();
  auto gathered = Encode(done);
  EXPECT_EQ(Decode<AllgatherDone>(WithU32At(gathered, 16, 0x7fffffff)).status().code(), Code::kProtocol);
}

TEST(Messages, StrictValues) {
  auto gone = Encode(PeerGone{1, true});
  gone.back() = 2;  // a bool that is neither 0 nor 1
  EXPECT_EQ(Decode<PeerGone>(gone).status().code(), Code::kProtocol);

  auto done = Encode(BarrierDone{1, {Code::kOk, ""}});
  auto bad_code = WithU32At(done, 8, 999);
  EXPECT_EQ(Decode<BarrierDone>(bad_code).status().code(), Code::kProtocol);
  EXPECT_EQ(Decode<BarrierDone>(WithU32At(done, 8, 0xffffffffu)).status().code(), Code::kProtocol);

  AllgatherDone unsorted{1, {}, {{3, {}}, {3, {}}}};
  EXPECT_EQ(Decode<AllgatherDone>(Encode(unsorted)).status().code(), Code::kProtocol);

  // More descriptors than a frame can carry cannot be what came with it: refused at decode.
  PeerJoined too_many_fds{};
  too_many_fds.fd_count = kMaxFdsPerFrame + 1;
  auto decoded = Decode<PeerJoined>(Encode(too_many_fds));
  EXPECT_EQ(decoded.status().code(), Code::kProtocol);
  EXPECT_NE(decoded.status().message().find("descriptors"), std::string::npos) << decoded.status().ToString();
  Join join_fds{};
  join_fds.fd_count = kMaxFdsPerFrame + 1;
  EXPECT_EQ(Decode<Join>(Encode(join_fds)).status().code(), Code::kProtocol);

  // Blob names come strictly ascending, so a map has one encoding and no name comes twice: the
  // bytes of {"a", "b"} with the names swapped (or both "a") are refused.
  Join two{};
  two.transports = {{"a", "x"}, {"b", "y"}};
  auto bytes = Encode(two);
  ASSERT_TRUE(Decode<Join>(bytes).ok());
  const size_t b_name = bytes.size() - 6;  // each entry: u32 1, name, u32 1, blob
  const size_t a_name = b_name - 10;
  ASSERT_EQ(bytes[a_name], 'a');
  ASSERT_EQ(bytes[b_name], 'b');
  auto twice = bytes;
  twice[b_name] = 'a';
  EXPECT_EQ(Decode<Join>(twice).status().code(), Code::kProtocol);
  auto descending = bytes;
  std::swap(descending[a_name], descending[b_name]);
  EXPECT_EQ(Decode<Join>(descending).status().code(), Code::kProtocol);
}

// Status messages are read by `weft status` from whatever answers, and StatusRequest by the
// coordinator from any stranger: every bound is checked.
TEST(Messages, StatusLimits) {
  EXPECT_EQ(Decode<StatusRequest>(Encode(StatusRequest{0, 0})).status().code(), Code::kProtocol);
  EXPECT_EQ(Decode<StatusRequest>(Encode(StatusRequest{0, kMaxStatusPeersPerReply + 1})).status().code(),
            Code::kProtocol);
  EXPECT_TRUE(Decode<StatusRequest>(Encode(StatusRequest{0, kMaxStatusPeersPerReply})).ok());

  auto refused = [](const StatusReply& m, std::string_view why) {
    auto r = Decode<StatusReply>(Encode(m));
    ASSERT_FALSE(r.ok()) << why;
    EXPECT_EQ(r.status().code(), Code::kProtocol) << why;
  };
  StatusReply unsorted = SampleStatusReply();
  unsorted.peers[1].rank = 0;
  refused(unsorted, "rows not ascending by rank");
  StatusReply bad_path = SampleStatusReply();
  bad_path.peers[0].transports = {"Tcp"};
  refused(bad_path, "a path name outside [a-z0-9_-]");
  StatusReply paths_twice = SampleStatusReply();
  paths_twice.peers[0].transports = {"tcp", "tcp"};
  refused(paths_twice, "a path named twice");
  StatusReply long_reason = SampleStatusReply();
  long_reason.peers[1].reason.assign(kMaxStatusText + 1, 'x');
  refused(long_reason, "a reason past kMaxStatusText");
  StatusReply long_host = SampleStatusReply();
  long_host.peers[1].host.assign(kMaxStatusHost + 1, 'x');
  refused(long_host, "a host past kMaxStatusHost");
  StatusReply many_events = SampleStatusReply();
  many_events.events.resize(kMaxStatusEvents + 1);
  refused(many_events, "more events than the ring holds");
  StatusReply bad_event_code = SampleStatusReply();
  bad_event_code.events[0].code = static_cast<Code>(999);
  refused(bad_event_code, "an unknown code in an event");
  StatusReply too_many = SampleStatusReply();
  too_many.peers.clear();
  for (uint32_t r = 0; r <= kMaxStatusPeersPerReply; ++r) too_many.peers.push_back(SampleStatusPeer(r, PeerState::kUp));
  refused(too_many, "more rows than a page holds");
  too_many.peers.pop_back();
  EXPECT_TRUE(Decode<StatusReply>(Encode(too_many)).ok());

  // A peer's state byte is one of up, down, left. In a reply whose one row has empty strings,
  // it is followed by the row's pid, host, four u64s, two usages, path count and reason, then
  // the reply's more, next_rank and event count.
  StatusReply one;
  one.peers = {StatusPeer{}};
  auto bytes = Encode(one);
  const size_t state_at = bytes.size() - 1 - (4 + 4 + 8 * 4 + 24 * 2 + 4 + 4) - (1 + 4 + 4);
  ASSERT_EQ(bytes[state_at], static_cast<uint8_t>(PeerState::kUp));
  for (uint8_t bad : {0, 4, 255}) {
    auto b = bytes;
    b[state_at] = bad;
    EXPECT_EQ(Decode<StatusReply>(b).status().code(), Code::kProtocol) << int(bad);
  }
}

// A page at every limit (names of kMaxNameLength, every path, the longest host and reason, the
// full ring of events) still fits one frame, so paging by kMaxStatusPeersPerReply serves any pool.
TEST(Messages, AFullStatusPageFitsAFrame) {
  StatusReply page;
  page.pool_name.assign(kMaxNameLength, 'p');
  page.coordinator_host.assign(kMaxStatusHost, 'h');
  std::vector<std::string> paths;
  for (size_t i = 0; i < kMaxTransportBlobs; ++i) paths.push_back(fmt::format("{:0>32}", i));
  for (uint32_t r = 0; r < kMaxStatusPeersPerReply; ++r) {
    StatusPeer p = SampleStatusPeer(r, PeerState::kDown);
    p.peer_name.assign(kMaxNameLength, 'n');
    p.host.assign(kMaxStatusHost, 'h');
    p.reason.assign(kMaxStatusText, 'r');
    p.transports = paths;
    page.peers.push_back(std::move(p));
  }
  for (uint32_t i = 0; i < kMaxStatusEvents; ++i) page.events.push_back({i, i, Code::kPeerDown, std::string(kMaxStatusText, 'e')});
  auto frame = EncodeFrame(page);
  ASSERT_TRUE(frame.ok()) << frame.status().ToString();
  EXPECT_LT(frame->size(), kMaxFramePayload / 4) << "room to spare";
  auto back = Decode<StatusReply>(std::span<const uint8_t>(*frame).subspan(kFrameHeaderSize));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(*back == page);
}

// The limits on transport blobs, which the coordinator relies on when it passes them on unread:
// names 1..32 of [a-z0-9_-], blobs 1..4096 bytes, at most 32 of them. Each is refused by both
// decoders with PROTOCOL naming what is wrong, and by CheckTransportBlobs.
TEST(Messages, TransportBlobLimits) {
  auto refused = [](const TransportBlobs& blobs, std::string_view why) {
    Join j{};
    j.transports = blobs;
    PeerJoined p{};
    p.transports = blobs;
    auto dj = Decode<Join>(Encode(j));
    auto dp = Decode<PeerJoined>(Encode(p));
    EXPECT_EQ(dj.status().code(), Code::kProtocol) << why;
    EXPECT_EQ(dp.status().code(), Code::kProtocol) << why;
    EXPECT_EQ(CheckTransportBlobs(blobs).code(), Code::kProtocol) << why;
  };
  auto accepted = [](const TransportBlobs& blobs, std::string_view why) {
    Join j{};
    j.transports = blobs;
    auto dj = Decode<Join>(Encode(j));
    ASSERT_TRUE(dj.ok()) << why << ": " << dj.status().ToString();
    EXPECT_EQ(dj->transports, blobs);
  };
  for (const char* name : {"", "Shm", "tcp.v2", "rdma rc", "tcp/1", "\xff", "\x01tcp"})
    refused({{name, "x"}}, std::string("name '") + name + "'");
  refused({{std::string(kMaxTransportNameLength + 1, 'a'), "x"}}, "a name of 33 characters");
  accepted({{std::string(kMaxTransportNameLength, 'a'), "x"}, {"0-9_z", "y"}}, "names at the limit");
  refused({{"tcp", ""}}, "an empty blob");
  refused({{"tcp", std::string(kMaxTransportBlobBytes + 1, 'x')}}, "a blob of 4097 bytes");
  accepted({{"tcp", std::string(kMaxTransportBlobBytes, 'x')}}, "a blob of 4096 bytes");
  TransportBlobs many;
  for (size_t i = 0; i < kMaxTransportBlobs; ++i) many["t" + std::to_string(i)] = "x";
  accepted(many, "32 blobs");
  many["t32"] = "x";
  refused(many, "33 blobs");
}

TEST(FrameHeader, RejectsBadHeaders) {
  FrameHeader h{kControlVersion, MessageType::kCallReply, 1234};
  auto good = EncodeFrameHeader(h);
  ASSERT_EQ(good.size(), kFrameHeaderSize);
  auto back = DecodeFrameHeader(good);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(*back == h);

  auto magic = good;
  magic[0] ^= 0xff;
  EXPECT_EQ(DecodeFrameHeader(magic).status().code(), Code::kProtocol);
  constexpr uint16_t v = kControlVersion;
  EXPECT_EQ(DecodeFrameHeader(EncodeFrameHeader({static_cast<uint16_t>(v + 1), MessageType::kJoin, 0})).status().code(), Code::kProtocol);
  EXPECT_EQ(DecodeFrameHeader(EncodeFrameHeader({static_cast<uint16_t>(v - 1), MessageType::kJoin, 0})).status().code(), Code::kProtocol)
      << "an older peer (with transport fields instead of blobs) is refused, not misread";
  static_assert(kControlVersion == 5,
                "a v4 coordinator does not answer status requests, a v3 one never answers heartbeats, a Join of v2 "
                "carried memfd/VMM/tcp fields: all are refused above");
  EXPECT_EQ(DecodeFrameHeader(EncodeFrameHeader({v, static_cast<MessageType>(0), 0})).status().code(),
            Code::kProtocol);
  EXPECT_EQ(DecodeFrameHeader(EncodeFrameHeader({v, static_cast<MessageType>(16), 0})).status().code(),
            Code::kProtocol);
  EXPECT_TRUE(DecodeFrameHeader(EncodeFrameHeader({v, MessageType::kHeartbeatAck, 0})).ok());
  EXPECT_TRUE(DecodeFrameHeader(EncodeFrameHeader({v, MessageType::kStatusRequest, 0})).ok());
  EXPECT_TRUE(DecodeFrameHeader(EncodeFrameHeader({v, MessageType::kStatusReply, 0})).ok());
  EXPECT_EQ(DecodeFrameHeader(EncodeFrameHeader({v, MessageType::kJoin, kMaxFramePayload + 1})).status().code(),
            Code::kProtocol);
  EXPECT_TRUE(DecodeFrameHeader(EncodeFrameHeader({v, MessageType::kJoin, kMaxFramePayload})).ok());
  for (size_t n = 0; n < kFrameHeaderSize; ++n) {
    EXPECT_EQ(DecodeFrameHeader(std::span<const uint8_t>(good).first(n)).status().code(), Code::kProtocol);
  }
  good.push_back(0);
  EXPECT_EQ(DecodeFrameHeader(good).status().code(), Code::kProtocol);
}

TEST(FrameHeader, OversizePayloadCannotBeFramed) {
  std::vector<uint8_t> big(kMaxFramePayload + 1);
  EXPECT_EQ(MakeFrame(MessageType::kCallRequest, big).status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace weft::wire

namespace weft::net {
namespace {

using wire::MessageType;

std::vector<uint8_t> Frame(const wire::CallRequest& m) { return *wire::EncodeFrame(m); }

UniqueFd Memfd(uint8_t marker) {
  UniqueFd fd(::memfd_create("wire_test", MFD_CLOEXEC));
  EXPECT_TRUE(fd.valid());
  EXPECT_EQ(::write(fd.get(), &marker, 1), 1);
  return fd;
}

uint8_t MarkerOf(int fd) {
  uint8_t b = 0;
  EXPECT_EQ(::pread(fd, &b, 1, 0), 1);
  return b;
}

TEST(FrameReader, ReassemblesByteByByte) {
  std::vector<wire::CallRequest> sent;
  std::vector<uint8_t> stream;
  for (int i = 0; i < 5; ++i) {
    sent.push_back({static_cast<uint64_t>(i), wire::RandomBytes(i * 37)});
    auto f = Frame(sent.back());
    stream.insert(stream.end(), f.begin(), f.end());
  }
  FrameReader reader;
  std::vector<wire::CallRequest> got;
  for (uint8_t b : stream) {
    ASSERT_TRUE(reader.Feed(std::span<const uint8_t>(&b, 1)).ok());
    auto f = reader.Next();
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    if (f->has_value()) {
      EXPECT_EQ((*f)->header.type, MessageType::kCallRequest);
      auto m = wire::Decode<wire::CallRequest>((*f)->payload);
      ASSERT_TRUE(m.ok());
      got.push_back(*m);
      EXPECT_FALSE(reader.Next()->has_value());
    }
  }
  ASSERT_EQ(got.size(), sent.size());
  for (size_t i = 0; i < sent.size(); ++i) EXPECT_TRUE(got[i] == sent[i]);
  EXPECT_EQ(reader.buffered(), 0u);
}

TEST(FrameReader, BadHeaderIsReportedBeforeThePayload) {
  FrameReader reader;
  auto garbage = wire::RandomBytes(wire::kFrameHeaderSize);
  garbage[0] = 'X';
  ASSERT_TRUE(reader.Feed(garbage).ok());
  auto f = reader.Next();
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), Code::kProtocol);
  EXPECT_FALSE(reader.Feed(garbage).ok());  // the stream stays failed
}

TEST(FrameReader, DescriptorsGoWithTheFrameOfTheirLastByte) {
  auto a = Frame({1, wire::RandomBytes(10)});
  auto b = Frame({2, wire::RandomBytes(10)});
  // One read holds all of `a` and the first half of `b`, with b's descriptor; then the rest.
  std::vector<uint8_t> first(a);
  first.insert(first.end(), b.begin(), b.begin() + 8);
  std::vector<UniqueFd> fds;
  fds.push_back(Memfd(0xb));
  FrameReader reader;
  ASSERT_TRUE(reader.Feed(first, std::move(fds)).ok());
  ASSERT_TRUE(reader.Feed(std::span<const uint8_t>(b).subspan(8)).ok());
  auto fa = reader.Next();
  ASSERT_TRUE(fa.ok() && fa->has_value());
  EXPECT_TRUE((*fa)->fds.empty());
  auto fb = reader.Next();
  ASSERT_TRUE(fb.ok() && fb->has_value());
  ASSERT_EQ((*fb)->fds.size(), 1u);
  EXPECT_EQ(MarkerOf((*fb)->fds[0].get()), 0xb);
}

TEST(FrameReader, DescriptorsInTheMiddleOfAFrameAreProtocol) {
  auto a = Frame({1, wire::RandomBytes(10)});
  FrameReader reader;
  ASSERT_TRUE(reader.Feed(std::span<const uint8_t>(a).first(5)).ok());
  std::vector<UniqueFd> fds;
  fds.push_back(Memfd(1));
  ASSERT_TRUE(reader.Feed(std::span<const uint8_t>(a).subspan(5), std::move(fds)).ok());
  auto f = reader.Next();
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), Code::kProtocol);
}

TEST(UnixSocket, FramesAndDescriptorsOverASocketpair) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd tx(sv[0]), rx(sv[1]);
  constexpr int kFrames = 64;
  std::thread sender([&] {
    for (int i = 0; i < kFrames; ++i) {
      // Some frames are large, so they span several reads and kernel segments.
      auto f = Frame({static_cast<uint64_t>(i), wire::RandomBytes(i % 3 == 0 ? 300000 : 50)});
      std::vector<UniqueFd> mine;
      std::vector<int> raw;
      if (i % 2 == 0) {
        mine.push_back(Memfd(static_cast<uint8_t>(i)));
        raw.push_back(mine.back().get());
      }
      ASSERT_TRUE(SendAll(tx.get(), f, raw, Deadline::After(std::chrono::seconds(60))).ok());
    }
  });
  FrameReader reader;
  int got = 0;
  while (got < kFrames) {
    pollfd p{rx.get(), POLLIN, 0};
    ASSERT_GT(::poll(&p, 1, 60000), 0);
    auto st = reader.ReadOnce(rx.get());
    ASSERT_TRUE(st.ok()) << st.status().ToString();
    ASSERT_NE(*st, FrameReader::ReadState::kClosed);
    for (;;) {
      auto f = reader.Next();
      ASSERT_TRUE(f.ok()) << f.status().ToString();
      if (!f->has_value()) break;
      auto m = wire::Decode<wire::CallRequest>((*f)->payload);
      ASSERT_TRUE(m.ok());
      EXPECT_EQ(m->request_id, static_cast<uint64_t>(got));
      if (got % 2 == 0) {
        ASSERT_EQ((*f)->fds.size(), 1u) << "frame " << got;
        EXPECT_EQ(MarkerOf((*f)->fds[0].get()), static_cast<uint8_t>(got));
      } else {
        EXPECT_TRUE((*f)->fds.empty()) << "frame " << got;
      }
      ++got;
    }
  }
  sender.join();
  tx.Reset();
  pollfd p{rx.get(), POLLIN, 0};
  ASSERT_GT(::poll(&p, 1, 60000), 0);
  auto st = reader.ReadOnce(rx.get());
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(*st, FrameReader::ReadState::kClosed);
}

TEST(UnixSocket, SendToAClosedPeerIsAnErrorNotASignal) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  UniqueFd tx(sv[0]);
  ::close(sv[1]);
  auto f = Frame({1, {}});
  Status s = SendAll(tx.get(), f, {}, Deadline::After(std::chrono::seconds(10)));
  EXPECT_EQ(s.code(), Code::kUnavailable);
}

}  // namespace
}  // namespace weft::net
