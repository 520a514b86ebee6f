// The store across processes: `weft store-master` hosts the master, and clients forked from this
// test write and read through every call of include/weft/store.h. Every value is fresh random
// data, every destination is poisoned first and every byte is compared.
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include <weft/store.h>

#include "api/store/types.h"
#include "base/random.h"
#include "integration/netns_hosts.h"
#include "integration/peer_process.h"

namespace weft::store {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::PeerProcesses;
using testing::Spawned;

constexpr uint8_t kPoison = 0xA5;

// Flags that forked children raise and wait for (a shared anonymous page, made before the fork).
class Flags {
 public:
  Flags() {
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    flags_ = p == MAP_FAILED ? nullptr : new (p) std::atomic<int>[64]();
  }
  ~Flags() {
    if (flags_) ::munmap(flags_, 4096);
  }
  void Raise(int i) { flags_[i].store(1); }
  // A number one process leaves for another (a rank), beside the flags.
  void Set(int i, int value) { flags_[i].store(value); }
  int Get(int i) const { return flags_[i].load(); }
  // True once flag i is raised; false after `limit`.
  bool Wait(int i, milliseconds limit = milliseconds(60000)) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!flags_[i].load()) {
      if (std::chrono::steady_clock::now() > until) return false;
      std::this_thread::sleep_for(milliseconds(5));
    }
    return true;
  }

 private:
  std::atomic<int>* flags_ = nullptr;
};

// What a child checks: each failed check is printed and counted; the child exits with the count.
class Checks {
 public:
  explicit Checks(const char* who) : who_(who) {}
  bool That(bool ok, const std::string& what) {
    if (!ok) {
      std::fprintf(stderr, "[%s] FAILED: %s\n", who_, what.c_str());
      ++failures_;
    }
    return ok;
  }
  bool Code(const Status& s, weft::Code want, const std::string& what) {
    return That(s.code() == want, what + ": wanted " + std::string(CodeName(want)) + ", got " + s.ToString());
  }
  int failures() const { return failures_ > 100 ? 100 : failures_; }

 private:
  const char* who_;
  int failures_ = 0;
};

std::vector<uint8_t> Value(uint64_t size, uint64_t seed) {
  std::vector<uint8_t> v(size);
  FillRandom(v.data(), size, seed);
  return v;
}

// The master as its own process, on a unix socket of this test.
class StoreTest : public ::testing::Test {
 protected:
  void StartMaster(const Config& config, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv = {WEFT_BINARY, "store-master", "--set", "pool_name=" + config.pool_name,
                                     "--set", "coordinator=" + config.coordinator, "--set",
                                     "rank_size=" + std::to_string(config.rank_size), "--set",
                                     "peer_timeout_ms=" + std::to_string(config.peer_timeout_ms)};
    for (auto& e : extra) argv.push_back(std::move(e));
    master_ = std::make_unique<Spawned>(argv);
    ASSERT_TRUE(master_->started());
    listening_ = master_->WaitFor("listening on", seconds(20));
    ASSERT_NE(listening_, "") << master_->output();
  }
  Config ClientConfig(const std::string& name, uint64_t rank_size = 32 << 20) {
    Config c = testing::TestConfig(name, rank_size);
    c.peer_timeout_ms = 800;
    return c;
  }
  std::unique_ptr<Spawned> master_;
  std::string listening_;  // the master's "listening on <address>" line
};

// The writer's side of EveryCallCarriesExactBytes: keys and values derived from `seed`.
int WriteEverything(const Config& config, uint64_t seed, Flags& flags) {
  Checks check("writer");
  auto opened = Store::Open(config, bm::JoinMode::kJoin);
  if (!check.That(opened.ok(), "open: " + opened.status().ToString())) return 1;
  Store& store = **opened;
  const uint64_t sizes[] = {1, 100, 4096, 65536 + 3, 1 << 20, 3 << 20};
  for (int i = 0; i < 6; ++i) {
    const auto v = Value(sizes[i], seed + i);
    check.That(store.Put("obj/" + std::to_string(i), v).ok(), "put obj/" + std::to_string(i));
  }
  // Put-if-absent keeps the first value; upsert replaces it.
  check.Code(store.Put("obj/0", Value(7, seed + 100)), Code::kAlreadyExists, "second put of obj/0");
  check.That(store.Put("up", Value(5000, seed + 200)).ok(), "put up");
  check.That(store.Upsert("up", Value(9000, seed + 201)).ok(), "upsert up");
  // Three parts, laid end to end.
  const auto a = Value(1000, seed + 300), b = Value(1, seed + 301), c = Value(70000, seed + 302);
  const Span parts[] = {{a.data(), a.size()}, {b.data(), b.size()}, {c.data(), c.size()}};
  check.That(store.PutParts("parts", parts).ok(), "put_parts");
  // A batch of 64 x 16 KiB.
  std::vector<std::string> keys;
  std::vector<std::vector<uint8_t>> values;
  std::vector<Span> spans;
  for (int i = 0; i < 64; ++i) {
    keys.push_back("batch/" + std::to_string(i));
    values.push_back(Value(16 << 10, seed + 400 + i));
  }
  for (auto& v : values) spans.push_back({v.data(), v.size()});
  for (const Status& s : store.PutBatch(keys, spans)) check.That(s.ok(), "put_batch: " + s.ToString());
  // Zero-copy from a registered buffer.
  auto zc = Value(256 << 10, seed + 500);
  check.That(store.RegisterBuffer(zc.data(), zc.size()).ok(), "register");
  check.That(store.PutFrom("zc", zc.data(), zc.size()).ok(), "put_from");
  auto loose = Value(100, seed + 501);
  check.Code(store.PutFrom("loose", loose.data(), loose.size()), Code::kNotRegistered, "put_from unregistered");
  flags.Raise(0);  // written
  check.That(flags.Wait(1), "the reader finished");
  check.That(store.Close().ok(), "close");
  return check.failures();
}

