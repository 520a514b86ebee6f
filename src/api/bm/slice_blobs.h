// The pool's transport blobs: how the other peers reach this peer's slices, one opaque blob per
// transport in Join / PeerJoined (wire::TransportBlobs), which the coordinator passes through
// unread. Each blob begins with its format's version byte (transport/blob.h):
//
//   "shm"   v1: fd index u32              the host slice's memfd among the frame's descriptors
//   "cuda"  v1: fd index u32, size u64, gpu i32   the device slice's VMM fd, its bytes, its GPU
//   any other name (the transport the pool runs for peers it does not map, e.g. "tcp"):
//           v2: endpoint, host region, device region ("" when there is no device slice), each
//               a string holding that transport's own blob (transport.h's region contract)
//
// "shm" and "cuda" are the pool's own mapping of same-node slices (the descriptors travel with
// the frame); every other path reaches a slice through the copy engine's remote ends, with the
// transport's blobs carried unread. A peer advertises only the blobs that apply. A reader
// ignores names it does not use, so a newer peer with an extra transport still joins; a blob
// that does not parse, or names a descriptor that did not come, disables that transport for
// that peer only.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "wire/control.h"

namespace weft::bm {

inline constexpr std::string_view kShmBlob = "shm";
inline constexpr std::string_view kCudaBlob = "cuda";

struct ShmSliceBlob {
  uint32_t fd_index = 0;
  bool operator==(const ShmSliceBlob&) const = default;
};

struct CudaSliceBlob {
  uint32_t fd_index = 0;
  uint64_t size = 0;  // > 0
  int32_t gpu = -1;   // the owner's GPU (for logs: importers map the fd)
  bool operator==(const CudaSliceBlob&) const = default;
};

// A network path's blobs for this peer's slices (the transport's own, carried unread).
struct PathSliceBlob {
  std::string endpoint;
  std::string host_region;
  std::string device_region;  // empty: no device slice through this path
  bool operator==(const PathSliceBlob&) const = default;
};

std::string EncodeShmBlob(const ShmSliceBlob& b);
std::string EncodeCudaBlob(const CudaSliceBlob& b);
std::string EncodePathBlob(const PathSliceBlob& b);
// PROTOCOL naming the transport when the blob does not parse, has another version, or names a
// descriptor at or past fd_count (the descriptors that came with the frame).
Result<ShmSliceBlob> DecodeShmBlob(std::string_view blob, size_t fd_count);
Result<CudaSliceBlob> DecodeCudaBlob(std::string_view blob, size_t fd_count);
// `transport` names the path in errors; an empty endpoint or host region is PROTOCOL.
Result<PathSliceBlob> DecodePathBlob(std::string_view blob, std::string_view transport);

// This peer's slices and how they can be reached; -1 / empty / 0 for what it does not offer.
struct OwnSlices {
  int host_fd = -1;    // the host slice's memfd, when descriptors reach the others (unix coordinator)
  int device_fd = -1;  // the device slice's VMM fd, likewise
  uint64_t device_size = 0;
  int32_t device_gpu = -1;
  std::map<std::string, PathSliceBlob> paths;  // by transport name: never "shm" or "cuda"
};

// The blobs and the descriptors (in the order the blobs index them) to join with.
struct SliceAdvert {
  wire::TransportBlobs blobs;
  std::vector<int> fds;
};
SliceAdvert AdvertiseSlices(const OwnSlices& own);

// A peer's blobs as this peer reads them: per transport the blob, or why there is none to use
// (NOT_FOUND: not advertised; PROTOCOL: malformed, naming the transport). device_size is what the
// peer joined with: a cuda blob describing another size is malformed. `path` is the network
// path this peer runs ("" for none: `path` is then NOT_FOUND).
struct PeerSliceBlobs {
  Result<ShmSliceBlob> shm;
  Result<CudaSliceBlob> cuda;
  Result<PathSliceBlob> path;
};
PeerSliceBlobs ReadPeerSlices(const wire::TransportBlobs& blobs, size_t fd_count, uint64_t device_size,
                              std::string_view path);

}  // namespace weft::bm
