// An HA master's durable state (api/bm/pool_state.h) end to end in one process: what a leader's
// allocator and store do is recorded through the journal into a directory, loaded back, and
// restored into a fresh allocator and master, which then answer as the first did.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "api/bm/pool_state.h"
#include "meta/memory_store.h"

namespace weft::bm {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kSlice = 1 << 20;
constexpr uint32_t kRanks = 3;

gva::Layout TestLayout() { return *gva::Layout::Make(0x200000000000ull, kSlice, 8); }

// A leader's allocator and master, recording into `dir` under the guard it holds.
struct Leader {
  explicit Leader(meta::Directory& dir, const PoolState& from = {})
      : allocator(TestLayout()), master(allocator, store::MasterOptions{}) {
    auto lease = dir.Grant(60s);
    EXPECT_TRUE(lease.ok());
    EXPECT_TRUE(dir.Put(kGuardKey, "leader", *lease).ok());
    journal = std::make_unique<meta::JournalWriter>(dir, meta::JournalWriterOptions{{kGuardKey, *lease}});
    report = RestorePoolState(from, allocator, master);
    recorder = std::make_unique<PoolStateRecorder>(*journal, kPrefix, TestLayout(), from);
    master.SetObserver(recorder->MasterObserver());
  }
  void Join(uint32_t rank) {
    recorder->OnJoined(rank, "peer-" + std::to_string(rank));
    ASSERT_TRUE(allocator.AddSlice(rank, gva::Medium::kHost, kSlice).ok());
    recorder->OnAddSlice(rank, gva::Medium::kHost, kSlice);
  }
  uint64_t Alloc(uint32_t rank, uint64_t size) {
    auto gva = allocator.Alloc(size, Placement::OnRank(rank), rank);
    EXPECT_TRUE(gva.ok()) << gva.status().ToString();
    recorder->OnAlloc(*gva, size);
    return *gva;
  }
  void Put(const std::string& key, uint64_t size, uint32_t writer, bool end = true) {
    ASSERT_TRUE(master.PutStart(writer, key, size, {}, false).ok());
    if (!end) return;
    ASSERT_TRUE(master.PutEnd(writer, key).ok());
  }