int ReadEverything(const Config& config, uint64_t seed, Flags& flags) {
  Checks check("reader");
  auto opened = Store::Open(config, bm::JoinMode::kJoin);
  if (!check.That(opened.ok(), "open: " + opened.status().ToString())) return 1;
  Store& store = **opened;
  if (!check.That(flags.Wait(0), "the writer finished")) return check.failures();
  const uint64_t sizes[] = {1, 100, 4096, 65536 + 3, 1 << 20, 3 << 20};
  for (int i = 0; i < 6; ++i) {
    auto got = store.Get("obj/" + std::to_string(i));
    check.That(got.ok() && *got == Value(sizes[i], seed + i), "get obj/" + std::to_string(i) + " exact");
  }
  auto up = store.Get("up");
  check.That(up.ok() && *up == Value(9000, seed + 201), "upsert's value");
  auto parts = store.Get("parts");
  std::vector<uint8_t> want = Value(1000, seed + 300);
  for (auto& more : {Value(1, seed + 301), Value(70000, seed + 302)}) want.insert(want.end(), more.begin(), more.end());
  check.That(parts.ok() && *parts == want, "put_parts laid end to end");
  check.Code(store.Get("missing").status(), Code::kNotFound, "get of a missing key");
  check.Code(store.Get("loose").status(), Code::kNotFound, "the refused put_from left nothing");

  // Zero-copy reads: a batch with a miss in the middle, into poisoned registered buffers.
  std::vector<uint8_t> area(70 * (17 << 10), kPoison);
  check.That(store.RegisterBuffer(area.data(), area.size()).ok(), "register");
  std::vector<std::string> keys;
  std::vector<Buffer> buffers;
  for (int i = 0; i < 65; ++i) {
    keys.push_back(i == 32 ? "batch/missing" : "batch/" + std::to_string(i < 32 ? i : i - 1));
    buffers.push_back({area.data() + i * (17 << 10), 17 << 10});
  }
  auto got = store.GetIntoBatch(keys, buffers);
  for (int i = 0; i < 65; ++i) {
    const auto* p = static_cast<const uint8_t*>(buffers[i].data);
    if (i == 32) {
      check.Code(got[i].status(), Code::kNotFound, "the miss in the middle");
      check.That(std::all_of(p, p + (17 << 10), [](uint8_t x) { return x == kPoison; }), "a miss writes nothing");
      continue;
    }
    const int n = i < 32 ? i : i - 1;
    check.That(got[i].ok() && *got[i] == (16u << 10), "batch_get_into size " + std::to_string(n));
    check.That(!FirstMismatch(p, 16 << 10, seed + 400 + n).has_value(), "batch_get_into bytes " + std::to_string(n));
    check.That(std::all_of(p + (16 << 10), p + (17 << 10), [](uint8_t x) { return x == kPoison; }),
               "nothing past the value " + std::to_string(n));
  }
  auto zc = store.GetInto("zc", area.data(), 256 << 10);
  check.That(zc.ok() && *zc == (256u << 10) && !FirstMismatch(area.data(), 256 << 10, seed + 500).has_value(),
             "get_into of the put_from value");
  // Bad destinations: nothing written, a specific error each.
  std::fill(area.begin(), area.end(), kPoison);
  check.Code(store.GetInto("zc", area.data(), 1000).status(), Code::kInvalidArgument, "a buffer smaller than the value");
  check.That(area[0] == kPoison && area[999] == kPoison, "the small buffer was not written");
  std::vector<uint8_t> loose(300 << 10);
  check.Code(store.GetInto("zc", loose.data(), loose.size()).status(), Code::kNotRegistered, "an unregistered buffer");

  // Into memory handed out once the size is known (one master call for the batch).
  std::vector<std::vector<uint8_t>> with(3);
  const std::vector<std::string> with_keys = {"obj/5", "nope", "up"};
  auto sized = store.GetBatchWith(with_keys, [&](size_t i, uint64_t size) {
    with[i].assign(size, kPoison);
    return static_cast<void*>(with[i].data());
  });
  check.That(sized[0].ok() && with[0] == Value(3 << 20, seed + 5), "get_batch_with obj/5");
  check.Code(sized[1].status(), Code::kNotFound, "get_batch_with a miss");
  check.That(with[1].empty(), "no memory asked for a miss");
  check.That(sized[2].ok() && with[2] == Value(9000, seed + 201), "get_batch_with up");
  // Exists, size, remove, leases.
  check.That(store.Exists("obj/3").value_or(false), "exists");
  check.That(!store.Exists("nope").value_or(true), "exists of a missing key");
  check.That(store.Size("obj/4").value_or(0) == (1u << 20), "size");
  check.Code(store.Size("nope").status(), Code::kNotFound, "size of a missing key");
  check.Code(store.Remove("obj/3"), Code::kBusy, "remove of a leased object");
  check.That(store.Remove("obj/3", true).ok(), "forced remove");
  check.Code(store.Get("obj/3").status(), Code::kNotFound, "a removed object");
  auto removed = store.RemoveByRegex("^batch/", true);
  check.That(removed.ok() && *removed == 64, "remove_by_regex took the 64 batch objects");
  check.Code(store.RemoveByRegex("(", true).status(), Code::kInvalidArgument, "a regex that does not compile");
  // Bad input.
  const auto v = Value(10, seed);
  check.Code(store.Put("", v), Code::kInvalidArgument, "an empty key");
  check.Code(store.Put(std::string(5000, 'k'), v), Code::kInvalidArgument, "a key over 4096 bytes");
  check.Code(store.Put("empty", {}), Code::kInvalidArgument, "an empty value");
  std::vector<uint8_t> huge(config.rank_size + 1);
  check.Code(store.Put("huge", huge), Code::kInvalidArgument, "a value larger than any slice");
  check.Code(store.Put("nine", v, {.replicas = 9}), Code::kInvalidArgument, "nine replicas");
  check.Code(store.Put("none", v, {.replicas = 0}), Code::kInvalidArgument, "no replica");
  check.That(store.Health().ok(), "health");
  auto all = store.RemoveAll(true);
  check.That(all.ok() && *all == 8, "remove_all took obj/0,1,2,4,5, up, parts and zc: " +
                                        std::to_string(all.value_or(0)));
  flags.Raise(1);
  return check.failures();
}

// Over each way a client reaches another's memory: mapped (shm) and the tcp data plane.
class StoreCalls : public StoreTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(StoreCalls, EveryCallCarriesExactBytesBetweenTwoClients) {
  Config config = ClientConfig(std::string("store-calls-") + GetParam());
  config.transport = GetParam();
  config.cluster_secret = "store-test-" + std::to_string(FreshSeed());
  StartMaster(config);
  if (HasFatalFailure()) return;
  const uint64_t seed = FreshSeed();
  Flags flags;
  PeerProcesses clients(2, [&](int i) {
    return i == 0 ? WriteEverything(config, seed, flags) : ReadEverything(config, seed, flags);
  });
  clients.Release();
  EXPECT_EQ(clients.Wait(0), 0) << "the writer's checks (stderr above)";
  EXPECT_EQ(clients.Wait(1), 0) << "the reader's checks (stderr above)";
}

