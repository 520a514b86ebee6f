// The store's service-call codec: round trips with random contents, and every way a message
// can be malformed refused with PROTOCOL.
#include <gtest/gtest.h>

#include <random>

#include "api/bm/alloc_service.h"
#include "api/store/protocol.h"

namespace weft::store {
namespace {

constexpr size_t kMaxMessageBytes = 4096;  // what protocol.cc allows for error text


class Random {
 public:
  explicit Random(uint32_t seed) : gen_(seed) {}

  uint64_t U64() { return gen_(); }
  uint32_t Below(uint32_t n) { return static_cast<uint32_t>(gen_() % n); }
  bool Bool() { return Below(2) == 1; }
  std::string Bytes(size_t min, size_t max) {
    std::string s(min + Below(static_cast<uint32_t>(max - min + 1)), '\0');
    for (auto& c : s) c = static_cast<char>(Below(256));
    return s;
  }
  std::vector<std::string> Keys() {
    std::vector<std::string> keys(1 + Below(20));
    for (auto& key : keys) key = Bytes(1, Below(8) == 0 ? kMaxKeyBytes : 40);
    return keys;
  }
  PlaceOptions Place() {
    return {1 + Below(kMaxReplicas), Bool(), Bool(), static_cast<int32_t>(U64())};
  }
  // A result a describe may give: found (in memory, on a disk or both) or not.
  KeyResult OneDescribed() {
    KeyResult r;
    if (Below(4) == 0) {
      r.status = Status(Code::kNotFound, Bytes(0, 60));
      return r;
    }
    r.size = U64();
    r.replicas.resize(Below(kMaxReplicas + 1));
    for (auto& replica : r.replicas) replica = {static_cast<uint32_t>(U64()), U64()};
    r.id = U64();
    r.disk_rank = r.replicas.empty() || Bool() ? static_cast<int32_t>(Below(1u << 31)) : -1;
    return r;
  }
  KeyResult OneResult() {
    KeyResult r;
    r.status = Status(static_cast<Code>(Below(static_cast<uint32_t>(kLastCode) + 1)), Bytes(0, 60));
    r.size = U64();
    r.replicas.resize(Below(kMaxReplicas + 1));
    for (auto& replica : r.replicas) replica = {static_cast<uint32_t>(U64()), U64()};
    r.lease_ms = static_cast<uint32_t>(U64());
    r.exists = Bool();
    r.id = U64();
    r.disk_rank = Bool() ? -1 : static_cast<int32_t>(Below(1u << 31));
    return r;
  }

  // One value per key for an inline put, each of one to three parts (some empty); the values
  // live in the Random (the spans point into them) until the next call.
  std::vector<std::vector<Span>> InlineValues(size_t keys) {
    held_.clear();
    held_.reserve(keys * 3);
    std::vector<std::vector<Span>> values(keys);
    for (auto& parts : values) {
      const size_t n = 1 + Below(3);
      for (size_t p = 0; p < n; ++p) {
        held_.push_back(Bytes(0, Below(8) == 0 ? 4000 : 50));
        parts.push_back({held_.back().data(), held_.back().size()});
      }
    }
    return values;
  }
  // A result an inline put may give: written and ended, placed for its writer, or failed.
  KeyResult OneInline() {
    KeyResult r;
    if (Below(4) == 0) {
      r.status = Status(Code::kAlreadyExists, Bytes(0, 60));
      return r;
    }
    r.replicas.resize(1 + Below(kMaxReplicas));
    for (auto& replica : r.replicas) replica = {static_cast<uint32_t>(U64()), U64()};
    r.id = U64();
    r.exists = Bool();
    return r;
  }

