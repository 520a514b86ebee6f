#include "transport/cuda/ipc_regions.h"

#include <unistd.h>

#include <cstring>

#include "transport/blob.h"
#include "transport/node_endpoint.h"

namespace weft::transport::cuda {

namespace {

constexpr uint8_t kBlobVersion = 1;
using mem::cuda::CudaStatus;

struct IpcPeer final : PeerLink {
  uint32_t pid = 0;
};

struct IpcRegion final : ImportedRegion {
  void* opened = nullptr;  // the allocation's base as opened here
  std::unique_ptr<PeerControl> control;
  ~IpcRegion() override {
    if (opened) (void)cudaIpcCloseMemHandle(opened);
  }
  Status Enter() const override { return control->Enter(); }
  void Exit() const override { control->Exit(); }
  Status OwnerAlive() const override { return control->OwnerAlive(); }
  uint64_t OwnerProcess() const override { return control->pid(); }
};

}  // namespace

IpcRegions::IpcRegions(std::shared_ptr<const mem::cuda::DriverApi> api, std::string node_id)
    : api_(std::move(api)), node_id_(std::move(node_id)) {}

IpcRegions::~IpcRegions() = default;

Result<std::string> IpcRegions::EndpointBlob() const { return EncodeNodeEndpoint(node_id_); }

Result<std::string> IpcRegions::Export(const LocalRegion& region) {
  if (!region.device) return Error(Code::kNotSupported, "path cuda exports device memory only");
  // The handle names the whole allocation; the region is an offset in it.
  CUdeviceptr alloc = 0;
  size_t alloc_size = 0;
  WEFT_RETURN_IF_ERROR(api_->Check(
      api_->MemGetAddressRange(&alloc, &alloc_size, reinterpret_cast<CUdeviceptr>(region.base)), "cuMemGetAddressRange"));
  const uint64_t offset = reinterpret_cast<uint64_t>(region.base) - alloc;
  if (offset > alloc_size || region.len > alloc_size - offset)
    return Error(Code::kInvalidArgument, "path cuda: the region runs past its allocation of {} bytes", alloc_size);
  cudaIpcMemHandle_t handle{};
  Status s = CudaStatus(cudaIpcGetMemHandle(&handle, reinterpret_cast<void*>(alloc)), "cudaIpcGetMemHandle");
  if (!s.ok())
    return Error(Code::kNotSupported, "path cuda: the region cannot be shared by IPC (not cudaMalloc'd memory?): {}",
                 s.message());
  WEFT_ASSIGN_OR_RETURN(auto control, OwnerControl::Create());
  auto w = BlobWriter(kBlobVersion);
  w.U64(offset);
  w.U64(alloc_size);
  w.Raw({reinterpret_cast<const uint8_t*>(&handle), sizeof handle});
  WEFT_RETURN_IF_ERROR(control->Describe(w));
  exported_.Add(region.id, std::move(control));
  return BlobText(w);
}

void IpcRegions::Withdraw(uint64_t region_id) { exported_.Withdraw(region_id); }

Result<std::unique_ptr<PeerLink>> IpcRegions::Connect(std::string_view endpoint_blob) const {
  WEFT_ASSIGN_OR_RETURN(uint32_t pid, DecodeNodeEndpoint(endpoint_blob, node_id_, "cuda"));
  if (pid == static_cast<uint32_t>(::getpid()))
    return Error(Code::kUnavailable, "path cuda: the peer is this process (CUDA IPC cannot open its own handles)");
  auto peer = std::make_unique<IpcPeer>();
  peer->pid = pid;
  return std::unique_ptr<PeerLink>(std::move(peer));
}

Result<std::unique_ptr<ImportedRegion>> IpcRegions::Import(const PeerLink& peer, uint64_t base, uint64_t len,
                                                           std::string_view blob) const {
  WEFT_ASSIGN_OR_RETURN(auto r, OpenBlob(blob, kBlobVersion, "cuda", "region"));
  uint64_t offset = 0, alloc_size = 0;
  std::span<const uint8_t> raw;
  Status s = r.U64(offset);
  if (s.ok()) s = r.U64(alloc_size);
  if (s.ok()) s = r.Raw(sizeof(cudaIpcMemHandle_t), raw);
  if (!s.ok()) return BadBlob(s, "cuda", "region");
  if (offset > alloc_size || len > alloc_size - offset)
    return Error(Code::kProtocol, "region blob of path cuda: {} bytes at offset {} of an allocation of {}", len, offset,
                 alloc_size);
  auto region = std::make_unique<IpcRegion>();
  WEFT_ASSIGN_OR_RETURN(region->control, PeerControl::Open(static_cast<const IpcPeer&>(peer).pid, r, "cuda"));
  if (Status end = r.ExpectEnd(); !end.ok()) return BadBlob(end, "cuda", "region");
  cudaIpcMemHandle_t handle{};
  std::memcpy(&handle, raw.data(), sizeof handle);
  s = CudaStatus(cudaIpcOpenMemHandle(&region->opened, handle, cudaIpcMemLazyEnablePeerAccess),
                 "cudaIpcOpenMemHandle");
  if (!s.ok()) {
    region->opened = nullptr;
    return Error(Code::kUnavailable, "path cuda: opening the peer's device buffer: {}", s.message());
  }
  region->base = base;
  region->len = len;
  region->mapped = static_cast<uint8_t*>(region->opened) + offset;
  return std::unique_ptr<ImportedRegion>(std::move(region));
}

}  // namespace weft::transport::cuda