INSTANTIATE_TEST_SUITE_P(Transports, StoreCalls, ::testing::Values("auto", "tcp"));

// Where objects are, and parts of them: a writer puts values with one and two replicas; the
// other client describes them, reads every replica's bytes straight from the pool at the GVA the
// descriptor names and compares each byte with what was put; reads ranges of them into a
// registered buffer (the rest of which stays poisoned); and finds missing, bad and removed keys
// reported as such. A describe takes no lease: the reader removes a described object unforced.
int WriteDescribed(const Config& config, uint64_t seed, Flags& flags) {
  Checks check("writer");
  auto opened = Store::Open(config, bm::JoinMode::kJoin);
  if (!check.That(opened.ok(), "open: " + opened.status().ToString())) return 1;
  Store& store = **opened;
  flags.Set(10, static_cast<int>(store.pool().rank()));
  check.That(flags.Wait(2), "the reader joined");  // so that a second replica has a peer to go to
  check.That(store.Put("one", Value(300000 + 7, seed)).ok(), "put one");
  check.That(store.Put("two", Value(1 << 20, seed + 1), {.replicas = 2}).ok(), "put two");
  check.That(store.Put("gone", Value(5000, seed + 2)).ok(), "put gone");
  flags.Raise(0);
  check.That(flags.Wait(1), "the reader finished");
  check.That(store.Close().ok(), "close");
  return check.failures();
}

// Every replica of `key` as described, read through the pool and compared byte by byte.
void CheckReplicas(Checks& check, Store& store, const std::string& key, const Result<ObjectDesc>& desc,
                   uint64_t size, uint64_t seed, size_t replicas, uint32_t writer) {
  if (!check.That(desc.ok(), "describe " + key + ": " + desc.status().ToString())) return;
  check.That(desc->size == size, key + " size " + std::to_string(desc->size));
  check.That(desc->disk_rank == -1, key + " has no disk copy");
  if (!check.That(desc->replicas.size() == replicas, key + " replicas: " + std::to_string(desc->replicas.size())))
    return;
  check.That(desc->replicas[0].rank == writer, key + ": the first replica in the writer's slice");
  if (replicas == 2) check.That(desc->replicas[0].rank != desc->replicas[1].rank, key + " on two peers");
  for (const ReplicaDesc& r : desc->replicas) {
    const std::string what = key + " replica on rank " + std::to_string(r.rank);
    check.That(store.pool().RankOf(r.gva).value_or(~0u) == r.rank, what + ": the GVA is in that rank's slice");
    std::vector<uint8_t> bytes(size, kPoison);
    check.That(store.pool().Copy(reinterpret_cast<uint64_t>(bytes.data()), r.gva, size).ok(), what + " read");
    const auto bad = FirstMismatch(bytes.data(), size, seed);
    check.That(!bad.has_value(), what + ": byte " + std::to_string(bad.value_or(0)) + " differs");
  }
}

int ReadDescribed(const Config& config, uint64_t seed, Flags& flags) {
  Checks check("reader");
  auto opened = Store::Open(config, bm::JoinMode::kJoin);
  if (!check.That(opened.ok(), "open: " + opened.status().ToString())) return 1;
  Store& store = **opened;
  flags.Raise(2);
  if (!check.That(flags.Wait(0), "the writer finished")) return check.failures();
  const auto writer = static_cast<uint32_t>(flags.Get(10));
  CheckReplicas(check, store, "one", store.Describe("one"), 300000 + 7, seed, 1, writer);
  // A batch: found, missing, bad (alone), found.
  const std::vector<std::string> keys = {"two", "missing", "", "one"};
  auto batch = store.DescribeBatch(keys);
  if (check.That(batch.size() == 4, "one result per key")) {
    CheckReplicas(check, store, "two", batch[0], 1 << 20, seed + 1, 2, writer);
    check.Code(batch[1].status(), Code::kNotFound, "describe of a missing key");
    check.Code(batch[2].status(), Code::kInvalidArgument, "describe of an empty key");
    CheckReplicas(check, store, "one", batch[3], 300000 + 7, seed, 1, writer);
  }
  check.Code(store.Describe(std::string(5000, 'k')).status(), Code::kInvalidArgument, "a key over 4096 bytes");

  // Ranges into a poisoned registered area: two of "two", one of "one", plus failures.
  std::vector<uint8_t> area(1 << 20, kPoison);
  check.That(store.RegisterBuffer(area.data(), area.size()).ok(), "register");
  std::vector<uint8_t> loose(4096);
  const std::vector<std::string> rkeys = {"two", "one", "missing"};
  const std::vector<RangeRead> ranges = {
      {0, 0, 4096, area.data()},                          // the head of "two"
      {0, (1 << 20) - 1000, 1000, area.data() + 8192},    // its tail
      {1, 123457, 65536, area.data() + 16384},            // from the middle of "one"
      {1, 300000, 8, area.data() + 100000},               // past the end of "one" (300007 bytes)
      {2, 0, 16, area.data() + 200000},                   // a missing key
      {0, 0, 16, loose.data()},                           // an unregistered destination
      {7, 0, 16, area.data() + 300000},                   // a key index past the keys
      {1, 300007, 0, area.data() + 400000},               // nothing, at the very end
  };
  auto got = store.GetRanges(rkeys, ranges);
  if (check.That(got.size() == ranges.size(), "one result per range")) {
    const auto two = Value(1 << 20, seed + 1);
    const auto one = Value(300000 + 7, seed);
    check.That(got[0].value_or(0) == 4096 && std::equal(two.begin(), two.begin() + 4096, area.data()), "head of two");
    check.That(got[1].value_or(0) == 1000 && std::equal(two.end() - 1000, two.end(), area.data() + 8192), "tail of two");
    check.That(got[2].value_or(0) == 65536 && std::equal(one.begin() + 123457, one.begin() + 123457 + 65536,
                                                         area.data() + 16384), "middle of one");
    check.Code(got[3].status(), Code::kOutOfRange, "a range past the value");
    check.Code(got[4].status(), Code::kNotFound, "a range of a missing key");
    check.Code(got[5].status(), Code::kNotRegistered, "an unregistered destination");
    check.Code(got[6].status(), Code::kInvalidArgument, "a key index past the keys");
    check.That(got[7].ok() && *got[7] == 0, "an empty range at the end");
    // Nothing but the three good ranges was written.
    size_t written = 0;
    for (uint8_t b : area) written += b != kPoison;
    size_t could = 0;  // random bytes that happen to equal the poison
    for (size_t i = 0; i < 4096; ++i) could += two[i] == kPoison;
    for (size_t i = 0; i < 1000; ++i) could += two[two.size() - 1000 + i] == kPoison;
    for (size_t i = 0; i < 65536; ++i) could += one[123457 + i] == kPoison;
    check.That(written == 4096 + 1000 + 65536 - could, "only the good ranges wrote: " + std::to_string(written));
  }

  // Removed keys, and no lease: "gone" was described (and never read), so it goes unforced.
  check.That(store.Describe("gone").ok(), "describe gone");
  check.That(store.Remove("gone").ok(), "an unforced remove after a describe");
  check.Code(store.Describe("gone").status(), Code::kNotFound, "describe of a removed key");
  const std::vector<std::string> removed = {"gone"};
  check.Code(store.GetRanges(removed, std::vector<RangeRead>{{0, 0, 16, area.data()}})[0].status(), Code::kNotFound,
             "a range of a removed key");
  flags.Raise(1);
  return check.failures();
}

