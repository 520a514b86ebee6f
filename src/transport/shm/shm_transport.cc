#include "transport/shm/shm_transport.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "transport/blob.h"
#include "transport/node_endpoint.h"

namespace weft::transport {

namespace {

constexpr uint8_t kBlobVersion = 1;

struct ShmPeer final : PeerLink {
  uint32_t pid = 0;
};

struct ShmRegion final : ImportedRegion {
  void* map = MAP_FAILED;
  uint64_t map_len = 0;
  std::unique_ptr<PeerControl> control;
  ~ShmRegion() override {
    if (map != MAP_FAILED) ::munmap(map, map_len);
  }
  Status Enter() const override { return control->Enter(); }
  void Exit() const override { control->Exit(); }
  Status OwnerAlive() const override { return control->OwnerAlive(); }
  uint64_t OwnerProcess() const override { return control->pid(); }
};

}  // namespace

ShmTransport::ShmTransport(std::string node_id) : node_id_(std::move(node_id)) {}

ShmTransport::~ShmTransport() = default;

uint32_t ShmTransport::capabilities() const {
  return kCapHostMemory | kCapSameNode | (node_id_.empty() ? 0 : kCapRegions);
}

bool ShmTransport::Serves(const RouteKey& key) const {
  return key.locality == Locality::kSameNode && !IsDevice(key.src) && !IsDevice(key.dst);
}

double ShmTransport::CostNanos(const RouteKey&, uint64_t bytes) const {
  // Same memory bandwidth as memcpy; the peer's pages may sit on another NUMA node.
  return 30.0 + static_cast<double>(bytes) / 8.0;
}

Status ShmTransport::Copy(const Endpoint& dst, const Endpoint& src, uint64_t len) {
  std::memmove(dst.mapped, src.mapped, len);
  return OkStatus();
}

std::string_view ShmTransport::Explain(const RouteKey&) const {
  return "a same-node peer's host slice is mapped here from its memfd: load/store through the shared mapping";
}

Result<std::string> ShmTransport::EndpointBlob() const {
  if (node_id_.empty()) return Error(Code::kNotSupported, "path shm: no node identity given");
  return EncodeNodeEndpoint(node_id_);
}

Result<std::string> ShmTransport::ExportRegion(const LocalRegion& region) {
  if (region.device) return Error(Code::kNotSupported, "path shm maps host memory only");
  if (region.fd < 0)
    return Error(Code::kNotSupported, "path shm: the region is not backed by a shareable file "
                                      "(allocate it with AllocateManagedBuffer to share it by mapping)");
  struct stat st {};
  if (::fstat(region.fd, &st) != 0)
    return Error(Code::kInternal, "path shm: fstat of the region's fd: {}", std::strerror(errno));
  WEFT_ASSIGN_OR_RETURN(auto control, OwnerControl::Create());
  auto w = BlobWriter(kBlobVersion);
  w.I32(region.fd);
  w.U64(static_cast<uint64_t>(st.st_dev));
  w.U64(static_cast<uint64_t>(st.st_ino));
  w.U64(region.fd_offset);
  WEFT_RETURN_IF_ERROR(control->Describe(w));
  exported_.Add(region.id, std::move(control));
  return BlobText(w);
}

void ShmTransport::WithdrawRegion(uint64_t region_id) { exported_.Withdraw(region_id); }

Result<std::unique_ptr<PeerLink>> ShmTransport::Connect(std::string_view endpoint_blob) {
  WEFT_ASSIGN_OR_RETURN(uint32_t pid, DecodeNodeEndpoint(endpoint_blob, node_id_, "shm"));
  auto peer = std::make_unique<ShmPeer>();
  peer->pid = pid;
  return std::unique_ptr<PeerLink>(std::move(peer));
}

Result<std::unique_ptr<ImportedRegion>> ShmTransport::ImportRegion(const PeerLink& peer, uint64_t base, uint64_t len,
                                                                   std::string_view blob) {
  WEFT_ASSIGN_OR_RETURN(auto r, OpenBlob(blob, kBlobVersion, "shm", "region"));
  int32_t fd = -1;
  uint64_t dev = 0, ino = 0, offset = 0;
  Status s = r.I32(fd);
  if (s.ok()) s = r.U64(dev);
  if (s.ok()) s = r.U64(ino);
  if (s.ok()) s = r.U64(offset);
  if (!s.ok()) return BadBlob(s, "shm", "region");
  if (fd < 0 || offset % 4096 != 0 || offset > UINT64_MAX - len)
    return Error(Code::kProtocol, "region blob of path shm: fd {} / offset {} is not usable", fd, offset);
  const auto pid = static_cast<const ShmPeer&>(peer).pid;
  auto region = std::make_unique<ShmRegion>();
  WEFT_ASSIGN_OR_RETURN(region->control, PeerControl::Open(pid, r, "shm"));
  if (Status end = r.ExpectEnd(); !end.ok()) return BadBlob(end, "shm", "region");
  WEFT_ASSIGN_OR_RETURN(int data_fd, OpenPeerFile(pid, fd, dev, ino, offset + len, "shm"));
  region->map = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, data_fd, static_cast<off_t>(offset));
  int err = errno;
  ::close(data_fd);
  if (region->map == MAP_FAILED)
    return Error(Code::kUnavailable, "path shm: mapping the peer's region: {}", std::strerror(err));
  region->map_len = len;
  region->base = base;
  region->len = len;
  region->mapped = static_cast<uint8_t*>(region->map);
  return std::unique_ptr<ImportedRegion>(std::move(region));
}

double ShmTransport::RemoteCostNanos(uint64_t bytes) const { return 30.0 + static_cast<double>(bytes) / 8.0; }

std::string_view ShmTransport::ExplainRemote() const {
  return "the peer's region is a memfd on this node, mapped here: load/store through the shared mapping";
}

}  // namespace weft::transport
