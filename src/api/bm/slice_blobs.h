// The pool's transport blobs: how the other peers reach this peer's slices, one opaque blob per
// transport in Join / PeerJoined (wire::TransportBlobs), which the coordinator passes through
// unread. Each blob begins with its format's version byte (transport/blob.h); all are version 1:
//
//   "shm"   fd index u32                  the host slice's memfd among the frame's descriptors
//   "cuda"  fd index u32, size u64, gpu i32   the device slice's VMM fd, its bytes, its GPU
//   "tcp"   endpoint string (host:port), host key u64, device key u64 (0: no device slice)
//                                         the peer's TCP data server and its slices' access keys
//
// A peer advertises only the blobs that apply (no tcp blob without a data server, no cuda blob
// without a device slice whose fd travels). A reader ignores names it does not know, so a newer
// peer with an extra transport still joins; a blob that does not parse, or names a descriptor
// that did not come, disables that transport for that peer only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "wire/control.h"

namespace weft::bm {

inline constexpr std::string_view kShmBlob = "shm";
inline constexpr std::string_view kCudaBlob = "cuda";
inline constexpr std::string_view kTcpBlob = "tcp";

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

struct TcpSliceBlob {
  std::string endpoint;  // host:port of the owner's data server
  uint64_t host_key = 0;
  uint64_t device_key = 0;  // 0: no device slice
  bool operator==(const TcpSliceBlob&) const = default;
};

std::string EncodeShmBlob(const ShmSliceBlob& b);
std::string EncodeCudaBlob(const CudaSliceBlob& b);
std::string EncodeTcpBlob(const TcpSliceBlob& b);
// PROTOCOL naming the transport when the blob does not parse, has another version, or names a
// descriptor at or past fd_count (the descriptors that came with the frame).
Result<ShmSliceBlob> DecodeShmBlob(std::string_view blob, size_t fd_count);
Result<CudaSliceBlob> DecodeCudaBlob(std::string_view blob, size_t fd_count);
Result<TcpSliceBlob> DecodeTcpBlob(std::string_view blob);

// This peer's slices and how they can be reached; -1 / empty / 0 for what it does not offer.
struct OwnSlices {
  int host_fd = -1;    // the host slice's memfd, when descriptors reach the others (unix coordinator)
  int device_fd = -1;  // the device slice's VMM fd, likewise
  uint64_t device_size = 0;
  int32_t device_gpu = -1;
  std::string data_endpoint;  // host:port of our TCP data server, when we run one
  uint64_t host_key = 0;
  uint64_t device_key = 0;
};

// The blobs and the descriptors (in the order the blobs index them) to join with.
struct SliceAdvert {
  wire::TransportBlobs blobs;
  std::vector<int> fds;
};
SliceAdvert AdvertiseSlices(const OwnSlices& own);

// A peer's blobs as this peer reads them: per transport the blob, or why there is none to use
// (NOT_FOUND: not advertised; PROTOCOL: malformed, naming the transport). device_size is what the
// peer joined with: a cuda blob describing another size is malformed.
struct PeerSliceBlobs {
  Result<ShmSliceBlob> shm;
  Result<CudaSliceBlob> cuda;
  Result<TcpSliceBlob> tcp;
};
PeerSliceBlobs ReadPeerSlices(const wire::TransportBlobs& blobs, size_t fd_count, uint64_t device_size);

}  // namespace weft::bm