TEST_P(StoreCalls, DescriptorsNameWhereTheBytesAreAndRangesReadThem) {
  Config config = ClientConfig(std::string("store-desc-") + GetParam());
  config.transport = GetParam();
  config.cluster_secret = "store-test-" + std::to_string(FreshSeed());
  StartMaster(config);
  if (HasFatalFailure()) return;
  const uint64_t seed = FreshSeed();
  Flags flags;
  PeerProcesses clients(2, [&](int i) {
    return i == 0 ? WriteDescribed(config, seed, flags) : ReadDescribed(config, seed, flags);
  });
  clients.Release();
  EXPECT_EQ(clients.Wait(0), 0) << "the writer's checks (stderr above)";
  EXPECT_EQ(clients.Wait(1), 0) << "the reader's checks (stderr above)";
}

// Inline puts (one master call): the first client hosts the pool's coordinator and so the
// master, which writes small values into the slices its process maps (its own; the other
// client's over shm) and ends the put before it answers. Over tcp the other client's slice is
// not mapped there, so the master places those replicas and leaves the copy to the writer. Every
// value put one way is read back by the other process, every byte compared; values at and one
// byte past kMaxInlineValueBytes take the inline and the two-call path (Stats counts inline
// calls); failed puts return their specific code and leave no object, pending put or memory.
uint64_t InlineCalls(Store& store) {
  auto st = store.Stats();
  return st.ok() ? st->inline_puts + st->inline_deferred : ~0ull;
}

