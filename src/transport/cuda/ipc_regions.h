// The cuda transport's side of the region contract (transport.h): device buffers of processes
// on this node, reached through CUDA IPC. Export: the allocation's cudaIpcMemHandle, the
// region's offset in it, and a control page (region_control.h) for withdrawal. Import:
// cudaIpcOpenMemHandle with lazy peer access on the calling thread's current GPU, so the region
// is a device pointer here and the cuda transport copies through it (copy engine or kernel, over
// NVLink or PCIe peer-to-peer). A peer in this same process is refused (CUDA cannot open its own
// handles): tcp carries those.
//
// Internal to weft_cuda: includes the CUDA headers through cuda_api.h.
#pragma once

#include <memory>
#include <string>

#include "mem/cuda/cuda_api.h"
#include "transport/region_control.h"
#include "transport/transport.h"

namespace weft::transport::cuda {

class IpcRegions {
 public:
  IpcRegions(std::shared_ptr<const mem::cuda::DriverApi> api, std::string node_id);
  ~IpcRegions();

  Result<std::string> EndpointBlob() const;
  Result<std::string> Export(const LocalRegion& region);
  void Withdraw(uint64_t region_id);
  Result<std::unique_ptr<PeerLink>> Connect(std::string_view endpoint_blob) const;
  Result<std::unique_ptr<ImportedRegion>> Import(const PeerLink& peer, uint64_t base, uint64_t len,
                                                 std::string_view blob) const;

 private:
  std::shared_ptr<const mem::cuda::DriverApi> api_;
  std::string node_id_;
  ExportedControls exported_;
};

}  // namespace weft::transport::cuda
