#include "api/bm/slice_blobs.h"

#include "transport/blob.h"

namespace weft::bm {

namespace {

constexpr uint8_t kBlobVersion = 1;
constexpr uint8_t kPathBlobVersion = 2;  // 1 was tcp's own fields, before paths were opaque
constexpr std::string_view kWhat = "pool slice";

Status CheckFdIndex(uint32_t index, size_t fd_count, std::string_view transport) {
  if (index < fd_count) return OkStatus();
  return Error(Code::kProtocol, "{} blob of path {} names descriptor {} but {} came with the frame", kWhat, transport,
               index, fd_count);
}

// Reads a whole blob with `read`, turning a short or long one into PROTOCOL naming the transport.
template <typename T, typename Fn>
Result<T> ReadBlob(std::string_view blob, std::string_view transport, Fn&& read, uint8_t version = kBlobVersion) {
  WEFT_ASSIGN_OR_RETURN(wire::Reader r, transport::OpenBlob(blob, version, transport, kWhat));
  T out;
  Status s = read(r, out);
  if (s.ok()) s = r.ExpectEnd();
  if (!s.ok()) return transport::BadBlob(s, transport, kWhat);
  return out;
}

template <typename T>
Result<T> NotAdvertised(std::string_view transport) {
  return Error(Code::kNotFound, "the peer advertised no {} blob", transport);
}

}  // namespace

std::string EncodeShmBlob(const ShmSliceBlob& b) {
  wire::Writer w = transport::BlobWriter(kBlobVersion);
  w.U32(b.fd_index);
  return transport::BlobText(w);
}

std::string EncodeCudaBlob(const CudaSliceBlob& b) {
  wire::Writer w = transport::BlobWriter(kBlobVersion);
  w.U32(b.fd_index);
  w.U64(b.size);
  w.I32(b.gpu);
  return transport::BlobText(w);
}

std::string EncodePathBlob(const PathSliceBlob& b) {
  wire::Writer w = transport::BlobWriter(kPathBlobVersion);
  w.String(b.endpoint);
  w.String(b.host_region);
  w.String(b.device_region);
  return transport::BlobText(w);
}

Result<ShmSliceBlob> DecodeShmBlob(std::string_view blob, size_t fd_count) {
  WEFT_ASSIGN_OR_RETURN(auto b, ReadBlob<ShmSliceBlob>(blob, kShmBlob, [](wire::Reader& r, ShmSliceBlob& out) {
                          return r.U32(out.fd_index);
                        }));
  WEFT_RETURN_IF_ERROR(CheckFdIndex(b.fd_index, fd_count, kShmBlob));
  return b;
}

Result<CudaSliceBlob> DecodeCudaBlob(std::string_view blob, size_t fd_count) {
  WEFT_ASSIGN_OR_RETURN(auto b, ReadBlob<CudaSliceBlob>(blob, kCudaBlob, [](wire::Reader& r, CudaSliceBlob& out) {
                          WEFT_RETURN_IF_ERROR(r.U32(out.fd_index));
                          WEFT_RETURN_IF_ERROR(r.U64(out.size));
                          return r.I32(out.gpu);
                        }));
  if (b.size == 0)
    return Error(Code::kProtocol, "{} blob of path {} describes a device slice of 0 bytes", kWhat, kCudaBlob);
  WEFT_RETURN_IF_ERROR(CheckFdIndex(b.fd_index, fd_count, kCudaBlob));
  return b;
}

Result<PathSliceBlob> DecodePathBlob(std::string_view blob, std::string_view transport) {
  // The nested blobs are the transport's; the outer one never exceeds kMaxBlobBytes.
  auto read = [](wire::Reader& r, PathSliceBlob& out) {
    WEFT_RETURN_IF_ERROR(r.String(out.endpoint, transport::kMaxBlobBytes));
    WEFT_RETURN_IF_ERROR(r.String(out.host_region, transport::kMaxBlobBytes));
    return r.String(out.device_region, transport::kMaxBlobBytes);
  };
  WEFT_ASSIGN_OR_RETURN(auto b, ReadBlob<PathSliceBlob>(blob, transport, read, kPathBlobVersion));
  if (b.endpoint.empty() || b.host_region.empty())
    return Error(Code::kProtocol, "{} blob of path {} has no endpoint or no host region", kWhat, transport);
  return b;
}

SliceAdvert AdvertiseSlices(const OwnSlices& own) {
  SliceAdvert out;
  auto next_index = [&] { return static_cast<uint32_t>(out.fds.size()); };
  if (own.host_fd >= 0) {
    out.blobs[std::string(kShmBlob)] = EncodeShmBlob({next_index()});
    out.fds.push_back(own.host_fd);
  }
  if (own.device_size > 0 && own.device_fd >= 0) {
    out.blobs[std::string(kCudaBlob)] = EncodeCudaBlob({next_index(), own.device_size, own.device_gpu});
    out.fds.push_back(own.device_fd);
  }
  for (const auto& [name, path] : own.paths) out.blobs[name] = EncodePathBlob(path);
  return out;
}

PeerSliceBlobs ReadPeerSlices(const wire::TransportBlobs& blobs, size_t fd_count, uint64_t device_size,
                              std::string_view path) {
  auto find = [&](std::string_view name) -> const std::string* {
    auto it = blobs.find(std::string(name));
    return it == blobs.end() ? nullptr : &it->second;
  };
  const std::string* shm = find(kShmBlob);
  const std::string* cuda = find(kCudaBlob);
  const std::string* net = path.empty() ? nullptr : find(path);
  PeerSliceBlobs out{shm ? DecodeShmBlob(*shm, fd_count) : NotAdvertised<ShmSliceBlob>(kShmBlob),
                     cuda ? DecodeCudaBlob(*cuda, fd_count) : NotAdvertised<CudaSliceBlob>(kCudaBlob),
                     net ? DecodePathBlob(*net, path) : NotAdvertised<PathSliceBlob>(path)};
  if (out.cuda.ok() && out.cuda->size != device_size) {
    out.cuda = Error(Code::kProtocol, "{} blob of path {} describes {} bytes but the peer joined with a device "
                     "slice of {}", kWhat, kCudaBlob, out.cuda->size, device_size);
  }
  return out;
}

}  // namespace weft::bm