  static constexpr const char* kGuardKey = "/weft/t/leader";
  static constexpr const char* kPrefix = "/weft/t/state/";
  gva::Allocator allocator;
  store::Master master;
  std::unique_ptr<meta::JournalWriter> journal;
  std::unique_ptr<PoolStateRecorder> recorder;
  RestoreSummary report;
};

PoolState Load(meta::Directory& dir) {
  auto state = LoadPoolState(dir, Leader::kPrefix, Deadline::After(10s));
  EXPECT_TRUE(state.ok()) << state.status().ToString();
  return state.ok() ? *state : PoolState{};
}

TEST(PoolState, ALeadersStateComesBackWholeInTheNextLeader) {
  meta::MemoryStore dir;
  PoolState saved;
  uint64_t bm_alloc = 0;
  std::map<std::string, store::ObjectView> before;
  {
    Leader first(dir);
    for (uint32_t r = 0; r < kRanks; ++r) first.Join(r);
    bm_alloc = first.Alloc(1, 5000);
    for (int i = 0; i < 20; ++i) first.Put("k" + std::to_string(i), 1000 + i, i % kRanks);
    ASSERT_TRUE(first.master.Remove("k3", true).ok());
    first.Put("pending", 777, 2, /*end=*/false);
    for (int i = 0; i < 20; ++i) {
      if (i != 3) before["k" + std::to_string(i)] = *first.master.Describe("k" + std::to_string(i));
    }
    ASSERT_TRUE(first.journal->Flush(Deadline::After(10s)).ok());
    ASSERT_TRUE(dir.Delete(Leader::kGuardKey).ok());  // the first leader is gone
  }
  saved = Load(dir);
  EXPECT_EQ(saved.unreadable, 0u);
  ASSERT_EQ(saved.members.size(), kRanks);
  for (uint32_t r = 0; r < kRanks; ++r) {
    EXPECT_EQ(saved.members[r].peer_name, "peer-" + std::to_string(r));
    EXPECT_EQ(saved.members[r].host_capacity, kSlice);
  }
  EXPECT_EQ(saved.allocations, (std::map<uint64_t, uint64_t>{{bm_alloc, 5000}}));
  EXPECT_EQ(saved.objects.size(), 20u) << "19 complete, 1 pending";

  Leader next(dir, saved);
  EXPECT_EQ(next.report.members, kRanks);
  EXPECT_EQ(next.report.allocations, 1u);
  EXPECT_EQ(next.report.objects, 20u);
  EXPECT_EQ(next.report.skipped_objects + next.report.skipped_allocations + next.report.skipped_slices, 0u);
  for (const auto& [key, view] : before) {
    auto got = next.master.Describe(key);
    ASSERT_TRUE(got.ok()) << key << ": " << got.status().ToString();
    EXPECT_EQ(got->size, view.size) << key;
    EXPECT_EQ(got->id, view.id) << key;
    ASSERT_EQ(got->replicas.size(), view.replicas.size()) << key;
    EXPECT_EQ(got->replicas[0].gva, view.replicas[0].gva) << key;
  }
  EXPECT_EQ(next.master.Describe("k3").status().code(), Code::kNotFound) << "removed before the failover";
  EXPECT_TRUE(next.master.PutEnd(2, "pending").ok()) << "a put pending at the failover can still end";
  EXPECT_EQ(next.allocator.Free(bm_alloc).code(), Code::kOk) << "the pool allocation is live in the new allocator";
}

TEST(PoolState, ADepartedMembersRecordAndAllocationsGoButOthersStay) {
  meta::MemoryStore dir;
  Leader leader(dir);
  for (uint32_t r = 0; r < kRanks; ++r) leader.Join(r);
  const uint64_t kept = leader.Alloc(0, 100);
  leader.Alloc(2, 100);
  leader.Alloc(2, 200);
  leader.recorder->OnGone(2);
  ASSERT_TRUE(leader.journal->Flush(Deadline::After(10s)).ok());
  PoolState state = Load(dir);
  EXPECT_EQ(state.members.size(), 2u);
  EXPECT_EQ(state.members.count(2), 0u);
  EXPECT_EQ(state.allocations, (std::map<uint64_t, uint64_t>{{kept, 100}}));
}

TEST(PoolState, APutThatEndedBetweenBatchesLoadsOnceAndGarbageIsSkippedAndCounted) {
  meta::MemoryStore dir;
  store::ObjectRecord o;
  o.key = "k";
  o.size = 10;
  o.id = 7;
  o.replicas = {{0, TestLayout().SliceBase(gva::Medium::kHost, 0)}};
  auto put = [&](const std::string& key, const std::vector<uint8_t>& v) {
    ASSERT_TRUE(dir.Put(std::string(Leader::kPrefix) + key, std::string(v.begin(), v.end())).ok());
  };
  put("o/k", store::EncodeObjectRecord(o));
  store::ObjectRecord pending = o;
  pending.complete = false;
  put("p/k", store::EncodeObjectRecord(pending));
  put("m/zz", {1, 2, 3});
  put("o/other", store::EncodeObjectRecord(o));  // a record under another key's name
  put("x/what", {});
  PoolState state = Load(dir);
  ASSERT_EQ(state.objects.size(), 1u);
  EXPECT_TRUE(state.objects[0].complete);
  EXPECT_EQ(state.unreadable, 3u);
}

TEST(PoolState, MemberRecordsRoundTripAndRefuseGarbage) {
  MemberRecord m{"node-7", 123, 456};
  const std::string bytes = EncodeMember(m);
  auto back = DecodeMember(bytes);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->peer_name, "node-7");
  EXPECT_EQ(back->host_capacity, 123u);
  EXPECT_EQ(back->device_capacity, 456u);
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_EQ(DecodeMember(std::string_view(bytes).substr(0, n)).status().code(), Code::kProtocol) << n;
  }
  EXPECT_EQ(DecodeMember(bytes + "x").status().code(), Code::kProtocol);
}

}  // namespace
}  // namespace weft::bm