 private:
  std::mt19937_64 gen_;
  std::vector<std::string> held_;
};

// The bytes of an inline value's parts, laid end to end.
std::vector<uint8_t> Joined(const std::vector<Span>& parts) {
  std::vector<uint8_t> out;
  for (const Span& p : parts) {
    const auto* b = static_cast<const uint8_t*>(p.data);
    out.insert(out.end(), b, b + p.size);
  }
  return out;
}

void ExpectProtocol(const Status& status, const std::string& what) {
  EXPECT_EQ(status.code(), Code::kProtocol) << what << ": " << status.ToString();
}

// Every strict prefix of a valid request fails, and so does one more byte.
void ExpectRequestStrict(const std::vector<uint8_t>& msg) {
  ASSERT_TRUE(DecodeStoreRequest(msg).ok());
  for (size_t cut = 0; cut < msg.size(); ++cut) {
    ExpectProtocol(DecodeStoreRequest({msg.data(), cut}).status(), "cut at " + std::to_string(cut));
  }
  auto longer = msg;
  longer.push_back(0);
  ExpectProtocol(DecodeStoreRequest(longer).status(), "trailing byte");
}

std::vector<std::vector<uint8_t>> SampleRequests(Random& rnd) {
  auto keys = rnd.Keys();
  std::vector<uint64_t> sizes(keys.size());
  for (auto& s : sizes) s = rnd.U64();
  return {EncodePutStart(keys, sizes, rnd.Place(), rnd.Bool(), rnd.U64()),
          EncodePutInline(keys, rnd.InlineValues(keys.size()), rnd.Place(), rnd.Bool()),
          EncodeKeysCall(StoreOp::kPutEnd, keys),
          EncodeKeysCall(StoreOp::kPutEndOnDisk, keys),
          EncodeKeysCall(StoreOp::kPutRevoke, keys),
          EncodeKeysCall(StoreOp::kGet, keys),
          EncodeKeysCall(StoreOp::kExists, keys),
          EncodeKeysCall(StoreOp::kDescribe, keys),
          EncodeKeysCall(StoreOp::kRemove, keys, rnd.Bool()),
          EncodeRemoveRegex(rnd.Bytes(0, 30), rnd.Bool()),
          EncodeRemoveAll(rnd.Bool()),
          EncodeStatsCall(),
          EncodePingCall()};
}

TEST(StoreProtocol, PutStartRoundTrips) {
  Random rnd(1);
  for (int i = 0; i < 50; ++i) {
    auto keys = rnd.Keys();
    std::vector<uint64_t> sizes(keys.size());
    for (auto& s : sizes) s = rnd.U64();
    PlaceOptions place = rnd.Place();
    bool upsert = rnd.Bool();
    const uint64_t promote = rnd.U64();
    auto req = DecodeStoreRequest(EncodePutStart(keys, sizes, place, upsert, promote));
    ASSERT_TRUE(req.ok()) << req.status().ToString();
    EXPECT_EQ(req->op, StoreOp::kPutStart);
    EXPECT_EQ(req->keys, keys);
    EXPECT_EQ(req->sizes, sizes);
    EXPECT_EQ(req->place.replicas, place.replicas);
    EXPECT_EQ(req->place.soft_pin, place.soft_pin);
    EXPECT_EQ(req->place.hard_pin, place.hard_pin);
    EXPECT_EQ(req->place.preferred_rank, place.preferred_rank);
    EXPECT_EQ(req->upsert, upsert);
    EXPECT_EQ(req->promote_id, promote);
  }
}

TEST(StoreProtocol, PutInlineRoundTrips) {
  Random rnd(11);
  for (int i = 0; i < 50; ++i) {
    auto keys = rnd.Keys();
    auto values = rnd.InlineValues(keys.size());
    PlaceOptions place = rnd.Place();
    bool upsert = rnd.Bool();
    auto req = DecodeStoreRequest(EncodePutInline(keys, values, place, upsert));
    ASSERT_TRUE(req.ok()) << req.status().ToString();
    EXPECT_EQ(req->op, StoreOp::kPutInline);
    EXPECT_EQ(req->keys, keys);
    ASSERT_EQ(req->values.size(), keys.size());
    for (size_t k = 0; k < keys.size(); ++k) EXPECT_EQ(req->values[k], Joined(values[k])) << "value " << k;
    EXPECT_EQ(req->place.replicas, place.replicas);
    EXPECT_EQ(req->place.soft_pin, place.soft_pin);
    EXPECT_EQ(req->place.hard_pin, place.hard_pin);
    EXPECT_EQ(req->place.preferred_rank, place.preferred_rank);
    EXPECT_EQ(req->upsert, upsert);
  }
}

// Lengths the encoder would never write, built by hand: the decoder trusts none of them.
TEST(StoreProtocol, MalformedInlinePutsAreProtocolErrors) {
  const std::vector<std::string> keys{"a", "b"};
  std::vector<uint8_t> one(10, 1), two(20, 2);
  const std::vector<std::vector<Span>> values{{{one.data(), one.size()}}, {{two.data(), two.size()}}};
  const auto good = EncodePutInline(keys, values, {}, false);
  ExpectRequestStrict(good);  // every truncation, and a trailing byte
  // Header (3), keys: count (4) + 2 x (length 4 + 1 byte), then the value count at offset 17.
  const size_t values_at = 3 + 4 + 2 * 5;
  auto patch_u32 = [](std::vector<uint8_t> msg, size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) msg[at + i] = static_cast<uint8_t>(v >> (8 * i));
    return msg;
  };
  ExpectProtocol(DecodeStoreRequest(patch_u32(good, values_at, 1)).status(), "fewer values than keys");
  ExpectProtocol(DecodeStoreRequest(patch_u32(good, values_at, 3)).status(), "more values than keys");
  ExpectProtocol(DecodeStoreRequest(patch_u32(good, values_at, 0xffffffffu)).status(), "a huge value count");
  const size_t first_len = values_at + 4;
  ExpectProtocol(DecodeStoreRequest(patch_u32(good, first_len, 11)).status(), "a length one past the value");
  ExpectProtocol(DecodeStoreRequest(patch_u32(good, first_len, 9)).status(), "a length one short of the value");
  ExpectProtocol(DecodeStoreRequest(patch_u32(good, first_len, 0xffffffffu)).status(), "a huge length");
  ExpectProtocol(DecodeStoreRequest(patch_u32(good, first_len, kMaxInlineValueBytes + 1)).status(),
                 "a length over the inline limit");
  // Values at the limits: each at most kMaxInlineValueBytes, all at most kMaxInlineCallBytes.
  std::vector<uint8_t> largest(kMaxInlineValueBytes, 7);
  const std::vector<std::string> one_key{"k"};
  auto just = [](const std::vector<uint8_t>& v) { return std::vector<std::vector<Span>>{{Span{v.data(), v.size()}}}; };
  EXPECT_TRUE(DecodeStoreRequest(EncodePutInline(one_key, just(largest), {}, false)).ok());
  largest.push_back(7);
  ExpectProtocol(DecodeStoreRequest(EncodePutInline(one_key, just(largest), {}, false)).status(),
                 "a value one byte over the inline limit");
  largest.pop_back();
  const size_t fit = kMaxInlineCallBytes / kMaxInlineValueBytes;
  std::vector<std::string> many;
  std::vector<std::vector<Span>> full;
  for (size_t i = 0; i < fit; ++i) {
    many.push_back("k" + std::to_string(i));
    full.push_back({{largest.data(), largest.size()}});
  }
  EXPECT_TRUE(DecodeStoreRequest(EncodePutInline(many, full, {}, false)).ok()) << "exactly the call limit";
  uint8_t extra = 1;
  many.push_back("over");
  full.push_back({{&extra, 1}});
  ExpectProtocol(DecodeStoreRequest(EncodePutInline(many, full, {}, false)).status(), "one byte over the call limit");
  // An empty value decodes: the master answers it INVALID_ARGUMENT, as an empty PutStart.
  EXPECT_TRUE(DecodeStoreRequest(EncodePutInline(one_key, std::vector<std::vector<Span>>(1), {}, false)).ok());
  ExpectProtocol(DecodeStoreRequest(EncodePutInline(std::vector<std::string>{}, {}, {}, false)).status(), "no keys");
  for (uint32_t replicas : {0u, kMaxReplicas + 1}) {
    PlaceOptions place;
    place.replicas = replicas;
    ExpectProtocol(DecodeStoreRequest(EncodePutInline(keys, values, place, false)).status(),
                   std::to_string(replicas) + " replicas");
  }
  auto bad_bool = good;
  bad_bool.back() = 2;
  ExpectProtocol(DecodeStoreRequest(bad_bool).status(), "upsert 2");
}

TEST(StoreProtocol, InlinePutResultsRoundTripAndImpossibleOnesAreProtocolErrors) {
  Random rnd(12);
  for (int i = 0; i < 30; ++i) {
    std::vector<KeyResult> results(1 + rnd.Below(20));
    for (auto& r : results) r = rnd.OneInline();
    auto bytes = EncodeKeyResults(results);
    auto back = DecodePutInlineResults(bytes, results.size());
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    for (size_t k = 0; k < results.size(); ++k) {
      EXPECT_EQ((*back)[k].status.code(), results[k].status.code());
      EXPECT_EQ((*back)[k].exists, results[k].exists);
      EXPECT_EQ((*back)[k].id, results[k].id);
      EXPECT_EQ((*back)[k].replicas.size(), results[k].replicas.size());
    }
    EXPECT_EQ(EncodeKeyResults(*back), bytes);
  }
  KeyResult placed;
  placed.replicas = {{1, 0x1000}};
  placed.exists = true;
  ASSERT_TRUE(DecodePutInlineResults(EncodeKeyResults(std::vector<KeyResult>{placed}), 1).ok());
  auto refused = [](KeyResult r, const std::string& what) {
    ExpectProtocol(DecodePutInlineResults(EncodeKeyResults(std::vector<KeyResult>{r}), 1).status(), what);
  };
  KeyResult r = placed;
  r.replicas.clear();
  refused(r, "placed on no replica");
  r = placed;
  r.lease_ms = 5;
  refused(r, "a lease");
  r = placed;
  r.size = 4096;
  refused(r, "a size");
  r = placed;
  r.disk_rank = 0;
  refused(r, "a disk");
  KeyResult failed;
  failed.status = Status(Code::kPoolFull, "full");
  ASSERT_TRUE(DecodePutInlineResults(EncodeKeyResults(std::vector<KeyResult>{failed}), 1).ok());
  r = failed;
  r.exists = true;
  refused(r, "failed yet complete");
  r = failed;
  r.replicas = {{0, 1}};
  refused(r, "failed with a replica");
  r = failed;
  r.id = 3;
  refused(r, "failed with an id");
  ExpectProtocol(DecodePutInlineResults(EncodeKeyResults(std::vector<KeyResult>{placed}), 2).status(),
                 "fewer results than keys");
}

TEST(StoreProtocol, KeyCallsRoundTrip) {
  Random rnd(2);
  for (StoreOp op : {StoreOp::kPutEnd, StoreOp::kPutEndOnDisk, StoreOp::kPutRevoke, StoreOp::kGet, StoreOp::kExists,
                     StoreOp::kRemove, StoreOp::kDescribe}) {
    for (int i = 0; i < 20; ++i) {
      auto keys = rnd.Keys();
      bool force = op == StoreOp::kRemove && rnd.Bool();
      auto req = DecodeStoreRequest(EncodeKeysCall(op, keys, force));
      ASSERT_TRUE(req.ok()) << req.status().ToString();
      EXPECT_EQ(req->op, op);
      EXPECT_EQ(req->keys, keys);
      EXPECT_EQ(req->force, force);
    }
  }
}

TEST(StoreProtocol, PoolWideCallsRoundTrip) {
  Random rnd(3);
  for (int i = 0; i < 20; ++i) {
    std::string pattern = rnd.Bytes(0, i == 0 ? kMaxKeyBytes : 50);
    bool force = rnd.Bool();
    auto regex = DecodeStoreRequest(EncodeRemoveRegex(pattern, force));
    ASSERT_TRUE(regex.ok()) << regex.status().ToString();
    EXPECT_EQ(regex->op, StoreOp::kRemoveRegex);
    EXPECT_EQ(regex->pattern, pattern);
    EXPECT_EQ(regex->force, force);
    auto all = DecodeStoreRequest(EncodeRemoveAll(force));
    ASSERT_TRUE(all.ok());
    EXPECT_EQ(all->op, StoreOp::kRemoveAll);
    EXPECT_EQ(all->force, force);
  }
  auto stats = DecodeStoreRequest(EncodeStatsCall());
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->op, StoreOp::kStats);
  auto ping = DecodeStoreRequest(EncodePingCall());
  ASSERT_TRUE(ping.ok());
  EXPECT_EQ(ping->op, StoreOp::kPing);
}