int HostAndWriteInline(const Config& config, uint64_t seed, Flags& flags) {
  Checks check("host");
  auto opened = Store::Open(config, bm::JoinMode::kHost);
  if (!check.That(opened.ok(), "open: " + opened.status().ToString())) return 1;
  Store& store = **opened;
  check.That(store.pool().hosts_coordinator(), "this client hosts the master");
  flags.Set(10, static_cast<int>(store.pool().rank()));
  flags.Raise(5);  // hosting
  check.That(flags.Wait(2), "the reader joined");
  // Replicas of one copy go to the writer's own slice, which the master maps in both transports.
  auto before = store.Stats();
  check.That(store.Put("small", Value(4096, seed)).ok(), "put small");
  auto after = store.Stats();
  if (check.That(before.ok() && after.ok(), "stats")) {
    check.That(after->inline_puts == before->inline_puts + 1, "the 4 KiB put was written by the master");
    check.That(after->pending_puts == 0, "nothing pending after an inline put");
  }
  // At the threshold: inline; one byte over: two calls (no inline call counted).
  uint64_t calls = InlineCalls(store);
  check.That(store.Put("at", Value(kMaxInlineValueBytes, seed + 1)).ok(), "put at the threshold");
  check.That(InlineCalls(store) == calls + 1, "a value of exactly kMaxInlineValueBytes went inline");
  calls = InlineCalls(store);
  check.That(store.Put("over", Value(kMaxInlineValueBytes + 1, seed + 2)).ok(), "put one byte over");
  check.That(InlineCalls(store) == calls, "a value one byte over went the two-call way");
  // A batch of small values: one inline call for all of them.
  std::vector<std::string> keys;
  std::vector<std::vector<uint8_t>> values;
  std::vector<Span> spans;
  for (int i = 0; i < 6; ++i) {
    keys.push_back("batch/" + std::to_string(i));
    values.push_back(Value(4096 + i, seed + 10 + i));
  }
  for (auto& v : values) spans.push_back({v.data(), v.size()});
  calls = InlineCalls(store);
  for (const Status& s : store.PutBatch(keys, spans)) check.That(s.ok(), "put_batch: " + s.ToString());
  check.That(InlineCalls(store) == calls + 6, "the batch went inline (24 KiB in all)");
  // A batch of small values over kMaxInlineCallBytes in all: two calls.
  std::vector<std::string> big_keys;
  std::vector<std::vector<uint8_t>> big_values;
  std::vector<Span> big_spans;
  for (uint64_t i = 0; i <= kMaxInlineCallBytes / 4096; ++i) {
    big_keys.push_back("bigbatch/" + std::to_string(i));
    big_values.push_back(Value(4096, seed + 100 + i));
  }
  for (auto& v : big_values) big_spans.push_back({v.data(), v.size()});
  calls = InlineCalls(store);
  for (const Status& s : store.PutBatch(big_keys, big_spans)) check.That(s.ok(), "put_batch big: " + s.ToString());
  check.That(InlineCalls(store) == calls, "a batch over the call limit went the two-call way");
  // Parts laid end to end; upsert replaces, put-if-absent keeps.
  const auto a = Value(1000, seed + 30), b = Value(1, seed + 31), c = Value(10000, seed + 32);
  const Span parts[] = {{a.data(), a.size()}, {b.data(), b.size()}, {c.data(), c.size()}};
  check.That(store.PutParts("parts", parts).ok(), "put_parts");
  check.That(store.Put("up", Value(5000, seed + 40)).ok(), "put up");
  check.That(store.Upsert("up", Value(9000, seed + 41)).ok(), "upsert up");
  // Failures: their own codes, and nothing left behind.
  const auto held = store.Stats();
  check.Code(store.Put("up", Value(100, seed + 42)), Code::kAlreadyExists, "a second put of up");
  check.Code(store.Put("bad", Value(100, seed + 43), {.replicas = 0}), Code::kInvalidArgument, "0 replicas");
  check.Code(store.Put("bad", Value(100, seed + 43), {.replicas = kMaxReplicas + 1}), Code::kInvalidArgument,
             "9 replicas");
  check.Code(store.Put("bad", std::span<const uint8_t>()), Code::kInvalidArgument, "an empty value");
  check.Code(store.Put("", Value(100, seed + 43)), Code::kInvalidArgument, "an empty key");
  const auto left = store.Stats();
  if (check.That(held.ok() && left.ok(), "stats")) {
    check.That(left->objects == held->objects, "failed puts added no object");
    check.That(left->pending_puts == 0, "failed puts left nothing pending");
    check.That(left->used == held->used, "failed puts allocated nothing");
  }
  check.Code(store.Get("bad").status(), Code::kNotFound, "a failed put is not visible");
  flags.Raise(0);  // written
  // The reader's replicated value: in both slices, every byte.
  if (check.That(flags.Wait(3), "the reader put rep")) {
    const auto rep = Value(8192, seed + 50);
    auto got = store.Get("rep");
    check.That(got.ok() && *got == rep, "get rep exact");
    auto desc = store.Describe("rep");
    if (check.That(desc.ok() && desc->replicas.size() == 2, "rep has two replicas")) {
      for (const ReplicaDesc& r : desc->replicas) {
        std::vector<uint8_t> bytes(rep.size(), kPoison);
        check.That(store.pool().Copy(reinterpret_cast<uint64_t>(bytes.data()), r.gva, bytes.size()).ok(), "read replica");
        check.That(bytes == rep, "rep's replica on rank " + std::to_string(r.rank) + " exact");
      }
    }
  }
  // A pool of hard-pinned objects only (the reader reads nothing more): an inline put is
  // POOL_FULL and leaves nothing.
  check.That(store.RemoveAll(true).ok(), "remove all");
  // The memory of values read lately stays parked until their leases end (store_lease_ttl_ms)
  // and a call that changes something lets it go (Stats only looks).
  for (int t = 0; t < 1000; ++t) {
    (void)store.Exists("nothing");
    auto st = store.Stats();
    if (st.ok() && st->parked_bytes == 0) break;
    std::this_thread::sleep_for(milliseconds(10));
  }
  Status full;
  int pins = 0;
  for (uint64_t size : {uint64_t{1} << 20, kMaxInlineValueBytes, uint64_t{4096}}) {
    full = OkStatus();
    for (int i = 0; i < 10000 && full.ok(); ++i, ++pins)
      full = store.Put("pin/" + std::to_string(pins), Value(size, seed + pins), {.hard_pin = true});
  }
  check.Code(full, Code::kPoolFull, "a pool of hard-pinned objects");
  const auto pinned = store.Stats();
  check.Code(store.Put("late", Value(4096, seed + 60)), Code::kPoolFull, "an inline put into a full pool");
  const auto after_full = store.Stats();
  if (check.That(pinned.ok() && after_full.ok(), "stats")) {
    check.That(after_full->used == pinned->used, "a full pool's failed inline put allocated nothing");
    check.That(after_full->pending_puts == 0, "and left nothing pending");
    check.That(after_full->objects == pinned->objects, "and added no object");
  }
  check.That(store.Health().ok(), "the master still answers");
  flags.Raise(4);
  check.That(flags.Wait(1), "the reader closed");  // this process hosts the master
  check.That(store.Close().ok(), "close");
  return check.failures();
}

int ReadInline(const Config& config, uint64_t seed, Flags& flags) {
  Checks check("reader");
  if (!check.That(flags.Wait(5), "the host is up")) return check.failures();
  auto opened = Store::Open(config, bm::JoinMode::kJoin);
  if (!check.That(opened.ok(), "open: " + opened.status().ToString())) return 1;
  Store& store = **opened;
  flags.Raise(2);
  if (!check.That(flags.Wait(0), "the host finished writing")) return check.failures();
  struct Want {
    std::string key;
    std::vector<uint8_t> value;
  };
  std::vector<Want> want = {{"small", Value(4096, seed)},
                            {"at", Value(kMaxInlineValueBytes, seed + 1)},
                            {"over", Value(kMaxInlineValueBytes + 1, seed + 2)},
                            {"up", Value(9000, seed + 41)}};
  for (int i = 0; i < 6; ++i) want.push_back({"batch/" + std::to_string(i), Value(4096 + i, seed + 10 + i)});
  for (uint64_t i = 0; i <= kMaxInlineCallBytes / 4096; ++i)
    want.push_back({"bigbatch/" + std::to_string(i), Value(4096, seed + 100 + i)});
  std::vector<uint8_t> parts = Value(1000, seed + 30);
  for (uint8_t x : Value(1, seed + 31)) parts.push_back(x);
  for (uint8_t x : Value(10000, seed + 32)) parts.push_back(x);
  want.push_back({"parts", parts});
  // Get, then get_into a poisoned registered buffer one byte larger than the value.
  std::vector<uint8_t> area(64 << 10, kPoison);
  check.That(store.RegisterBuffer(area.data(), area.size()).ok(), "register");
  for (const Want& w : want) {
    auto got = store.Get(w.key);
    check.That(got.ok() && *got == w.value, "get " + w.key + " exact");
    std::fill(area.begin(), area.end(), kPoison);
    auto n = store.GetInto(w.key, area.data(), w.value.size() + 1);
    check.That(n.ok() && *n == w.value.size() && std::equal(w.value.begin(), w.value.end(), area.begin()) &&
                   area[w.value.size()] == kPoison,
               "get_into " + w.key + " exact, nothing past it");
  }
  check.Code(store.Get("bad").status(), Code::kNotFound, "the failed put left nothing");
  // A replicated inline put from this client: one replica in its own slice, one in the host's.
  // The hosting peer maps this client's slice over shm (auto) and writes both replicas itself;
  // over tcp it does not map it and leaves the put to this client.
  const auto before = store.Stats();
  check.That(store.Put("rep", Value(8192, seed + 50), {.replicas = 2}).ok(), "put rep");
  const auto after = store.Stats();
  if (check.That(before.ok() && after.ok(), "stats")) {
    const bool tcp = config.transport == "tcp";
    check.That(after->inline_puts == before->inline_puts + (tcp ? 0 : 1), "rep written by the master (shm)");
    check.That(after->inline_deferred == before->inline_deferred + (tcp ? 1 : 0), "rep left to this client (tcp)");
    check.That(after->pending_puts == 0, "nothing pending after rep");
  }
  flags.Raise(3);
  check.That(flags.Wait(4), "the host read rep and filled the pool");
  check.That(store.Close().ok(), "close");
  flags.Raise(1);
  return check.failures();
}

