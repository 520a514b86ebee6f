#include "api/bm/mapped_slices.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "api/bm/slice_blobs.h"
#include "base/log.h"

namespace weft::bm {

void MappedPeerSlices::OnJoined(uint32_t rank, const wire::TransportBlobs& transports, std::span<const int> fds) {
  auto it = transports.find(std::string(kShmBlob));
  if (it == transports.end()) return;  // a peer reached over the network only
  auto mapped = MapSlice(it->second, fds);
  if (!mapped.ok()) {
    WEFT_LOG_WARN("store master: rank {}'s slice is not mapped ({}); its small puts take two calls", rank,
                  mapped.status().ToString());
    return;
  }
  slices_[rank] = std::move(*mapped);
}

Result<std::unique_ptr<mem::HostSegment>> MappedPeerSlices::MapSlice(std::string_view shm_blob,
                                                                     std::span<const int> fds) const {
  WEFT_ASSIGN_OR_RETURN(ShmSliceBlob blob, DecodeShmBlob(shm_blob, fds.size()));
  const int fd = ::dup(fds[blob.fd_index]);
  if (fd < 0) return Error(Code::kIo, "dup: {}", std::strerror(errno));
  return mem::HostSegment::Import(fd, layout_.rank_size());  // takes the fd
}

Status MappedPeerSlices::Write(const store::Replica& replica, std::span<const uint8_t> value) const {
  const auto at = layout_.Decode(replica.gva);
  if (!at || at->medium != gva::Medium::kHost || at->rank != replica.rank)
    return Error(Code::kNotSupported, "replica at {:#x} is not in rank {}'s host slice", replica.gva, replica.rank);
  auto it = slices_.find(replica.rank);
  if (it == slices_.end()) return Error(Code::kNotSupported, "rank {}'s slice is not mapped here", replica.rank);
  const mem::HostSegment& slice = *it->second;
  if (at->offset > slice.size() || value.size() > slice.size() - at->offset)
    return Error(Code::kOutOfRange, "{} bytes at offset {} pass the end of rank {}'s slice", value.size(), at->offset,
                 replica.rank);
  std::memcpy(slice.data() + at->offset, value.data(), value.size());
  return OkStatus();
}

}  // namespace weft::bm