TEST(StoreProtocol, DecodedRequestsReencodeToTheSameBytes) {
  Random rnd(4);
  for (int i = 0; i < 10; ++i) {
    for (const auto& msg : SampleRequests(rnd)) {
      auto req = DecodeStoreRequest(msg);
      ASSERT_TRUE(req.ok()) << req.status().ToString();
      EXPECT_EQ(EncodeStoreRequest(*req), msg);
    }
  }
}

TEST(StoreProtocol, KeyResultsRoundTrip) {
  Random rnd(5);
  for (int i = 0; i < 30; ++i) {
    std::vector<KeyResult> results(rnd.Below(30));
    for (auto& r : results) r = rnd.OneResult();
    auto bytes = EncodeKeyResults(results);
    auto back = DecodeKeyResults(bytes, results.size());
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    ASSERT_EQ(back->size(), results.size());
    for (size_t k = 0; k < results.size(); ++k) {
      const KeyResult& a = results[k];
      const KeyResult& b = (*back)[k];
      EXPECT_EQ(b.status.code(), a.status.code());
      EXPECT_EQ(b.status.message(), a.status.message());
      EXPECT_EQ(b.size, a.size);
      ASSERT_EQ(b.replicas.size(), a.replicas.size());
      for (size_t j = 0; j < a.replicas.size(); ++j) {
        EXPECT_EQ(b.replicas[j].rank, a.replicas[j].rank);
        EXPECT_EQ(b.replicas[j].gva, a.replicas[j].gva);
      }
      EXPECT_EQ(b.lease_ms, a.lease_ms);
      EXPECT_EQ(b.exists, a.exists);
      EXPECT_EQ(b.id, a.id);
      EXPECT_EQ(b.disk_rank, a.disk_rank);
    }
    EXPECT_EQ(EncodeKeyResults(*back), bytes);
  }
}

