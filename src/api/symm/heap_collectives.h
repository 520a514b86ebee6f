// Collectives on buffers that lie in the team's symmetric heaps (Team::Malloc), for a team
// whose members are all mapped here (one host). Each rank reads what it needs straight from the
// other ranks' heaps instead of receiving it through the channel's inbox slots, so a collective
// of any size takes two rounds (allreduce three) and every byte is copied once:
//
//   round 1 (agree): each rank says where its buffers lie in its heap (or that they do not);
//            seeing every rank's message also means every rank's input is ready;
//   the work: reads from the peers' heaps (allreduce: reduce its own piece, one more round so
//            every piece is reduced, then gather the pieces);
//   last round: nobody is still reading, so every rank may reuse its buffers.
//
// Every rank runs the agree round for a collective larger than the one-shot limit (the same
// decision everywhere, as count and dtype are the same); only when every rank's buffers that
// others read lie in its heap does the team take this path, otherwise every rank takes the
// channel's path (collectives.cc) after it.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <vector>

#include "api/symm/team_impl.h"

namespace weft::symm {

// Where the buffers of one collective lie in each rank's heap (by team rank, one offset per
// buffer in the order the collective gave them).
class HeapPlacement {
 public:
  // The agree round: `buffers` are this rank's, `needed(rank, k)` whether other ranks read
  // buffer k of that rank. nullopt: some rank cannot take the heap path (the round still ran).
  template <typename NeededFn>
  static Result<std::optional<HeapPlacement>> Agree(Team::Impl& t, const OpDesc& desc, Deadline deadline,
                                                    std::initializer_list<std::pair<const void*, uint64_t>> buffers,
                                                    NeededFn&& needed);

  // Buffer k of a rank, at byte `at`, as mapped here.
  const uint8_t* At(uint32_t rank, size_t k, uint64_t at) const { return base_[rank] + offsets_[rank][k] + at; }

 private:
  static constexpr uint64_t kNotInHeap = ~uint64_t{0};
  static Result<std::vector<std::vector<uint64_t>>> Exchange(
      Team::Impl& t, const OpDesc& desc, Deadline deadline,
      std::initializer_list<std::pair<const void*, uint64_t>> buffers);

  std::vector<const uint8_t*> base_;            // each rank's block, mapped here
  std::vector<std::vector<uint64_t>> offsets_;  // [rank][buffer]
};

template <typename NeededFn>
Result<std::optional<HeapPlacement>> HeapPlacement::Agree(
    Team::Impl& t, const OpDesc& desc, Deadline deadline,
    std::initializer_list<std::pair<const void*, uint64_t>> buffers, NeededFn&& needed) {
  WEFT_ASSIGN_OR_RETURN(auto offsets, Exchange(t, desc, deadline, buffers));
  for (uint32_t m = 0; m < t.size(); ++m)
    for (size_t k = 0; k < buffers.size(); ++k)
      if (needed(m, k) && offsets[m][k] == kNotInHeap) return std::optional<HeapPlacement>();
  ++t.stats.heap_path;
  HeapPlacement p;
  p.offsets_ = std::move(offsets);
  for (uint32_t m = 0; m < t.size(); ++m) p.base_.push_back(m == t.me ? t.heaps->own() : t.peer(m).mapped);
  return std::optional<HeapPlacement>(std::move(p));
}

// Whether a collective of `bytes` (its largest buffer on a rank) runs the agree round at all.
inline bool TriesHeapPath(const Team::Impl& t, uint64_t bytes) {
  return t.size() > 1 && bytes > t.one_shot_max_bytes;
}

// The collectives on the heap path, on arguments Prepare checked (collectives.cc): true when
// done, false when some rank's buffers are not in its heap (the caller then runs the channel's
// path; every rank decided the same). es: the element size; d carries count, dtype, op, root.
Result<bool> HeapAllReduce(Team::Impl& t, const OpDesc& d, const void* send, void* recv, size_t es, Deadline dl);
Result<bool> HeapReduceScatter(Team::Impl& t, const OpDesc& d, const void* send, void* recv, size_t es, Deadline dl);
Result<bool> HeapReduce(Team::Impl& t, const OpDesc& d, const void* send, void* recv, size_t es, Deadline dl);
Result<bool> HeapAllGather(Team::Impl& t, const OpDesc& d, const void* send, void* recv, size_t es, Deadline dl);
Result<bool> HeapGather(Team::Impl& t, const OpDesc& d, const void* send, void* recv, size_t es, Deadline dl);
Result<bool> HeapBroadcast(Team::Impl& t, const OpDesc& d, void* buf, size_t es, Deadline dl);
Result<bool> HeapScatter(Team::Impl& t, const OpDesc& d, const void* send, void* recv, size_t es, Deadline dl);
Result<bool> HeapAllToAll(Team::Impl& t, const OpDesc& d, const void* send, void* recv, size_t es, Deadline dl);

}  // namespace weft::symm