TEST_P(StoreCalls, InlinePutsAreReadBackExactlyByAnotherProcessAndFailuresLeaveNothing) {
  Config config = ClientConfig(std::string("store-inline-") + GetParam(), 8 << 20);
  config.store_lease_ttl_ms = 2000;  // so that the pool-full check waits little for parked memory
  config.transport = GetParam();
  config.cluster_secret = "store-test-" + std::to_string(FreshSeed());
  const uint64_t seed = FreshSeed();
  Flags flags;
  PeerProcesses clients(2, [&](int i) {
    return i == 0 ? HostAndWriteInline(config, seed, flags) : ReadInline(config, seed, flags);
  });
  clients.Release();
  EXPECT_EQ(clients.Wait(0), 0) << "the host's checks (stderr above)";
  EXPECT_EQ(clients.Wait(1), 0) << "the reader's checks (stderr above)";
}

// A master running alone (`weft store-master`) has no pool handle. On a unix socket it maps the
// host slices its peers send with their Joins and writes small values itself (one master call),
// as a master hosted by a peer does; on tcp no slice comes, so it places inline puts and leaves
// every copy to the writer, which ends them (two calls). Either way the other process reads
// every byte.
class StoreAlone : public StoreTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(StoreAlone, AMasterAloneWritesSmallValuesWhereItMapsTheSlice) {
  const bool tcp = std::string(GetParam()) == "tcp";
  Config config = ClientConfig(std::string("store-inline-alone-") + GetParam());
  std::vector<std::string> extra;
  if (tcp) {
    config.coordinator = "tcp://127.0.0.1:0";
    config.cluster_secret = "store-test-" + std::to_string(FreshSeed());
    config.transport = "tcp";
    extra = {"--set", "cluster_secret=" + config.cluster_secret};
  }
  StartMaster(config, extra);
  if (HasFatalFailure()) return;
  if (tcp) {  // the port it took
    ASSERT_NE(listening_.find("tcp://"), std::string::npos) << listening_;
    config.coordinator = listening_.substr(listening_.find("tcp://"));
    config.coordinator.erase(config.coordinator.find_last_not_of(" \r\n") + 1);
  }
  const uint64_t seed = FreshSeed();
  Flags flags;
  PeerProcesses clients(2, [&](int i) {
    Checks check(i == 0 ? "writer" : "reader");
    auto store = Store::Open(config, bm::JoinMode::kJoin);
    if (!check.That(store.ok(), "open: " + store.status().ToString())) return 1;
    Store& s = **store;
    if (i == 0) {
      check.That(s.Put("k", Value(4096, seed)).ok(), "put");
      check.That(s.Put("big", Value(kMaxInlineValueBytes + 1, seed + 1)).ok(), "put one byte over the inline limit");
      auto st = s.Stats();
      if (tcp) {
        check.That(st.ok() && st->inline_puts == 0 && st->inline_deferred == 1 && st->pending_puts == 0,
                   "placed by the master, written and ended by the writer");
      } else {
        check.That(st.ok() && st->inline_puts == 1 && st->inline_deferred == 0 && st->pending_puts == 0,
                   "written and ended by the master in the writer's mapped slice");
      }
      flags.Raise(0);
      check.That(flags.Wait(1), "the reader read");  // the values live in this client's slice
      return check.failures();
    }
    if (!check.That(flags.Wait(0), "the writer put")) return check.failures();
    auto got = s.Get("k");
    check.That(got.ok() && *got == Value(4096, seed), "get exact");
    auto big = s.Get("big");
    check.That(big.ok() && *big == Value(kMaxInlineValueBytes + 1, seed + 1), "get big exact");
    flags.Raise(1);
    return check.failures();
  });
  clients.Release();
  EXPECT_EQ(clients.Wait(0), 0) << "the writer's checks (stderr above)";
  EXPECT_EQ(clients.Wait(1), 0) << "the reader's checks (stderr above)";
}

INSTANTIATE_TEST_SUITE_P(Coordinators, StoreAlone, ::testing::Values("unix", "tcp"));

// A client SIGKILLed: its objects (in its own memory) are reported gone once the pool declares
// it down; the other client's objects are untouched and exact.
TEST_F(StoreTest, AKilledClientsObjectsGoAndNothingElse) {
  const Config config = ClientConfig("store-kill");
  StartMaster(config);
  if (HasFatalFailure()) return;
  const uint64_t seed = FreshSeed();
  Flags flags;
  PeerProcesses clients(2, [&](int i) {
    Checks check(i == 0 ? "doomed" : "survivor");
    auto store = Store::Open(config, bm::JoinMode::kJoin);
    if (!check.That(store.ok(), "open: " + store.status().ToString())) return 1;
    for (int k = 0; k < 20; ++k) {
      const std::string key = (i == 0 ? "doomed/" : "kept/") + std::to_string(k);
      check.That((*store)->Put(key, Value(8192 + k, seed + i * 100 + k)).ok(), "put " + key);
    }
    flags.Raise(i);
    if (i == 0) {
      std::this_thread::sleep_for(seconds(120));  // until killed
      return 1;
    }
    check.That(flags.Wait(2), "the doomed client was killed");
    // Gone within the pool's peer timeout (0.8 s); 30 s bounds a hang.
    const auto until = std::chrono::steady_clock::now() + seconds(30);
    bool gone = false;
    while (!gone && std::chrono::steady_clock::now() < until) {
      auto e = (*store)->Exists("doomed/0");
      gone = e.ok() && !*e;
      if (!gone) std::this_thread::sleep_for(milliseconds(50));
    }
    check.That(gone, "the killed client's objects are reported gone");
    for (int k = 0; k < 20; ++k) {
      check.Code((*store)->Get("doomed/" + std::to_string(k)).status(), Code::kNotFound, "doomed/" + std::to_string(k));
      auto got = (*store)->Get("kept/" + std::to_string(k));
      check.That(got.ok() && *got == Value(8192 + k, seed + 100 + k), "kept/" + std::to_string(k) + " exact");
    }
    return check.failures();
  });
  clients.Release();
  Flags& f = flags;
  ASSERT_TRUE(f.Wait(0) && f.Wait(1));
  clients.Kill(0);
  f.Raise(2);
  EXPECT_EQ(clients.Wait(1), 0) << "the survivor's checks (stderr above)";
}

