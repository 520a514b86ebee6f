// The store's master on its own: an allocator over a few slices and a clock the test moves.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <utility>
#include <set>
#include <string>

#include "api/store/master.h"

namespace weft::store {
namespace {

using std::chrono::milliseconds;
using TimePoint = std::chrono::steady_clock::time_point;

constexpr uint64_t kSlice = 1 << 20;  // each rank's capacity

class StoreMaster : public ::testing::Test {
 protected:
  explicit StoreMaster(MasterOptions options = {}) : allocator_(*gva::Layout::Make(0x200000000000ull, kSlice, 8)) {
    for (uint32_t r = 0; r < 4; ++r) EXPECT_TRUE(allocator_.AddSlice(r, gva::Medium::kHost, kSlice).ok());
    master_ = std::make_unique<Master>(allocator_, options, [this] { return now_; });
  }

  // A complete object of `size` bytes written by `writer`.
  Status Put(const std::string& key, uint64_t size, uint32_t writer = 0, PlaceOptions place = {}, bool upsert = false) {
    auto replicas = master_->PutStart(writer, key, size, place, upsert);
    if (!replicas.ok()) return replicas.status();
    return master_->PutEnd(writer, key);
  }
  void Advance(milliseconds d) { now_ += d; }

  gva::Allocator allocator_;
  TimePoint now_ = TimePoint() + std::chrono::hours(1);
  std::unique_ptr<Master> master_;
};

TEST_F(StoreMaster, APutIsInvisibleUntilItEndsAndThenReadable) {
  auto replicas = master_->PutStart(2, "k", 1000, {}, false);
  ASSERT_TRUE(replicas.ok()) << replicas.status().ToString();
  ASSERT_EQ(replicas->replicas.size(), 1u);
  EXPECT_EQ(replicas->replicas[0].rank, 2u) << "the writer's own slice first";
  EXPECT_EQ(master_->Get("k").status().code(), Code::kNotFound);
  EXPECT_FALSE(master_->Exists("k"));
  ASSERT_TRUE(master_->PutEnd(2, "k").ok());
  auto view = master_->Get("k");
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(view->size, 1000u);
  EXPECT_EQ(view->replicas[0].gva, replicas->replicas[0].gva);
  EXPECT_EQ(view->lease, milliseconds(10000));
  EXPECT_EQ(master_->PutEnd(2, "k").code(), Code::kNotFound) << "ended twice";
}

TEST_F(StoreMaster, PutKeepsTheFirstValueAndUpsertReplacesIt) {
  ASSERT_TRUE(Put("k", 100).ok());
  const uint64_t first = master_->Get("k")->replicas[0].gva;
  EXPECT_EQ(Put("k", 200).code(), Code::kAlreadyExists);
  EXPECT_EQ(master_->Get("k")->size, 100u);
  // Upsert: the old value stays readable until the new one ends.
  auto next = master_->PutStart(0, "k", 300, {}, true);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(master_->Get("k")->replicas[0].gva, first);
  ASSERT_TRUE(master_->PutEnd(0, "k").ok());
  EXPECT_EQ(master_->Get("k")->size, 300u);
  EXPECT_EQ(master_->Get("k")->replicas[0].gva, next->replicas[0].gva);
}

TEST_F(StoreMaster, ASecondPutOfAPendingKeyIsRefused) {
  ASSERT_TRUE(master_->PutStart(0, "k", 10, {}, false).ok());
  EXPECT_EQ(master_->PutStart(1, "k", 10, {}, false).status().code(), Code::kAlreadyExists);
  EXPECT_EQ(master_->PutStart(1, "k", 10, {}, true).status().code(), Code::kAlreadyExists);
  EXPECT_EQ(master_->PutEnd(1, "k").code(), Code::kNotFound) << "only the writer ends its put";
  ASSERT_TRUE(master_->PutRevoke(0, "k").ok());
  EXPECT_EQ(master_->Get("k").status().code(), Code::kNotFound);
  EXPECT_EQ(allocator_.Stats(0, gva::Medium::kHost)->used, 0u) << "a revoked put frees its memory";
}

TEST_F(StoreMaster, APutNeverEndedIsRevokedAfterTheTimeout) {
  ASSERT_TRUE(master_->PutStart(0, "k", 4096, {}, false).ok());
  Advance(milliseconds(29999));
  master_->Expire();
  EXPECT_EQ(master_->Stats().pending_puts, 1u);
  Advance(milliseconds(1));
  master_->Expire();
  EXPECT_EQ(master_->Stats().pending_puts, 0u);
  EXPECT_EQ(master_->PutEnd(0, "k").code(), Code::kNotFound);
  EXPECT_EQ(allocator_.Stats(0, gva::Medium::kHost)->used, 0u);
}

TEST_F(StoreMaster, BadInputIsInvalidArgument) {
  EXPECT_EQ(master_->PutStart(0, "", 10, {}, false).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(master_->PutStart(0, std::string(kMaxKeyBytes + 1, 'k'), 10, {}, false).status().code(),
            Code::kInvalidArgument);
  EXPECT_TRUE(master_->PutStart(0, std::string(kMaxKeyBytes, 'k'), 10, {}, false).ok());
  EXPECT_EQ(master_->PutStart(0, "z", 0, {}, false).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(master_->PutStart(0, "big", kSlice + 1, {}, false).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(master_->PutStart(0, "r", 10, {.replicas = 0}, false).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(master_->PutStart(0, "r", 10, {.replicas = kMaxReplicas + 1}, false).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(master_->RemoveByRegex("(unclosed", false).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(master_->Get("").status().code(), Code::kInvalidArgument);
}

TEST_F(StoreMaster, ReplicasGoToDistinctPeersAsFarAsThereArePeers) {
  auto three = master_->PutStart(1, "three", 1000, {.replicas = 3}, false);
  ASSERT_TRUE(three.ok());
  std::set<uint32_t> ranks;
  for (const Replica& r : three->replicas) ranks.insert(r.rank);
  EXPECT_EQ(ranks.size(), 3u);
  EXPECT_EQ(three->replicas[0].rank, 1u);
  auto eight = master_->PutStart(1, "eight", 1000, {.replicas = 8}, false);
  ASSERT_TRUE(eight.ok());
  EXPECT_EQ(eight->replicas.size(), 4u) << "best effort: four peers, four replicas";
  auto preferred = master_->PutStart(1, "there", 1000, {.preferred_rank = 3}, false);
  ASSERT_TRUE(preferred.ok());
  EXPECT_EQ(preferred->replicas[0].rank, 3u);
}

TEST_F(StoreMaster, ALeaseHoldsOffRemovalUntilItEnds) {
  ASSERT_TRUE(Put("k", 100).ok());
  ASSERT_TRUE(master_->Get("k").ok());
  EXPECT_EQ(master_->Remove("k", false).code(), Code::kBusy);
  Advance(milliseconds(10000));
  EXPECT_TRUE(master_->Remove("k", false).ok());
  EXPECT_EQ(master_->Remove("k", false).code(), Code::kNotFound);
  ASSERT_TRUE(Put("e", 100).ok());
  EXPECT_TRUE(master_->Exists("e"));
  EXPECT_EQ(master_->Remove("e", false).code(), Code::kBusy) << "exists grants a lease too";
}

TEST_F(StoreMaster, MemoryOfALeasedObjectRemovedByForceIsParkedUntilTheLeaseEnds) {
  ASSERT_TRUE(Put("k", 100).ok());
  const uint64_t gva = master_->Get("k")->replicas[0].gva;
  ASSERT_TRUE(master_->Remove("k", true).ok());
  EXPECT_EQ(master_->Get("k").status().code(), Code::kNotFound);
  EXPECT_TRUE(allocator_.AllocationSize(gva).ok()) << "a reader may still be copying it";
  EXPECT_GT(master_->Stats().parked_bytes, 0u);
  Advance(milliseconds(10000));
  master_->Expire();
  EXPECT_FALSE(allocator_.AllocationSize(gva).ok());
  EXPECT_EQ(master_->Stats().parked_bytes, 0u);
}

TEST_F(StoreMaster, AnUpsertOfALeasedObjectParksTheOldValue) {
  ASSERT_TRUE(Put("k", 100).ok());
  const uint64_t old = master_->Get("k")->replicas[0].gva;
  ASSERT_TRUE(Put("k", 200, 0, {}, true).ok());
  EXPECT_TRUE(allocator_.AllocationSize(old).ok());
  Advance(milliseconds(10001));
  master_->Expire();
  EXPECT_FALSE(allocator_.AllocationSize(old).ok());
  EXPECT_EQ(master_->Get("k")->size, 200u);
}

// Describe says where an object is as Get does, but takes no lease (a remove right after it
// needs no force) and is no access (the eviction order is as if it never happened).
TEST_F(StoreMaster, DescribeNamesTheReplicasWithoutALeaseOrAnAccess) {
  ASSERT_TRUE(Put("two", 1000, 1, {.replicas = 2}).ok());
  auto desc = master_->Describe("two");
  ASSERT_TRUE(desc.ok()) << desc.status().ToString();
  EXPECT_EQ(desc->lease, milliseconds(0));
  auto view = master_->Get("two");
  ASSERT_TRUE(view.ok());
  EXPECT_EQ(desc->size, 1000u);
  EXPECT_EQ(desc->id, view->id);
  EXPECT_EQ(desc->disk_rank, -1);
  ASSERT_EQ(desc->replicas.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(desc->replicas[i].rank, view->replicas[i].rank);
    EXPECT_EQ(desc->replicas[i].gva, view->replicas[i].gva);
  }
  Advance(milliseconds(10000));  // the Get's lease ends
  ASSERT_TRUE(master_->Describe("two").ok());
  EXPECT_TRUE(master_->Remove("two", false).ok()) << "a describe holds no lease";
  EXPECT_EQ(master_->Describe("two").status().code(), Code::kNotFound);
  EXPECT_EQ(master_->Describe("").status().code(), Code::kInvalidArgument);
  ASSERT_TRUE(master_->PutStart(0, "pending", 10, {}, false).ok());
  EXPECT_EQ(master_->Describe("pending").status().code(), Code::kNotFound) << "a put not yet ended";

  // "old" is described after "new" and eight more were put: were that an access, "old" would
  // be the most recently used and outlive the first eviction round (a few objects); it goes
  // no later than "new" does.
  const uint64_t size = 64 << 10;
  ASSERT_TRUE(Put("old", size).ok());
  Advance(milliseconds(1));
  ASSERT_TRUE(Put("new", size).ok());
  for (int i = 0; i < 8; ++i) {
    Advance(milliseconds(1));
    ASSERT_TRUE(Put("between" + std::to_string(i), size).ok());
  }
  Advance(milliseconds(1));
  ASSERT_TRUE(master_->Describe("old").ok());
  Advance(milliseconds(1));
  for (int i = 0; i < 80 && master_->Describe("new").ok(); ++i) {
    ASSERT_TRUE(Put("fill" + std::to_string(i), size).ok()) << i;
    Advance(milliseconds(1));
  }
  EXPECT_EQ(master_->Describe("new").status().code(), Code::kNotFound) << "the fill evicted";
  EXPECT_EQ(master_->Describe("old").status().code(), Code::kNotFound) << "the older one went no later";
}

TEST_F(StoreMaster, RemoveByRegexAndRemoveAllSkipLeasedObjectsUnlessForced) {
  for (const char* key : {"a/1", "a/2", "b/1"}) ASSERT_TRUE(Put(key, 10).ok());
  ASSERT_TRUE(master_->Get("a/2").ok());
  auto n = master_->RemoveByRegex("^a/", false);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u);
  EXPECT_TRUE(master_->Get("a/2").ok());
  EXPECT_EQ(master_->RemoveAll(false), 1u) << "b/1 only: a/2 is leased";
  EXPECT_EQ(master_->RemoveAll(true), 1u);
  EXPECT_EQ(master_->Stats().objects, 0u);
}

TEST_F(StoreMaster, FillingPastCapacityEvictsTheLeastRecentlyUsedUnleasedObjects) {
  // 4 slices of 1 MiB; 64 KiB objects on rank 0 until well past the pool's capacity.
  const uint64_t size = 64 << 10;
  for (int i = 0; i < 80; ++i) {
    ASSERT_TRUE(Put("o" + std::to_string(i), size).ok()) << i;
    Advance(milliseconds(1));
    if (i == 5) {
      ASSERT_TRUE(master_->Get("o0").ok());  // read recently: kept while leased
    }
  }
  const MasterStats st = master_->Stats();
  EXPECT_GT(st.evicted, 0u);
  EXPECT_LE(static_cast<double>(st.used), 0.90 * static_cast<double>(st.capacity));
  EXPECT_TRUE(master_->Get("o79").ok()) << "the newest stays";
  EXPECT_TRUE(master_->Get("o0").ok()) << "a leased object is never evicted";
  EXPECT_EQ(master_->Get("o1").status().code(), Code::kNotFound) << "the oldest unleased goes first";
}

TEST_F(StoreMaster, HardPinnedAndLeasedObjectsStayAndAFullPoolSaysSo) {
  const uint64_t size = 256 << 10;
  int stored = 0;
  for (int i = 0; i < 16; ++i) stored += Put("pin" + std::to_string(i), size, 0, {.hard_pin = true}).ok();
  EXPECT_GE(stored, 13);  // 16 fit exactly but eviction starts at the watermark; pinned never go
  Status full;
  for (int i = 0; i < 20 && full.ok(); ++i) full = Put("more" + std::to_string(i), size);
  EXPECT_EQ(full.code(), Code::kPoolFull) << full.ToString();
  for (int i = 0; i < stored; ++i) EXPECT_TRUE(master_->Exists("pin" + std::to_string(i))) << i;
}

TEST_F(StoreMaster, SoftPinnedObjectsAreEvictedAfterTheOthers) {
  const uint64_t size = 64 << 10;
  ASSERT_TRUE(Put("soft", size, 0, {.soft_pin = true}).ok());
  Advance(milliseconds(1));
  for (int i = 0; i < 70; ++i) {
    ASSERT_TRUE(Put("o" + std::to_string(i), size).ok()) << i;
    Advance(milliseconds(1));
  }
  EXPECT_GT(master_->Stats().evicted, 0u);
  EXPECT_TRUE(master_->Exists("soft"));
}

TEST_F(StoreMaster, ADeadPeerTakesOnlyItsReplicasAndItsPendingPuts) {
  ASSERT_TRUE(Put("on1", 100, 1).ok());
  ASSERT_TRUE(Put("on2", 100, 2).ok());
  ASSERT_TRUE(Put("both", 100, 1, {.replicas = 2}).ok());
  ASSERT_TRUE(master_->PutStart(1, "pending-by-1", 100, {.preferred_rank = 2}, false).ok());
  ASSERT_TRUE(master_->PutStart(2, "pending-on-1", 100, {.preferred_rank = 1}, false).ok());
  master_->DropRank(1);
  allocator_.RemoveSlice(1, gva::Medium::kHost);
  EXPECT_EQ(master_->Get("on1").status().code(), Code::kNotFound);
  ASSERT_TRUE(master_->Get("on2").ok());
  auto both = master_->Get("both");
  ASSERT_TRUE(both.ok());
  ASSERT_EQ(both->replicas.size(), 1u);
  EXPECT_NE(both->replicas[0].rank, 1u);
  EXPECT_EQ(master_->PutEnd(2, "pending-on-1").code(), Code::kNotFound) << "it lost its replica";
  EXPECT_EQ(master_->Stats().pending_puts, 0u);
  // The pending puts' memory on the live peers was freed: what rank 2 holds is what objects list.
  uint64_t on_rank2 = 0;
  for (const char* key : {"on2", "both"}) {
    const auto view = master_->Get(key);
    ASSERT_TRUE(view.ok()) << key;
    for (const Replica& r : view->replicas) on_rank2 += r.rank == 2;
  }
  EXPECT_EQ(allocator_.Stats(2, gva::Medium::kHost)->allocations, on_rank2);
}

// The SSD tier's side in the master: an object ended with a copy on its writer's disk stays
// known when evicted (no replicas, the disk's rank), is promoted back by that writer, and goes
// with the writer.
TEST_F(StoreMaster, AnEvictedObjectKeptOnDiskStaysKnownAndIsPromotedBack) {
  const uint64_t size = 256 << 10;
  auto placed = master_->PutStart(1, "disk", size, {.preferred_rank = 0}, false);
  ASSERT_TRUE(placed.ok());
  ASSERT_TRUE(master_->PutEnd(1, "disk", true).ok());
  Advance(milliseconds(1));
  for (int i = 0; i < 20; ++i) {  // 5 MiB into 4 MiB of slices: "disk" is the oldest
    ASSERT_TRUE(Put("o" + std::to_string(i), size).ok()) << i;
    Advance(milliseconds(1));
  }
  auto view = master_->Get("disk");
  ASSERT_TRUE(view.ok()) << "evicted, but its writer keeps it on disk";
  EXPECT_TRUE(view->replicas.empty());
  EXPECT_EQ(view->disk_rank, 1);
  EXPECT_EQ(view->id, placed->id);
  EXPECT_EQ(master_->Stats().on_disk, 1u);
  // Promotion: only of that id, once.
  EXPECT_EQ(master_->PutStart(1, "disk", 0, {}, false, placed->id + 1000).status().code(), Code::kNotFound);
  Advance(milliseconds(10000));  // the lease of the Get above ends, so that the fill can evict
  auto promoted = master_->PutStart(1, "disk", 0, {}, false, placed->id);
  ASSERT_TRUE(promoted.ok()) << promoted.status().ToString();
  EXPECT_EQ(promoted->id, placed->id);
  EXPECT_TRUE(master_->Get("disk")->replicas.empty()) << "readers see it on disk until the promotion ends";
  ASSERT_TRUE(master_->PutEnd(1, "disk").ok());
  view = master_->Get("disk");
  ASSERT_EQ(view->replicas.size(), 1u);
  EXPECT_EQ(view->replicas[0].gva, promoted->replicas[0].gva);
  EXPECT_EQ(view->disk_rank, 1);
  EXPECT_EQ(master_->PutStart(1, "disk", 0, {}, false, placed->id).status().code(), Code::kNotFound)
      << "already in memory";
}

TEST_F(StoreMaster, APromotionOfAnObjectRemovedMeanwhileFreesItsMemory) {
  auto placed = master_->PutStart(1, "disk", 1000, {}, false);
  ASSERT_TRUE(placed.ok());
  const uint64_t id = placed->id;
  ASSERT_TRUE(master_->PutEnd(1, "disk", true).ok());
  for (int i = 0; i < 80; ++i) {  // past the pool's capacity: "disk", the oldest, is evicted
    Advance(milliseconds(1));
    ASSERT_TRUE(Put("o" + std::to_string(i), 64 << 10, 1).ok());
  }
  ASSERT_TRUE(master_->Get("disk")->replicas.empty());
  Advance(milliseconds(10000));
  auto promoted = master_->PutStart(1, "disk", 0, {}, false, id);
  ASSERT_TRUE(promoted.ok()) << promoted.status().ToString();
  ASSERT_TRUE(master_->Remove("disk", true).ok());
  EXPECT_EQ(master_->PutEnd(1, "disk").code(), Code::kNotFound);
  EXPECT_FALSE(allocator_.AllocationSize(promoted->replicas[0].gva).ok()) << "the promotion's memory went back";
}

TEST_F(StoreMaster, ObjectsOnTheDiskOfADeadPeerGoWithIt) {
  ASSERT_TRUE(master_->PutStart(2, "disk", 1000, {.preferred_rank = 0}, false).ok());
  ASSERT_TRUE(master_->PutEnd(2, "disk", true).ok());
  master_->DropRank(2);
  allocator_.RemoveSlice(2, gva::Medium::kHost);
  auto view = master_->Get("disk");
  ASSERT_TRUE(view.ok()) << "its replica on rank 0 stays";
  EXPECT_EQ(view->disk_rank, -1);
  master_->DropRank(0);
  allocator_.RemoveSlice(0, gva::Medium::kHost);
  EXPECT_EQ(master_->Get("disk").status().code(), Code::kNotFound);
}

TEST_F(StoreMaster, StatsCountObjectsAndBytes) {
  ASSERT_TRUE(Put("a", 1000, 0, {.replicas = 2}).ok());
  ASSERT_TRUE(master_->PutStart(0, "b", 10, {}, false).ok());
  const MasterStats st = master_->Stats();
  EXPECT_EQ(st.objects, 1u);
  EXPECT_EQ(st.pending_puts, 1u);
  EXPECT_EQ(st.bytes, 2000u);
  EXPECT_EQ(st.capacity, 4 * kSlice);
  EXPECT_GE(st.used, 2010u);
}

// Inline puts: the master places the value, writes it through the host's ReplicaWriter (here a
// map standing in for the slices) and ends the put before it answers.
class StoreMasterInline : public StoreMaster {
 protected:
  ReplicaWriter Writer() {
    return [this](const Replica& r, std::span<const uint8_t> value) {
      ++writes_;
      memory_[r.gva].assign(value.begin(), value.end());
      return OkStatus();
    };
  }
  static std::vector<uint8_t> Bytes(size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7);
    return v;
  }
  uint64_t Used() {
    uint64_t used = 0;
    for (const auto& [rank, stats] : allocator_.Slices(gva::Medium::kHost)) used += stats.used;
    return used;
  }
  std::map<uint64_t, std::vector<uint8_t>> memory_;
  int writes_ = 0;
};

TEST_F(StoreMasterInline, AWrittenPutIsCompleteAndVisibleWhenTheMasterAnswers) {
  const auto value = Bytes(3000, 1);
  auto put = master_->PutInline(1, "k", value, {.replicas = 2}, false, Writer());
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  EXPECT_TRUE(put->complete);
  ASSERT_EQ(put->placed.replicas.size(), 2u);
  EXPECT_EQ(put->placed.replicas[0].rank, 1u) << "the writer's own slice first, as PutStart";
  auto view = master_->Get("k");
  ASSERT_TRUE(view.ok()) << "visible without a PutEnd from the writer";
  EXPECT_EQ(view->size, value.size());
  for (const Replica& r : view->replicas) EXPECT_EQ(memory_[r.gva], value) << "replica on rank " << r.rank;
  EXPECT_EQ(master_->PutEnd(1, "k").code(), Code::kNotFound) << "nothing left pending";
  const MasterStats st = master_->Stats();
  EXPECT_EQ(st.inline_puts, 1u);
  EXPECT_EQ(st.inline_deferred, 0u);
  EXPECT_EQ(st.pending_puts, 0u);
}

TEST_F(StoreMasterInline, WithoutAWriterThePutIsLeftPendingToItsWriter) {
  const auto value = Bytes(100, 2);
  auto put = master_->PutInline(0, "k", value, {}, false, {});
  ASSERT_TRUE(put.ok());
  EXPECT_FALSE(put->complete);
  EXPECT_EQ(master_->Get("k").status().code(), Code::kNotFound) << "pending: readers do not see it";
  EXPECT_EQ(master_->Stats().inline_deferred, 1u);
  EXPECT_EQ(master_->PutEnd(1, "k").code(), Code::kNotFound) << "only its writer ends it";
  ASSERT_TRUE(master_->PutEnd(0, "k").ok());
  EXPECT_EQ(master_->Get("k")->size, 100u);
}

TEST_F(StoreMasterInline, AFailedReplicaWriteLeavesThePutToItsWriterWhoMayRevokeIt) {
  int calls = 0;
  ReplicaWriter second_fails = [&](const Replica&, std::span<const uint8_t>) {
    return ++calls == 2 ? Error(Code::kNotSupported, "not mapped here") : OkStatus();
  };
  auto put = master_->PutInline(0, "k", Bytes(500, 3), {.replicas = 3}, false, second_fails);
  ASSERT_TRUE(put.ok());
  EXPECT_FALSE(put->complete);
  EXPECT_EQ(put->placed.replicas.size(), 3u);
  EXPECT_EQ(master_->Get("k").status().code(), Code::kNotFound);
  ASSERT_TRUE(master_->PutRevoke(0, "k").ok());
  EXPECT_EQ(Used(), 0u) << "a revoked put frees every replica";
}

TEST_F(StoreMasterInline, BadPutsFailAsPutStartDoesAndLeaveNothing) {
  const auto value = Bytes(64, 4);
  EXPECT_EQ(master_->PutInline(0, "", value, {}, false, Writer()).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(master_->PutInline(0, std::string(kMaxKeyBytes + 1, 'k'), value, {}, false, Writer()).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(master_->PutInline(0, "k", {}, {}, false, Writer()).status().code(), Code::kInvalidArgument);
  for (uint32_t replicas : {0u, kMaxReplicas + 1})
    EXPECT_EQ(master_->PutInline(0, "k", value, {.replicas = replicas}, false, Writer()).status().code(),
              Code::kInvalidArgument);
  EXPECT_EQ(writes_, 0);
  EXPECT_EQ(Used(), 0u);
  // Put-if-absent keeps the first value; upsert replaces it.
  ASSERT_TRUE(master_->PutInline(0, "k", value, {}, false, Writer()).ok());
  const uint64_t first = master_->Get("k")->replicas[0].gva;
  const uint64_t used = Used();
  EXPECT_EQ(master_->PutInline(0, "k", Bytes(64, 5), {}, false, Writer()).status().code(), Code::kAlreadyExists);
  EXPECT_EQ(Used(), used) << "a refused put allocates nothing";
  EXPECT_EQ(memory_[first], value) << "and writes nothing";
  auto up = master_->PutInline(0, "k", Bytes(80, 6), {}, true, Writer());
  ASSERT_TRUE(up.ok());
  EXPECT_TRUE(up->complete);
  EXPECT_EQ(master_->Get("k")->size, 80u);
  EXPECT_EQ(memory_[master_->Get("k")->replicas[0].gva], Bytes(80, 6));
  // A pending put of the key (started the two-call way) refuses an inline one, upsert too.
  ASSERT_TRUE(master_->PutStart(1, "p", 10, {}, false).ok());
  EXPECT_EQ(master_->PutInline(2, "p", value, {}, true, Writer()).status().code(), Code::kAlreadyExists);
}

TEST_F(StoreMasterInline, AFullPoolIsPoolFullAndLeavesNothing) {
  // Every slice hard-pinned full: nothing may be evicted.
  for (uint32_t r = 0; r < 4; ++r)
    ASSERT_TRUE(Put("pin" + std::to_string(r), kSlice, r, {.hard_pin = true}).ok());
  const uint64_t used = Used();
  auto put = master_->PutInline(0, "k", Bytes(100, 7), {}, false, Writer());
  EXPECT_EQ(put.status().code(), Code::kPoolFull);
  EXPECT_EQ(Used(), used);
  EXPECT_EQ(writes_, 0);
  EXPECT_EQ(master_->Stats().pending_puts, 0u);
}

TEST_F(StoreMasterInline, AReplicasPeerDyingDuringTheWriteFailsThePutAndFreesTheRest) {
  ReplicaWriter dies = [&](const Replica& r, std::span<const uint8_t>) {
    if (r.rank == 3) {  // the second replica's peer dies while the master writes the first
      master_->DropRank(3);
      allocator_.RemoveSlice(3, gva::Medium::kHost);
    }
    return OkStatus();
  };
  auto put = master_->PutInline(0, "k", Bytes(100, 8), {.replicas = 2, .preferred_rank = 3}, false, dies);
  EXPECT_EQ(put.status().code(), Code::kNotFound) << put.status().ToString();
  EXPECT_EQ(master_->Get("k").status().code(), Code::kNotFound);
  EXPECT_EQ(Used(), 0u) << "the surviving replica's memory went back";
  EXPECT_EQ(master_->Stats().pending_puts, 0u);
}


// ---------------------------------------------------------------------------------------------
// Failover: the observer's records, their codec, and a master rebuilt from them.

// What an observer was told: a log of one line per call, and the journal a follower keeps (the
// last record of each (key, complete) not erased since).
struct Journal {
  std::vector<std::string> log;
  std::map<std::pair<std::string, bool>, ObjectRecord> records;

  MasterObserver Observer() {
    MasterObserver o;
    o.on_record = [this](const ObjectRecord& r) {
      log.push_back(fmt::format("{} {} r{} d{}", r.complete ? "complete" : "pending", r.key, r.replicas.size(),
                                r.disk_rank));
      records[{r.key, r.complete}] = r;
    };
    o.on_erased = [this](std::string_view key, bool complete) {
      log.push_back(fmt::format("erased {} {}", complete ? "complete" : "pending", key));
      records.erase({std::string(key), complete});
    };
    return o;
  }
  std::vector<std::string> Take() { return std::exchange(log, {}); }
  // The log sorted: for calls made while walking a hash map, whose order is not defined.
  std::vector<std::string> TakeSorted() {
    auto lines = Take();
    std::sort(lines.begin(), lines.end());
    return lines;
  }
  // Through the codec, as a journal in etcd would hold them.
  std::vector<ObjectRecord> Records() const {
    std::vector<ObjectRecord> out;
    for (const auto& [key, r] : records) {
      auto decoded = DecodeObjectRecord(EncodeObjectRecord(r));
      EXPECT_TRUE(decoded.ok()) << decoded.status().ToString();
      if (decoded.ok()) out.push_back(*decoded);
    }
    return out;
  }
};

using Lines = std::vector<std::string>;

class StoreMasterJournal : public StoreMaster {
 protected:
  StoreMasterJournal() { master_->SetObserver(journal_.Observer()); }

  // A fresh master over a fresh allocator with the same slices, as a new leader has.
  Master& Fresh() {
    allocator_b_ = std::make_unique<gva::Allocator>(allocator_.layout());
    for (uint32_t r = 0; r < 4; ++r) EXPECT_TRUE(allocator_b_->AddSlice(r, gva::Medium::kHost, kSlice).ok());
    master_b_ = std::make_unique<Master>(*allocator_b_, MasterOptions{}, [this] { return now_; });
    return *master_b_;
  }
  uint64_t Used(const gva::Allocator& a) const {
    uint64_t used = 0;
    for (const auto& [rank, stats] : a.Slices(gva::Medium::kHost)) used += stats.used;
    return used;
  }

  Journal journal_;
  std::unique_ptr<gva::Allocator> allocator_b_;
  std::unique_ptr<Master> master_b_;
};

TEST_F(StoreMasterJournal, PutEndRevokeTimeoutAndUpsertAreJournaledInOrder) {
  auto placed = master_->PutStart(2, "a", 100, {.replicas = 2, .soft_pin = true}, false);
  ASSERT_TRUE(placed.ok());
  EXPECT_EQ(journal_.Take(), (Lines{"pending a r2 d-1"}));
  const ObjectRecord pending = journal_.records.at({"a", false});
  EXPECT_EQ(pending.writer, 2u);
  EXPECT_EQ(pending.size, 100u);
  EXPECT_EQ(pending.id, placed->id);
  EXPECT_EQ(pending.replicas, placed->replicas);
  EXPECT_TRUE(pending.soft_pin);
  EXPECT_FALSE(pending.hard_pin);
  ASSERT_TRUE(master_->PutEnd(2, "a", true).ok());
  EXPECT_EQ(journal_.Take(), (Lines{"erased pending a", "complete a r2 d2"}));
  ASSERT_TRUE(master_->PutStart(0, "b", 10, {.hard_pin = true}, false).ok());
  EXPECT_TRUE(journal_.records.at({"b", false}).hard_pin);
  ASSERT_TRUE(master_->PutRevoke(0, "b").ok());
  EXPECT_EQ(journal_.Take(), (Lines{"pending b r1 d-1", "erased pending b"}));
  ASSERT_TRUE(master_->PutStart(1, "c", 10, {}, false).ok());
  Advance(milliseconds(30000));
  master_->Expire();
  EXPECT_EQ(journal_.Take(), (Lines{"pending c r1 d-1", "erased pending c"}));
  // An upsert: the new value's pending record, then the complete record replaces the old one.
  auto next = master_->PutStart(0, "a", 300, {}, true);
  ASSERT_TRUE(next.ok());
  ASSERT_TRUE(master_->PutEnd(0, "a").ok());
  EXPECT_EQ(journal_.Take(), (Lines{"pending a r1 d-1", "erased pending a", "complete a r1 d-1"}));
  EXPECT_EQ(journal_.records.at({"a", true}).size, 300u);
  EXPECT_EQ(journal_.records.at({"a", true}).id, next->id);
  EXPECT_EQ(journal_.records.size(), 1u);
  // Reads, leases and failures change nothing durable and say nothing.
  ASSERT_TRUE(master_->Get("a").ok());
  EXPECT_TRUE(master_->Exists("a"));
  ASSERT_TRUE(master_->Describe("a").ok());
  EXPECT_EQ(master_->PutEnd(0, "a").code(), Code::kNotFound);
  EXPECT_EQ(master_->PutRevoke(0, "a").code(), Code::kNotFound);
  EXPECT_EQ(master_->Remove("a", false).code(), Code::kBusy);
  EXPECT_EQ(master_->Remove("zz", true).code(), Code::kNotFound);
  EXPECT_EQ(master_->PutStart(0, "a", 10, {}, false).status().code(), Code::kAlreadyExists);
  EXPECT_EQ(journal_.Take(), Lines{});
}

TEST_F(StoreMasterJournal, InlinePutsAreJournaledAsTheirStartAndEnd) {
  const std::vector<uint8_t> value(100, 7);
  auto write = [](const Replica&, std::span<const uint8_t>) { return OkStatus(); };
  ASSERT_TRUE(master_->PutInline(1, "w", value, {}, false, write).ok());
  EXPECT_EQ(journal_.Take(), (Lines{"pending w r1 d-1", "erased pending w", "complete w r1 d-1"}));
  auto deferred = master_->PutInline(1, "d", value, {}, false, {});
  ASSERT_TRUE(deferred.ok());
  EXPECT_FALSE(deferred->complete);
  EXPECT_EQ(journal_.Take(), (Lines{"pending d r1 d-1"}));
}

TEST_F(StoreMasterJournal, RemovalsAreJournaledAsErasedObjects) {
  for (const char* key : {"x", "y/1", "y/2", "z"}) ASSERT_TRUE(Put(key, 10).ok());
  ASSERT_TRUE(master_->PutStart(0, "y/3", 10, {}, false).ok());  // pending: no regex takes it
  journal_.Take();
  ASSERT_TRUE(master_->Remove("x", false).ok());
  EXPECT_EQ(journal_.Take(), (Lines{"erased complete x"}));
  ASSERT_EQ(master_->RemoveByRegex("^y/", false).value_or(0), 2u);
  EXPECT_EQ(journal_.TakeSorted(), (Lines{"erased complete y/1", "erased complete y/2"}));
  ASSERT_TRUE(master_->Get("z").ok());
  EXPECT_EQ(master_->RemoveAll(false), 0u);
  EXPECT_EQ(journal_.Take(), Lines{}) << "a leased object skipped is not erased";
  EXPECT_EQ(master_->RemoveAll(true), 1u);
  EXPECT_EQ(journal_.Take(), (Lines{"erased complete z"}));
  ASSERT_EQ(journal_.records.size(), 1u);
  EXPECT_TRUE(journal_.records.count({"y/3", false}));
}

// Evicted: erased; evicted but kept on its writer's disk: the record without replicas; the end
// of a promotion: the record with its replica again (the pending promotion itself is not journaled).
TEST_F(StoreMasterJournal, EvictionAndPromotionAreJournaled) {
  const uint64_t size = 256 << 10;
  auto placed = master_->PutStart(1, "disk", size, {.preferred_rank = 0}, false);
  ASSERT_TRUE(placed.ok());
  ASSERT_TRUE(master_->PutEnd(1, "disk", true).ok());
  Advance(milliseconds(1));
  ASSERT_TRUE(Put("plain", size).ok());
  Advance(milliseconds(1));
  journal_.Take();
  for (int i = 0; i < 20; ++i) {  // 5.5 MiB into 4 MiB: "disk" and "plain" are the oldest
    ASSERT_TRUE(Put("o" + std::to_string(i), size).ok()) << i;
    Advance(milliseconds(1));
  }
  Lines about;  // what was said of the two oldest
  for (const std::string& line : journal_.Take())
    if (line.find(" disk") != std::string::npos || line.find(" plain") != std::string::npos) about.push_back(line);
  EXPECT_EQ(about, (Lines{"complete disk r0 d1", "erased complete plain"}));
  EXPECT_TRUE(journal_.records.at({"disk", true}).replicas.empty());
  EXPECT_FALSE(journal_.records.count({"plain", true}));
  auto promoted = master_->PutStart(1, "disk", 0, {}, false, placed->id);
  ASSERT_TRUE(promoted.ok()) << promoted.status().ToString();
  Lines promoted_lines;
  for (const std::string& line : journal_.Take())
    if (line.find(" disk") != std::string::npos) promoted_lines.push_back(line);
  EXPECT_EQ(promoted_lines, Lines{}) << "a pending promotion is not journaled";
  ASSERT_TRUE(master_->PutEnd(1, "disk").ok());
  EXPECT_EQ(journal_.Take(), (Lines{"complete disk r1 d1"}));
  EXPECT_EQ(journal_.records.at({"disk", true}).replicas, promoted->replicas);
  ASSERT_TRUE(master_->Remove("disk", true).ok());
  EXPECT_EQ(journal_.Take(), (Lines{"erased complete disk"}));
}

TEST_F(StoreMasterJournal, ADeadPeerIsJournaledAsTheRecordsItChanged) {
  ASSERT_TRUE(Put("on1", 100, 1).ok());
  ASSERT_TRUE(Put("on2", 100, 2).ok());
  ASSERT_TRUE(Put("both", 100, 1, {.replicas = 2}).ok());
  ASSERT_TRUE(master_->PutStart(2, "kept", 100, {.preferred_rank = 0}, false).ok());
  ASSERT_TRUE(master_->PutEnd(2, "kept", true).ok());
  ASSERT_TRUE(master_->PutStart(1, "pending-by-1", 100, {.preferred_rank = 2}, false).ok());
  ASSERT_TRUE(master_->PutStart(2, "pending-on-1", 100, {.preferred_rank = 1}, false).ok());
  ASSERT_TRUE(master_->PutStart(3, "pending-elsewhere", 100, {}, false).ok());
  journal_.Take();
  master_->DropRank(1);
  EXPECT_EQ(journal_.TakeSorted(), (Lines{"complete both r1 d-1", "erased complete on1", "erased pending pending-by-1",
                                          "erased pending pending-on-1"}));
  master_->DropRank(2);  // "kept" loses its disk copy, keeps its replica on rank 0
  EXPECT_EQ(journal_.TakeSorted(), (Lines{"complete kept r1 d-1", "erased complete on2"}));
  master_->DropRank(1);
  EXPECT_EQ(journal_.Take(), Lines{}) << "nothing left of rank 1";
}

TEST(ObjectRecordCodec, RoundTripsEveryField) {
  ObjectRecord r;
  r.key = std::string(kMaxKeyBytes, 'k');
  r.complete = false;
  r.writer = 7;
  r.size = 123456789;
  r.id = 0x0102030405060708ull;
  r.disk_rank = 3;
  r.replicas = {{1, 0x200000001000ull}, {2, 0x200000102000ull}, {6, 0x2000006ff000ull}};
  r.hard_pin = true;
  r.soft_pin = true;
  const auto bytes = EncodeObjectRecord(r);
  auto back = DecodeObjectRecord(bytes);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, r);
  EXPECT_EQ(EncodeObjectRecord(*back), bytes);
  ObjectRecord on_disk{.key = "d", .complete = true, .size = 1, .disk_rank = 0, .replicas = {}};  // evicted, on a disk only
  ASSERT_TRUE(DecodeObjectRecord(EncodeObjectRecord(on_disk)).ok());
  EXPECT_EQ(*DecodeObjectRecord(EncodeObjectRecord(on_disk)), on_disk);
}

TEST(ObjectRecordCodec, MalformedRecordsAreProtocolErrors) {
  const ObjectRecord r{.key = "key", .writer = 1, .size = 10, .id = 4, .replicas = {{0, 64}, {1, 128}}};
  const auto bytes = EncodeObjectRecord(r);
  auto code = [](const ObjectRecord& rec) { return DecodeObjectRecord(EncodeObjectRecord(rec)).status().code(); };
  for (size_t cut = 0; cut < bytes.size(); ++cut)
    EXPECT_EQ(DecodeObjectRecord({bytes.data(), cut}).status().code(), Code::kProtocol) << "cut at " << cut;
  auto longer = bytes;
  longer.push_back(0);
  EXPECT_EQ(DecodeObjectRecord(longer).status().code(), Code::kProtocol) << "a trailing byte";
  auto version = bytes;
  version[0] = 2;
  EXPECT_EQ(DecodeObjectRecord(version).status().code(), Code::kProtocol);
  auto flag = bytes;
  flag[1 + 4 + 3] = 2;  // `complete`, after the version and the key: a bool is 0 or 1
  EXPECT_EQ(DecodeObjectRecord(flag).status().code(), Code::kProtocol);
  ObjectRecord bad = r;
  bad.key = std::string(kMaxKeyBytes + 1, 'k');
  EXPECT_EQ(code(bad), Code::kProtocol) << "a key over kMaxKeyBytes";
  bad.key = "";
  EXPECT_EQ(code(bad), Code::kProtocol);
  bad = r;
  bad.replicas.assign(kMaxReplicas + 1, Replica{0, 64});
  EXPECT_EQ(code(bad), Code::kProtocol);
  bad.replicas.assign(kMaxReplicas, Replica{0, 64});
  EXPECT_TRUE(DecodeObjectRecord(EncodeObjectRecord(bad)).ok()) << "kMaxReplicas is allowed";
  bad = r;
  bad.size = 0;
  EXPECT_EQ(code(bad), Code::kProtocol);
  bad = r;
  bad.disk_rank = -2;
  EXPECT_EQ(code(bad), Code::kProtocol);
  bad = r;
  bad.replicas.clear();
  EXPECT_EQ(code(bad), Code::kProtocol) << "complete, neither in memory nor on a disk";
  bad.complete = false;
  bad.disk_rank = 1;
  EXPECT_EQ(code(bad), Code::kProtocol) << "a pending put without replicas";
}

// The new leader: every complete object as it was, pending puts its writers may still end,
// leases for readers of the old leader, and no reuse of a restored replica's memory.
TEST_F(StoreMasterJournal, AMasterRestoredFromTheJournalServesTheSameObjects) {
  ASSERT_TRUE(Put("one", 1000, 1).ok());
  ASSERT_TRUE(Put("two", 5000, 2, {.replicas = 3}).ok());
  ASSERT_TRUE(Put("pinned", 64, 0, {.hard_pin = true}).ok());
  ASSERT_TRUE(master_->PutStart(3, "disk", 777, {}, false).ok());
  ASSERT_TRUE(master_->PutEnd(3, "disk", true).ok());
  ASSERT_TRUE(Put("gone", 100).ok());
  ASSERT_TRUE(master_->Remove("gone", true).ok());
  ASSERT_TRUE(Put("up", 100, 1).ok());
  auto upsert = master_->PutStart(1, "up", 2000, {}, true);  // pending beside its complete object
  ASSERT_TRUE(upsert.ok());
  auto pending = master_->PutStart(2, "pend", 4096, {.replicas = 2}, false);
  ASSERT_TRUE(pending.ok());
  const uint64_t used = Used(allocator_);
  Master& b = Fresh();
  b.SetObserver(journal_.Observer());
  journal_.Take();
  const auto records = journal_.Records();
  ASSERT_EQ(records.size(), 7u);
  auto report = b.Restore(records);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->restored, 7u);
  EXPECT_EQ(report->skipped, 0u);
  EXPECT_EQ(journal_.Take(), Lines{}) << "a restore journals nothing";
  EXPECT_EQ(Used(*allocator_b_), used) << "every replica, and nothing else, is reserved";
  for (const char* key : {"one", "two", "pinned", "disk", "up"}) {
    auto was = master_->Describe(key);
    auto is = b.Describe(key);
    ASSERT_TRUE(was.ok() && is.ok()) << key;
    EXPECT_EQ(is->size, was->size) << key;
    EXPECT_EQ(is->replicas, was->replicas) << key;
    EXPECT_EQ(is->id, was->id) << key;
    EXPECT_EQ(is->disk_rank, was->disk_rank) << key;
  }
  EXPECT_EQ(b.Describe("gone").status().code(), Code::kNotFound);
  EXPECT_EQ(b.Describe("pend").status().code(), Code::kNotFound) << "pending: not visible";
  EXPECT_EQ(b.Stats().pending_puts, 2u);
  // A restored replica's memory is the object's: freeing it through the allocator works once.
  EXPECT_EQ(allocator_b_->AllocationSize(b.Describe("one")->replicas[0].gva).value_or(0), 1000u);
  // The writers end (or revoke) their puts on the new leader; no one else may.
  EXPECT_EQ(b.PutEnd(1, "pend").code(), Code::kNotFound);
  ASSERT_TRUE(b.PutEnd(2, "pend").ok());
  EXPECT_EQ(b.Describe("pend")->replicas, pending->replicas);
  EXPECT_EQ(b.Describe("pend")->id, pending->id);
  ASSERT_TRUE(b.PutEnd(1, "up").ok());
  EXPECT_EQ(b.Describe("up")->size, 2000u);
  EXPECT_EQ(b.Describe("up")->replicas, upsert->replicas);
  EXPECT_EQ(journal_.Take(), (Lines{"erased pending pend", "complete pend r2 d-1", "erased pending up",
                                    "complete up r1 d-1"}));
  // Restored objects are leased for lease_ttl from the restore.
  EXPECT_EQ(b.Remove("one", false).code(), Code::kBusy);
  Advance(milliseconds(10000));
  EXPECT_TRUE(b.Remove("one", false).ok());
  EXPECT_EQ(b.Restore(records).status().code(), Code::kAlreadyExists) << "only a fresh master restores";
}

TEST_F(StoreMasterJournal, ARestoredPendingPutTimesOutAFullPutTimeoutAfterTheRestore) {
  ASSERT_TRUE(master_->PutStart(2, "pend", 100, {}, false).ok());
  Advance(milliseconds(29000));
  Master& b = Fresh();
  ASSERT_EQ(b.Restore(journal_.Records()).value_or(RestoreReport{}).restored, 1u);
  Advance(milliseconds(29000));
  b.Expire();
  EXPECT_EQ(b.Stats().pending_puts, 1u) << "the timeout runs from the restore";
  Advance(milliseconds(1000));
  b.Expire();
  EXPECT_EQ(b.Stats().pending_puts, 0u);
  EXPECT_EQ(Used(*allocator_b_), 0u) << "its replicas went back";
}

TEST_F(StoreMasterJournal, PutsAfterARestoreNeverOverlapRestoredReplicasAndGetNewIds) {
  for (int i = 0; i < 20; ++i)
    ASSERT_TRUE(Put("old" + std::to_string(i), 4000 + 512 * i, i % 4, {.replicas = static_cast<uint32_t>(1 + i % 3)}).ok());
  ASSERT_TRUE(master_->PutStart(1, "old-pending", 30000, {.replicas = 2}, false).ok());
  uint64_t max_id = 0;
  for (const auto& [key, r] : journal_.records) max_id = std::max(max_id, r.id);
  Master& b = Fresh();
  ASSERT_EQ(b.Restore(journal_.Records()).value_or(RestoreReport{}).restored, 21u);
  // Fill the pool with hard-pinned puts: the restored objects are leased, so nothing is evicted.
  std::vector<std::string> keys;
  for (int i = 0;; ++i) {
    const std::string key = "new" + std::to_string(i);
    auto placed = b.PutStart(i % 4, key, 16 << 10, {.hard_pin = true}, false);
    if (!placed.ok()) {
      EXPECT_EQ(placed.status().code(), Code::kPoolFull) << placed.status().ToString();
      break;
    }
    EXPECT_GT(placed->id, max_id) << key;
    ASSERT_TRUE(b.PutEnd(i % 4, key).ok());
    keys.push_back(key);
  }
  EXPECT_GT(keys.size(), 200u);
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // every live replica, [gva, gva + size)
  auto add = [&](const std::vector<Replica>& replicas, uint64_t size) {
    for (const Replica& r : replicas) ranges.emplace_back(r.gva, r.gva + size);
  };
  for (const auto& [key, r] : journal_.records) add(r.replicas, r.size);  // the restored ones, pending too
  for (const std::string& key : keys) add(b.Describe(key)->replicas, 16 << 10);
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    EXPECT_LE(ranges[i - 1].second, ranges[i].first) << "replicas " << i - 1 << " and " << i << " overlap";
  EXPECT_EQ(b.Stats().evicted, 0u);
}

// Records that cannot be restored are skipped whole (no replica of theirs stays reserved) and
// counted; the rest are restored.
TEST_F(StoreMasterJournal, RecordsThatCannotBeReservedAreSkippedWholeAndCounted) {
  ASSERT_TRUE(Put("a", 1000, 0).ok());
  ASSERT_TRUE(Put("b", 1000, 1).ok());
  auto records = journal_.Records();
  ASSERT_EQ(records.size(), 2u);
  const gva::Layout& layout = allocator_.layout();
  const uint64_t free_on_2 = layout.SliceBase(gva::Medium::kHost, 2) + 8192;
  // Its first replica is free, its second overlaps "a": neither may stay reserved.
  ObjectRecord overlap{.key = "overlap", .size = 100, .id = 50, .replicas = {{2, free_on_2}, records[0].replicas[0]}};
  ObjectRecord no_slice{.key = "no-slice", .size = 100, .id = 51,
                        .replicas = {{5, layout.SliceBase(gva::Medium::kHost, 5)}}};
  ObjectRecord wrong_rank{.key = "wrong-rank", .size = 100, .id = 52, .replicas = {{3, free_on_2}}};
  ObjectRecord twice = records[1];  // the same key again, elsewhere
  twice.replicas = {{2, free_on_2 + 4096}};
  records.insert(records.end(), {overlap, no_slice, wrong_rank, twice});
  Master& b = Fresh();
  auto report = b.Restore(records);
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  EXPECT_EQ(report->restored, 2u);
  EXPECT_EQ(report->skipped, 4u);
  EXPECT_EQ(allocator_b_->Stats(2, gva::Medium::kHost)->used, 0u) << "nothing half-done";
  EXPECT_EQ(Used(*allocator_b_), 2048u);
  EXPECT_EQ(b.Describe("overlap").status().code(), Code::kNotFound);
  EXPECT_EQ(b.Describe("b")->replicas, journal_.records.at({"b", true}).replicas);
  // Ids stay above every record's, restored or not (a skipped object's file may be on a disk).
  auto placed = b.PutStart(0, "next", 10, {}, false);
  ASSERT_TRUE(placed.ok());
  EXPECT_GT(placed->id, 52u);
}

}  // namespace
}  // namespace weft::store