TEST(StoreProtocol, DescribeResultsRoundTrip) {
  Random rnd(10);
  for (int i = 0; i < 30; ++i) {
    std::vector<KeyResult> results(1 + rnd.Below(30));
    for (auto& r : results) r = rnd.OneDescribed();
    auto bytes = EncodeKeyResults(results);
    auto back = DecodeDescribeResults(bytes, results.size());
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    ASSERT_EQ(back->size(), results.size());
    for (size_t k = 0; k < results.size(); ++k) {
      const KeyResult& a = results[k];
      const KeyResult& b = (*back)[k];
      EXPECT_EQ(b.status.code(), a.status.code());
      EXPECT_EQ(b.status.message(), a.status.message());
      EXPECT_EQ(b.size, a.size);
      ASSERT_EQ(b.replicas.size(), a.replicas.size());
      for (size_t j = 0; j < a.replicas.size(); ++j) {
        EXPECT_EQ(b.replicas[j].rank, a.replicas[j].rank);
        EXPECT_EQ(b.replicas[j].gva, a.replicas[j].gva);
      }
      EXPECT_EQ(b.id, a.id);
      EXPECT_EQ(b.disk_rank, a.disk_rank);
    }
    EXPECT_EQ(EncodeKeyResults(*back), bytes);
    for (size_t cut = 0; cut < bytes.size(); ++cut)
      ExpectProtocol(DecodeDescribeResults({bytes.data(), cut}, results.size()).status(), "describe cut");
    bytes.push_back(0);
    ExpectProtocol(DecodeDescribeResults(bytes, results.size()).status(), "describe + 1");
  }
}

