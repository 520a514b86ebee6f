#include "api/bm/slice_blobs.h"

#include "net/tcp_socket.h"
#include "transport/blob.h"

namespace weft::bm {

namespace {

constexpr uint8_t kBlobVersion = 1;
constexpr std::string_view kWhat = "pool slice";
constexpr size_t kMaxEndpointLength = 1024;

Status CheckFdIndex(uint32_t index, size_t fd_count, std::string_view transport) {
  if (index < fd_count) return OkStatus();
  return Error(Code::kProtocol, "{} blob of path {} names descriptor {} but {} came with the frame", kWhat, transport,
               index, fd_count);
}

// Reads a whole blob with `read`, turning a short or long one into PROTOCOL naming the transport.
template <typename T, typename Fn>
Result<T> ReadBlob(std::string_view blob, std::string_view transport, Fn&& read) {
  WEFT_ASSIGN_OR_RETURN(wire::Reader r, transport::OpenBlob(blob, kBlobVersion, transport, kWhat));
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

std::string EncodeTcpBlob(const TcpSliceBlob& b) {
  wire::Writer w = transport::BlobWriter(kBlobVersion);
  w.String(b.endpoint);
  w.U64(b.host_key);
  w.U64(b.device_key);
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

Result<TcpSliceBlob> DecodeTcpBlob(std::string_view blob) {
  WEFT_ASSIGN_OR_RETURN(auto b, ReadBlob<TcpSliceBlob>(blob, kTcpBlob, [](wire::Reader& r, TcpSliceBlob& out) {
                          WEFT_RETURN_IF_ERROR(r.String(out.endpoint, kMaxEndpointLength));
                          WEFT_RETURN_IF_ERROR(r.U64(out.host_key));
                          return r.U64(out.device_key);
                        }));
  if (auto where = net::ParseHostPort(b.endpoint); !where.ok())
    return transport::BadBlob(where.status(), kTcpBlob, kWhat);
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
  if (!own.data_endpoint.empty()) {
    out.blobs[std::string(kTcpBlob)] =
        EncodeTcpBlob({own.data_endpoint, own.host_key, own.device_size > 0 ? own.device_key : 0});
  }
  return out;
}

PeerSliceBlobs ReadPeerSlices(const wire::TransportBlobs& blobs, size_t fd_count, uint64_t device_size) {
  auto find = [&](std::string_view name) -> const std::string* {
    auto it = blobs.find(std::string(name));
    return it == blobs.end() ? nullptr : &it->second;
  };
  const std::string* shm = find(kShmBlob);
  const std::string* cuda = find(kCudaBlob);
  const std::string* tcp = find(kTcpBlob);
  PeerSliceBlobs out{shm ? DecodeShmBlob(*shm, fd_count) : NotAdvertised<ShmSliceBlob>(kShmBlob),
                     cuda ? DecodeCudaBlob(*cuda, fd_count) : NotAdvertised<CudaSliceBlob>(kCudaBlob),
                     tcp ? DecodeTcpBlob(*tcp) : NotAdvertised<TcpSliceBlob>(kTcpBlob)};
  if (out.cuda.ok() && out.cuda->size != device_size) {
    out.cuda = Error(Code::kProtocol, "{} blob of path {} describes {} bytes but the peer joined with a device "
                     "slice of {}", kWhat, kCudaBlob, out.cuda->size, device_size);
  }
  return out;
}

}  // namespace weft::bm
