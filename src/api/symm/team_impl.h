// The inside of a symm::Team, shared by team.cc (creation, allocation, one-sided ops) and
// collectives.cc (the eight collectives on the team's channel).
#pragma once

#include <deque>
#include <memory>
#include <vector>

#include <weft/symm.h>

#include "api/symm/channel.h"
#include "api/symm/device_heap.h"
#include "api/symm/heaps.h"

namespace weft::symm {

inline constexpr uint64_t kDefaultOneShotMaxBytes = 64 << 10;

struct Team::Impl {
  std::shared_ptr<Heaps> heaps;
  std::vector<uint32_t> members;  // root-team ranks, by team rank
  uint32_t me = 0;
  uint64_t id = 0;
  bool root = true;  // the team Create made (owns Malloc); false for a Split
  uint64_t slot_bytes = 0;
  uint64_t one_shot_max_bytes = kDefaultOneShotMaxBytes;
  uint32_t timeout_ms = 60000;
  std::vector<std::vector<uint8_t>> contexts;
  std::unique_ptr<Channel> channel;
  // The root team's device heap (null without one), shared by its sub-teams, and this team's
  // barrier flags in it.
  std::shared_ptr<DeviceHeap> device;
  DeviceSync device_sync;
  void* stream = nullptr;  // cudaStream_t of the device collectives
  // TeamOptions::device_async: a device collective returns once launched. Its launches not yet
  // waited for (oldest first; `refused`: this rank's own arguments were bad and it said so at
  // the call), and the first failure of one waited for since the last DeviceSynchronize.
  bool device_async = false;
  struct InFlight {
    uint32_t slot;
    bool refused;
  };
  std::deque<InFlight> in_flight;
  Status async_failure;
  TeamStats stats;
  // Set once a round failed half-way (a peer died, a deadline passed): the members' rounds are
  // out of step, so every later call returns this.
  Status broken;

  Deadline DeadlineOf(const OptDeadline& d) const {
    return d ? *d : Deadline::After(std::chrono::milliseconds(timeout_ms));
  }
  uint32_t size() const { return static_cast<uint32_t>(members.size()); }
  const PeerHeap& peer(uint32_t team_rank) const { return heaps->peer(members[team_rank]); }
  // Runs one round: Begin, the sends that `send` makes, Finish. Marks the team broken when the
  // round failed other than by MISMATCH (the members finish a mismatched round in step).
  template <typename SendFn>
  Status Round(const OpDesc& desc, Deadline deadline, SendFn&& send) {
    if (!broken.ok()) return broken;
    channel->Begin(desc);
    Status s = send();
    if (s.ok()) s = channel->Finish(deadline);
    if (!s.ok() && s.code() != Code::kMismatch)
      broken = Status(s.code(), "this team is unusable after an earlier failure (" + s.message() +
                                    "); make a new team");
    return s;
  }
};

}  // namespace weft::symm