// Replies a describe cannot give: valid key results otherwise, refused only by the describe's
// decoder, each alone in a batch of good results.
TEST(StoreProtocol, DescribeResultsThatCannotBeAreProtocolErrors) {
  KeyResult found;
  found.size = 100;
  found.replicas = {{1, 0x1000}};
  found.id = 7;
  KeyResult missing;
  missing.status = Status(Code::kNotFound, "no object 'k'");
  std::vector<std::pair<std::string, KeyResult>> bad;
  KeyResult r = found;
  r.lease_ms = 10000;
  bad.emplace_back("a lease", r);
  r = found;
  r.exists = true;
  bad.emplace_back("an exists flag", r);
  r = found;
  r.replicas.clear();
  bad.emplace_back("found nowhere", r);
  for (auto field : {0, 1, 2, 3}) {
    r = missing;
    if (field == 0) r.size = 1;
    if (field == 1) r.replicas = {{0, 1}};
    if (field == 2) r.id = 1;
    if (field == 3) r.disk_rank = 0;
    bad.emplace_back("a failed result with a place (" + std::to_string(field) + ")", r);
  }
  for (const auto& [what, result] : bad) {
    const std::vector<KeyResult> batch{found, result, missing};
    auto bytes = EncodeKeyResults(batch);
    ASSERT_TRUE(DecodeKeyResults(bytes, 3).ok()) << what << ": a valid key result";
    ExpectProtocol(DecodeDescribeResults(bytes, 3).status(), what);
  }
  KeyResult on_disk = found;
  on_disk.replicas.clear();
  on_disk.disk_rank = 2;
  EXPECT_TRUE(DecodeDescribeResults(EncodeKeyResults(std::vector<KeyResult>{found, on_disk, missing}), 3).ok());
  ExpectProtocol(DecodeDescribeResults(EncodeKeyResults(std::vector<KeyResult>{found}), 2).status(), "fewer results");
}

