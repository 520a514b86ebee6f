// Rounds of messages among the members of a team, through their symmetric blocks; the one
// mechanism every collective, barrier and collective allocation is built on.
//
// In round r every member sends every other member exactly one message (empty where the
// collective has nothing for it): the bytes go to the receiver's inbox slot [r % 2][sender],
// then the sender stores r into the receiver's flag [sender]. A member finishes the round once
// every flag it holds reads r or more. Two inbox parities are enough: a sender can be at most
// one round ahead of any receiver (it cannot finish round r+1 before every member has sent its
// round-(r+1) message, which each sends only after it finished, and read, round r).
//
// Each message carries the collective's description (OpDesc); a member whose description
// differs from the others' makes every member's round fail with MISMATCH (every member sees
// every other's description in the same round, so all of them fail, and in step).
//
// Layout at the channel's offset of each member's block:
//   flags: members × 64 B (one cache line per sender) | inbox: 2 × members × (64 B header + slot)
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include <weft/deadline.h>
#include <weft/symm.h>

#include "api/symm/heaps.h"

namespace weft::symm {

// What a round belongs to; all members must agree on it.
struct OpDesc {
  uint8_t kind = 0;   // Kind below
  uint8_t dtype = 0;
  uint8_t op = 0;
  uint8_t pad = 0;
  uint32_t root = 0;
  uint64_t count = 0;  // elements, bytes or a hash, by kind
  bool operator==(const OpDesc&) const = default;
  std::string ToString() const;
};

enum class Kind : uint8_t {
  kBarrier = 1, kMalloc, kFree, kSplit, kBroadcast, kScatter, kGather, kAllGather, kReduce, kReduceScatter,
  kAllReduce, kAllToAll,
};
std::string_view KindName(uint8_t kind);

class Channel {
 public:
  static constexpr uint64_t kHeader = 64;
  static uint64_t Bytes(uint32_t members, uint64_t slot_bytes);

  // members: root-team ranks by team rank; me: this rank's team rank; offset: where the
  // channel lies in every member's block.
  Channel(std::shared_ptr<Heaps> heaps, std::vector<uint32_t> members, uint32_t me, uint64_t offset,
          uint64_t slot_bytes);

  // Zeroes this member's flags; done by each member before any other can send to it.
  void ResetOwnFlags();

  void Begin(const OpDesc& desc);
  // One message of this round to a member (never to oneself; at most once per member).
  Status Send(uint32_t to, const void* data, uint64_t len);
  // Sends an empty message to every member not sent to yet, then waits for every member's
  // message: PEER_DOWN if a member leaves the pool meanwhile, TIMEOUT past the deadline,
  // MISMATCH if a member is in another collective.
  Status Finish(Deadline deadline);
  // This round's message from a member (valid until the round after next begins).
  const uint8_t* Received(uint32_t from) const;
  uint64_t ReceivedBytes(uint32_t from) const;

  uint64_t slot_bytes() const { return slot_bytes_; }
  uint32_t size() const { return static_cast<uint32_t>(members_.size()); }
  uint32_t me() const { return me_; }
  bool mapped(uint32_t member) const { return heaps_->peer(members_[member]).mapped != nullptr; }
  Heaps& heaps() const { return *heaps_; }
  uint32_t member_root_rank(uint32_t member) const { return members_[member]; }

 private:
  struct Header {
    OpDesc desc;
    uint64_t round = 0;
    uint64_t bytes = 0;
  };
  uint64_t FlagOffset(uint32_t sender) const { return offset_ + uint64_t{sender} * 64; }
  uint64_t SlotOffset(uint64_t round, uint32_t sender) const;
  uint64_t OwnFlag(uint32_t sender) const;
  Status WaitAll(Deadline deadline);
  Status CheckDescriptions() const;

  std::shared_ptr<Heaps> heaps_;
  std::vector<uint32_t> members_;
  uint32_t me_;
  uint64_t offset_;
  uint64_t slot_bytes_;
  uint64_t round_ = 0;
  OpDesc desc_;
  std::vector<bool> sent_;
  std::vector<uint8_t> staging_;  // header + payload for members reached through the copy engine
};

}  // namespace weft::symm
