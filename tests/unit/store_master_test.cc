// The store's master on its own: an allocator over a few slices and a clock the test moves.
#include <gtest/gtest.h>

#include <map>
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

}  // namespace
}  // namespace weft::store