// Filling a small store far past its capacity keeps puts working by evicting unleased objects;
// a leased object stays; with everything hard-pinned a put is POOL_FULL, never a crash.
TEST_F(StoreTest, FillingPastCapacityEvictsAndAFullStoreSaysSo) {
  const Config config = ClientConfig("store-fill", 8 << 20);
  StartMaster(config);
  if (HasFatalFailure()) return;
  const uint64_t seed = FreshSeed();
  PeerProcesses client(1, [&](int) {
    Checks check("filler");
    auto store = Store::Open(config, bm::JoinMode::kJoin);
    if (!check.That(store.ok(), "open: " + store.status().ToString())) return 1;
    Store& s = **store;
    check.That(s.Put("leased", Value(1 << 20, seed)).ok(), "put leased");
    check.That(s.Get("leased").ok(), "get leased");  // the lease (10 s) outlasts the fill below
    for (int i = 0; i < 40; ++i) check.That(s.Put("v" + std::to_string(i), Value(1 << 20, seed + 1 + i)).ok(), "put v" + std::to_string(i));
    auto last = s.Get("v39");
    check.That(last.ok() && *last == Value(1 << 20, seed + 40), "the newest value exact");
    check.Code(s.Get("v0").status(), Code::kNotFound, "the oldest was evicted");
    auto leased = s.Get("leased");
    check.That(leased.ok() && *leased == Value(1 << 20, seed), "the leased value stayed, exact");
    // Hard-pinned until nothing can go.
    Status full;
    for (int i = 0; i < 20 && full.ok(); ++i) full = s.Put("pin" + std::to_string(i), Value(1 << 20, seed), {.hard_pin = true});
    check.Code(full, Code::kPoolFull, "a store of hard-pinned and leased objects");
    check.That(s.Health().ok(), "the master still answers");
    return check.failures();
  });
  client.Release();
  EXPECT_EQ(client.Wait(0), 0) << "the filler's checks (stderr above)";
}

// The SSD tier: a client with store_ssd_path fills a small store far past its memory; the
// evicted objects are served from its disk exactly and promoted back into memory; another client
// does not see them (they are on the writer's disk only); a corrupted file is refused, never
// served.
TEST_F(StoreTest, EvictedObjectsAreServedFromTheWritersDiskAndPromotedBack) {
  const Config base = ClientConfig("store-ssd", 8 << 20);
  StartMaster(base);
  if (HasFatalFailure()) return;
  const std::string dir = "/tmp/weft-store-ssd-" + std::to_string(::getpid());
  const uint64_t seed = FreshSeed();
  Flags flags;
  PeerProcesses clients(2, [&](int i) {
    Checks check(i == 0 ? "ssd writer" : "other");
    Config config = base;
    if (i == 0) config.store_ssd_path = dir;
    auto store = Store::Open(config, bm::JoinMode::kJoin);
    if (!check.That(store.ok(), "open: " + store.status().ToString())) return 1;
    Store& s = **store;
    if (i == 1) {  // holds no SSD tier: sees objects evicted to the writer's disk as missing
      check.That(flags.Wait(0), "the writer filled the store");
      check.Code(s.Get("v0").status(), Code::kNotFound, "an object on another client's disk");
      flags.Raise(1);
      return check.failures();
    }
    // 16 MiB of slices (this client's and the other's); 40 x 1 MiB evicts the oldest.
    check.That(flags.Wait(3), "the other client joined");
    for (int k = 0; k < 40; ++k) check.That(s.Put("v" + std::to_string(k), Value(1 << 20, seed + k)).ok(), "put");
    auto stats = s.Stats();
    check.That(stats.ok() && stats->on_disk > 0, "objects went to disk: " + std::to_string(stats.value_or({}).on_disk));
    flags.Raise(0);
    check.That(flags.Wait(1), "the other client looked");
    // v0, the oldest, is on this client's disk only: so described, and no ranged read of it.
    auto described = s.Describe("v0");
    check.That(described.ok() && described->replicas.empty() && described->disk_rank == static_cast<int32_t>(s.pool().rank()),
               "v0 described as on this client's disk only");
    std::vector<uint8_t> part(4096, kPoison);
    check.That(s.RegisterBuffer(part.data(), part.size()).ok(), "register");
    const std::vector<std::string> v0_key = {"v0"};
    check.Code(s.GetRanges(v0_key, std::vector<RangeRead>{{0, 0, part.size(), part.data()}})[0].status(),
               Code::kNotSupported, "a range of an object on disk only");
    check.That(std::all_of(part.begin(), part.end(), [](uint8_t b) { return b == kPoison; }), "nothing was written");
    auto v0 = s.Get("v0");
    check.That(v0.ok() && *v0 == Value(1 << 20, seed), "v0 from disk, exact: " + v0.status().ToString());
    // Corrupt every file: an object still on disk is refused, never served; v0, promoted back
    // into memory by the read above, is read from there.
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      std::fstream f(entry.path(), std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(-10, std::ios::end);
      f.put('\x5a');
    }
    auto again = s.Get("v0");
    check.That(again.ok() && *again == Value(1 << 20, seed), "v0 from memory after its promotion, exact");
    int refused = 0;
    for (int k = 1; k < 40; ++k) {
      auto got = s.Get("v" + std::to_string(k));
      if (got.ok()) {
        check.That(*got == Value(1 << 20, seed + k), "v" + std::to_string(k) + " exact");
      } else {
        refused += got.status().code() == Code::kIo;
        check.Code(got.status(), Code::kIo, "a corrupted file");
      }
    }
    check.That(refused > 0, "some objects were on disk and refused");
    std::filesystem::remove_all(dir);
    return check.failures();
  });
  clients.Release();
  flags.Raise(3);
  EXPECT_EQ(clients.Wait(0), 0) << "the writer's checks (stderr above)";
  EXPECT_EQ(clients.Wait(1), 0) << "the other client's checks (stderr above)";
}