TEST(StoreProtocol, CountAndStatsRoundTrip) {
  Random rnd(6);
  for (int i = 0; i < 20; ++i) {
    uint64_t n = rnd.U64();
    auto count = DecodeCount(EncodeCount(n));
    ASSERT_TRUE(count.ok());
    EXPECT_EQ(*count, n);
    MasterStats s{rnd.U64(), rnd.U64(), rnd.U64(), rnd.U64(), rnd.U64(),
                  rnd.U64(), rnd.U64(), rnd.U64(), rnd.U64(), rnd.U64()};
    auto back = DecodeStats(EncodeStats(s));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(back->objects, s.objects);
    EXPECT_EQ(back->pending_puts, s.pending_puts);
    EXPECT_EQ(back->bytes, s.bytes);
    EXPECT_EQ(back->capacity, s.capacity);
    EXPECT_EQ(back->used, s.used);
    EXPECT_EQ(back->evicted, s.evicted);
    EXPECT_EQ(back->parked_bytes, s.parked_bytes);
    EXPECT_EQ(back->on_disk, s.on_disk);
    EXPECT_EQ(back->inline_puts, s.inline_puts);
    EXPECT_EQ(back->inline_deferred, s.inline_deferred);
  }
}

// A master older than inline puts answers eight figures; they decode, with no inline puts.
TEST(StoreProtocol, StatsOfAnOlderMasterDecode) {
  auto stats = EncodeStats({1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  ASSERT_EQ(stats.size(), 10 * sizeof(uint64_t));
  auto old = DecodeStats({stats.data(), 8 * sizeof(uint64_t)});
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  EXPECT_EQ(old->on_disk, 8u);
  EXPECT_EQ(old->inline_puts, 0u);
  EXPECT_EQ(old->inline_deferred, 0u);
}

TEST(StoreProtocol, TruncatedOrLongerRequestsAreProtocolErrors) {
  Random rnd(7);
  for (const auto& msg : SampleRequests(rnd)) ExpectRequestStrict(msg);
}

TEST(StoreProtocol, TruncatedOrLongerRepliesAreProtocolErrors) {
  Random rnd(8);
  std::vector<KeyResult> results(3);
  for (auto& r : results) r = rnd.OneResult();
  results[1].replicas = {{1, 2}, {3, 4}};
  auto bytes = EncodeKeyResults(results);
  auto count = EncodeCount(42);
  auto stats = EncodeStats({1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    ExpectProtocol(DecodeKeyResults({bytes.data(), cut}, results.size()).status(), "results cut");
  }
  for (size_t cut = 0; cut < count.size(); ++cut) ExpectProtocol(DecodeCount({count.data(), cut}).status(), "count cut");
  for (size_t cut = 0; cut < stats.size(); ++cut) {
    if (cut == 8 * sizeof(uint64_t)) continue;  // an older master's reply (StatsOfAnOlderMasterDecode)
    ExpectProtocol(DecodeStats({stats.data(), cut}).status(), "stats cut at " + std::to_string(cut));
  }
  bytes.push_back(0);
  count.push_back(0);
  stats.push_back(0);
  ExpectProtocol(DecodeKeyResults(bytes, results.size()).status(), "results + 1");
  ExpectProtocol(DecodeCount(count).status(), "count + 1");
  ExpectProtocol(DecodeStats(stats).status(), "stats + 1");
}

TEST(StoreProtocol, HeaderIsChecked) {
  auto msg = EncodeStatsCall();
  ASSERT_EQ(msg.size(), 3u);
  auto other_service = msg;
  other_service[0] = 1;
  ExpectProtocol(DecodeStoreRequest(other_service).status(), "service");
  auto other_version = msg;
  other_version[1] = 2;
  ExpectProtocol(DecodeStoreRequest(other_version).status(), "version");
  for (uint8_t op : {0, 14, 255}) {
    auto bad_op = msg;
    bad_op[2] = op;
    ExpectProtocol(DecodeStoreRequest(bad_op).status(), "op " + std::to_string(op));
  }
}

TEST(StoreProtocol, KeyLimitsAreProtocolErrors) {
  const std::vector<std::string> none;
  ExpectProtocol(DecodeStoreRequest(EncodeKeysCall(StoreOp::kGet, none)).status(), "no keys");
  ExpectProtocol(DecodeStoreRequest(EncodePutStart(none, {}, {}, false)).status(), "put of no keys");
  std::vector<std::string> many(kMaxBatch + 1, "k");
  ExpectProtocol(DecodeStoreRequest(EncodeKeysCall(StoreOp::kExists, many)).status(), "too many keys");
  many.pop_back();
  EXPECT_TRUE(DecodeStoreRequest(EncodeKeysCall(StoreOp::kExists, many)).ok());
  ExpectProtocol(DecodeStoreRequest(EncodeKeysCall(StoreOp::kGet, std::vector<std::string>{"a", ""})).status(),
                 "empty key");
  std::vector<std::string> longest{std::string(kMaxKeyBytes, 'x')};
  EXPECT_TRUE(DecodeStoreRequest(EncodeKeysCall(StoreOp::kRemove, longest, true)).ok());
  longest[0].push_back('x');
  ExpectProtocol(DecodeStoreRequest(EncodeKeysCall(StoreOp::kRemove, longest, true)).status(), "long key");
  ExpectProtocol(DecodeStoreRequest(EncodeRemoveRegex(longest[0], false)).status(), "long pattern");
}

TEST(StoreProtocol, PutStartLimitsAreProtocolErrors) {
  const std::vector<std::string> keys{"a", "b"};
  ExpectProtocol(DecodeStoreRequest(EncodePutStart(keys, std::vector<uint64_t>{1}, {}, false)).status(),
                 "fewer sizes");
  ExpectProtocol(DecodeStoreRequest(EncodePutStart(keys, std::vector<uint64_t>{1, 2, 3}, {}, false)).status(),
                 "more sizes");
  const std::vector<uint64_t> sizes{1, 2};
  for (uint32_t replicas : {0u, kMaxReplicas + 1}) {
    PlaceOptions place;
    place.replicas = replicas;
    ExpectProtocol(DecodeStoreRequest(EncodePutStart(keys, sizes, place, false)).status(),
                   std::to_string(replicas) + " replicas");
  }
  PlaceOptions most;
  most.replicas = kMaxReplicas;
  EXPECT_TRUE(DecodeStoreRequest(EncodePutStart(keys, sizes, most, false)).ok());
}

TEST(StoreProtocol, BooleansOtherThanZeroOrOneAreProtocolErrors) {
  // The booleans end these calls (force), or come just before PutStart's u64 promote id.
  const std::vector<std::string> keys{"k"};
  for (auto msg : {EncodeRemoveAll(true), EncodeRemoveRegex("a.*", true), EncodeKeysCall(StoreOp::kRemove, keys, true)}) {
    msg.back() = 2;
    ExpectProtocol(DecodeStoreRequest(msg).status(), "bool 2");
  }
  auto put = EncodePutStart(keys, std::vector<uint64_t>{8}, {}, true);
  put[put.size() - 9] = 2;
  ExpectProtocol(DecodeStoreRequest(put).status(), "upsert 2");
  KeyResult r;
  r.exists = true;
  auto bytes = EncodeKeyResults(std::vector<KeyResult>{r});
  bytes[bytes.size() - 13] = 2;  // exists, before the u64 id and the i32 disk rank
  ExpectProtocol(DecodeKeyResults(bytes, 1).status(), "exists 2");
}

TEST(StoreProtocol, ResultLimitsAreProtocolErrors) {
  KeyResult r;
  r.replicas.resize(kMaxReplicas);
  EXPECT_TRUE(DecodeKeyResults(EncodeKeyResults(std::vector<KeyResult>{r}), 1).ok());
  r.replicas.resize(kMaxReplicas + 1);
  ExpectProtocol(DecodeKeyResults(EncodeKeyResults(std::vector<KeyResult>{r}), 1).status(), "replicas");

  KeyResult last;
  last.status = Status(kLastCode, "busy");
  auto bytes = EncodeKeyResults(std::vector<KeyResult>{last});
  EXPECT_TRUE(DecodeKeyResults(bytes, 1).ok());
  bytes[4] = static_cast<uint8_t>(static_cast<uint32_t>(kLastCode) + 1);  // the code follows the count
  ExpectProtocol(DecodeKeyResults(bytes, 1).status(), "unknown code");

  std::vector<KeyResult> two(2);
  auto pair = EncodeKeyResults(two);
  EXPECT_TRUE(DecodeKeyResults(pair, 2).ok());
  ExpectProtocol(DecodeKeyResults(pair, 1).status(), "fewer expected");
  ExpectProtocol(DecodeKeyResults(pair, 3).status(), "more expected");
}

TEST(StoreProtocol, LongMessagesAreCutByTheEncoderAndRefusedByTheDecoder) {
  KeyResult r;
  r.status = Status(Code::kInternal, std::string(kMaxMessageBytes + 100, 'm'));
  auto back = DecodeKeyResults(EncodeKeyResults(std::vector<KeyResult>{r}), 1);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ((*back)[0].status.message(), std::string(kMaxMessageBytes, 'm'));

  // A hand-made reply whose message is one byte over the limit.
  r.status = Status(Code::kInternal, std::string(kMaxMessageBytes, 'm'));
  auto bytes = EncodeKeyResults(std::vector<KeyResult>{r});
  bytes[8] = static_cast<uint8_t>((kMaxMessageBytes + 1) & 0xff);  // the message length follows count and code
  bytes[9] = static_cast<uint8_t>((kMaxMessageBytes + 1) >> 8);
  bytes.insert(bytes.begin() + 12, 'm');
  ExpectProtocol(DecodeKeyResults(bytes, 1).status(), "long message");
}

TEST(StoreProtocol, TellsStoreCallsFromAllocatorCalls) {
  Random rnd(9);
  for (const auto& msg : SampleRequests(rnd)) EXPECT_TRUE(IsStoreCall(msg));
  EXPECT_FALSE(IsStoreCall(bm::EncodeAlloc(4096, gva::Placement::Local())));
  EXPECT_FALSE(IsStoreCall(bm::EncodeFree(1)));
  EXPECT_FALSE(IsStoreCall({}));
}

}  // namespace
}  // namespace weft::store
