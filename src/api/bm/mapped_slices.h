// The host slices of a pool's same-node peers, mapped by a coordinator that runs alone (`weft
// store-master` on a unix socket), so that its store master can write small values itself
// (inline puts, store/master.h) as a master hosted by a peer does through that peer's mappings.
// Each slice comes as the memfd its owner sent with its Join ("shm" blob, slice_blobs.h); over a
// tcp coordinator none comes and nothing is mapped, so writers copy their own values.
//
// Used on the coordinator thread only (its join, gone and service handlers): no lock.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string_view>

#include "api/store/types.h"
#include "base/result.h"
#include "base/status.h"
#include "gva/layout.h"
#include "mem/host_segment.h"
#include "wire/control.h"

namespace weft::bm {

class MappedPeerSlices {
 public:
  explicit MappedPeerSlices(gva::Layout layout) : layout_(layout) {}

  // Maps the host slice of a peer that joined, when it sent one (a blob that does not parse or a
  // mapping that fails is logged and the peer left unmapped: its puts then take two calls).
  void OnJoined(uint32_t rank, const wire::TransportBlobs& transports, std::span<const int> fds);
  // Unmaps a peer that left or was declared down.
  void OnGone(uint32_t rank) { slices_.erase(rank); }
  // Writes a value into one replica (a store::ReplicaWriter): NOT_SUPPORTED where its slice is not
  // mapped here (device memory, a peer without a memfd), OUT_OF_RANGE outside the slice.
  Status Write(const store::Replica& replica, std::span<const uint8_t> value) const;
  size_t mapped() const { return slices_.size(); }

 private:
  // The memfd that the "shm" blob names among the Join's descriptors, mapped.
  Result<std::unique_ptr<mem::HostSegment>> MapSlice(std::string_view shm_blob, std::span<const int> fds) const;

  gva::Layout layout_;
  std::map<uint32_t, std::unique_ptr<mem::HostSegment>> slices_;
};

}  // namespace weft::bm