// GET /metrics of a value (a line "name value"); nullopt when the name is not there.
std::optional<int64_t> MetricValue(const std::string& text, const std::string& name) {
  const std::string head = "\n" + name + " ";
  auto at = ("\n" + text).find(head);
  if (at == std::string::npos) return std::nullopt;
  return std::stoll(text.substr(at + head.size() - 1));
}

std::string Scrape(const std::string& address) {
  auto colon = address.rfind(':');
  httplib::Client client(address.substr(0, colon), std::stoi(address.substr(colon + 1)));
  client.set_read_timeout(std::chrono::seconds(10));
  auto r = client.Get("/metrics");
  if (!r || r->status != 200) return "";
  return r->body;
}

// `weft store-master --set metrics_address=127.0.0.1:0` says where it serves its metrics, and a
// scrape there shows the store's objects as a client puts and removes them; the client, a pool
// peer with a metrics_address of its own, serves its pool's registry.
TEST_F(StoreTest, TheMasterServesItsMetrics) {
  Config config = ClientConfig("store-metrics");
  StartMaster(config, {"--set", "metrics_address=127.0.0.1:0"});
  if (HasFatalFailure()) return;
  const std::string line = master_->WaitFor("metrics on http://", seconds(20));
  ASSERT_NE(line, "") << master_->output();
  const auto from = line.find("http://") + 7;
  const std::string address = line.substr(from, line.find("/metrics") - from);

  std::string text = Scrape(address);
  ASSERT_NE(text, "") << "scraping " << address;
  EXPECT_EQ(MetricValue(text, "weft_store_objects"), 0) << text;
  EXPECT_EQ(MetricValue(text, "weft_coordinator_peers_up"), 0) << text;

  config.metrics_address = "127.0.0.1:0";
  auto store = Store::Open(config, bm::JoinMode::kJoin);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  const uint64_t seed = FreshSeed();
  uint64_t bytes = 0;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE((*store)->Put("m/" + std::to_string(i), Value(1000 + i, seed + i)).ok());
    bytes += 1000 + i;
  }
  ASSERT_TRUE((*store)->Remove("m/0").ok());
  bytes -= 1000;
  EXPECT_EQ((*store)->Put("m/1", Value(10, seed)).code(), Code::kAlreadyExists);
  // Over the inline limit: placed by put_start, copied by the client, ended by put_end.
  ASSERT_TRUE((*store)->Put("m/big", Value(kMaxInlineValueBytes + 1, seed + 9)).ok());
  bytes += kMaxInlineValueBytes + 1;

  text = Scrape(address);
  EXPECT_EQ(MetricValue(text, "weft_store_objects"), 5) << text;
  EXPECT_EQ(MetricValue(text, "weft_store_bytes"), static_cast<int64_t>(bytes)) << text;
  EXPECT_EQ(MetricValue(text, "weft_store_pending_puts"), 0) << text;
  EXPECT_EQ(MetricValue(text, "weft_store_on_disk_objects"), 0) << text;
  EXPECT_EQ(MetricValue(text, "weft_store_capacity_bytes"), static_cast<int64_t>(config.rank_size)) << text;
  EXPECT_GE(MetricValue(text, "weft_store_used_bytes").value_or(0), static_cast<int64_t>(bytes)) << text;
  EXPECT_EQ(MetricValue(text, "weft_alloc_host_capacity_bytes"), static_cast<int64_t>(config.rank_size)) << text;
  EXPECT_EQ(MetricValue(text, "weft_coordinator_peers_up"), 1) << text;
  EXPECT_EQ(MetricValue(text, "weft_coordinator_joins_total"), 1) << text;
  EXPECT_GE(MetricValue(text, "weft_coordinator_service_calls_total").value_or(0), 9) << text;  // a call per put at least, and the remove
  // Small values travel inline; a master alone on a unix socket maps the writer's slice and
  // writes and ends them itself: put_end only for the large one.
  EXPECT_EQ(MetricValue(text, "weft_store_keys_total{op=\"put_inline\"}"), 6) << text;
  EXPECT_EQ(MetricValue(text, "weft_store_keys_total{op=\"put_end\"}"), 1) << text;
  EXPECT_EQ(MetricValue(text, "weft_store_keys_total{op=\"remove\"}"), 1) << text;
  EXPECT_EQ(MetricValue(text, "weft_store_key_errors_total{op=\"put_inline\",code=\"ALREADY_EXISTS\"}"), 1) << text;
  EXPECT_EQ(MetricValue(text, "weft_store_inline_puts_total"), 5) << text;
  EXPECT_EQ(MetricValue(text, "weft_store_inline_deferred_total"), 0) << text;

  const std::string peer = (*store)->pool().metrics_address();
  ASSERT_NE(peer, "");
  const std::string mine = Scrape(peer);
  EXPECT_TRUE(MetricValue(mine, "weft_copies_total").has_value()) << mine;
  // Its puts copied into the pool: by path and by the kinds of their ends (local host to pool host).
  EXPECT_NE(mine.find("# TYPE weft_copy_path_bytes_total counter\nweft_copy_path_bytes_total{path=\""),
            std::string::npos) << mine;
  EXPECT_NE(mine.find(",dir=\"LH2GH\"}"), std::string::npos) << mine;
  EXPECT_FALSE(MetricValue(mine, "weft_store_objects").has_value()) << "only the master's scrape has the store's";

  ASSERT_TRUE((*store)->Close().ok());
  const auto until = std::chrono::steady_clock::now() + seconds(30);
  while (MetricValue(Scrape(address), "weft_coordinator_peers_left_total") != 1 &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  text = Scrape(address);
  EXPECT_EQ(MetricValue(text, "weft_coordinator_peers_left_total"), 1) << text;
  EXPECT_EQ(MetricValue(text, "weft_coordinator_peers_up"), 0) << text;
}

}  // namespace
}  // namespace weft::store
