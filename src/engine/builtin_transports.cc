#include "engine/builtin_transports.h"

#include <filesystem>

#include "transport/cma/cma_transport.h"
#include "transport/local/local_transport.h"
#include "transport/shm/shm_transport.h"
#include "transport/tcp/tcp_transport.h"
#if WEFT_HAVE_CUDA
#include "transport/cuda/cuda_transport.h"
#endif
#if WEFT_HAVE_UCX
#include "transport/ucx/ucx_transport.h"
#endif

namespace weft::engine {

namespace {

using transport::RegistryEntry;
using transport::Transport;
using transport::TransportContext;
using Made = Result<std::unique_ptr<Transport>>;

RegistryEntry MemcpyEntry() {
  return {"memcpy", transport::kCapHostMemory | transport::kCapSameProcess,
          "both ends are host memory of this process", {},
          [](const TransportContext&) -> Made { return Made(std::make_unique<transport::LocalTransport>()); }};
}

RegistryEntry ShmEntry() {
  return {"shm", transport::kCapHostMemory | transport::kCapSameNode | transport::kCapRegions,
          "another process's host memory on this node, mapped from its memfd (load/store)", {},
          [](const TransportContext& c) -> Made { return Made(std::make_unique<transport::ShmTransport>(c.node_id)); }};
}

RegistryEntry CmaEntry() {
  RegistryEntry e{"cma", transport::kCapHostMemory | transport::kCapSameNode | transport::kCapRegions,
          "any registered host region of another process on this node, copied by the kernel (process_vm_readv); "
          "named explicitly only: an owner cannot revoke a peer's access, so its buffers must outlive the peers' use",
          {},
          [](const TransportContext& c) -> Made {
            if (c.node_id.empty()) return Error(Code::kNotSupported, "it serves registered regions only");
            return Made(std::make_unique<transport::CmaTransport>(c.node_id));
          }};
  e.in_auto = false;
  e.pool_slices = false;
  return e;
}

RegistryEntry TcpEntry() {
  return {"tcp",
          transport::kCapHostMemory | transport::kCapDeviceMemory | transport::kCapSameNode |
              transport::kCapRemoteNode | transport::kCapRegions | transport::kCapNotify,
          "one-sided READ/WRITE over TCP, served by the owner's data server (any node)",
          {"data_address", "cluster_secret", "tcp_lanes"},
          [](const TransportContext& c) -> Made {
            if (!c.tcp) return Error(Code::kNotSupported, "no tcp settings were given (the front end passes them in the transport context)");
            WEFT_ASSIGN_OR_RETURN(auto t, transport::tcp::TcpTransport::Create(*c.tcp));
            return std::unique_ptr<Transport>(std::move(t));
          }};
}

// The same row in every build (docs/config.md is generated from it); a build without CUDA
// answers NOT_SUPPORTED when the entry is created.
RegistryEntry CudaEntry() {
  return {"cuda",
          transport::kCapHostMemory | transport::kCapDeviceMemory | transport::kCapSameProcess |
              transport::kCapSameNode | transport::kCapPageBatches | transport::kCapStreamOrdering,
          "copies with a device end on this node: copy engines and batched copy kernels",
          {"device", "gpu_copy_sms"},
          [](const TransportContext& c) -> Made {
#if WEFT_HAVE_CUDA
            transport::cuda::CudaOptions o;
            o.kernel_sms = c.cuda_kernel_sms;
            o.node_id = c.node_id;
            o.metrics = c.metrics;
            WEFT_ASSIGN_OR_RETURN(auto t, transport::cuda::CudaTransport::Create(o));
            return std::unique_ptr<Transport>(std::move(t));
#else
            return Error(Code::kNotSupported, "this weft was built without CUDA (no nvcc at build time)");
#endif
          }};
}

// Whether this machine has an RDMA NIC (InfiniBand or RoCE): the kernel lists it under
// /sys/class/infiniband. Only then does "auto" start UCX (which patches the process's memory
// calls and starts threads); its cost model then ranks it by the resources UCX found.
bool RdmaNicPresent() {
  std::error_code ec;
  std::filesystem::directory_iterator it("/sys/class/infiniband", ec);
  return !ec && it != std::filesystem::directory_iterator();
}

// The same row in every build; a build without UCX's headers, or a machine without the library,
// answers NOT_SUPPORTED with the reason.
RegistryEntry UcxEntry() {
  RegistryEntry e{"ucx", transport::kCapHostMemory | transport::kCapSameNode | transport::kCapRemoteNode |
                             transport::kCapRegions,
                  "one-sided put/get through UCX (InfiniBand, RoCE, shared memory, tcp: what UCX_TLS allows); "
                  "the library is found at run time (WEFT_UCX_LIBRARY, else libucp.so.0)",
                  {},
                  [](const TransportContext& c) -> Made {
#if WEFT_HAVE_UCX
                    transport::ucx::UcxOptions o = c.ucx ? *c.ucx : transport::ucx::UcxOptions{};
                    o.metrics = c.metrics;
                    WEFT_ASSIGN_OR_RETURN(auto t, transport::ucx::UcxTransport::Create(o));
                    return std::unique_ptr<Transport>(std::move(t));
#else
                    return Error(Code::kNotSupported, "this weft was built without UCX's headers (libucx-dev)");
#endif
                  }};
  e.auto_here = RdmaNicPresent;
  e.auto_where = "an RDMA NIC is present";
  return e;
}

}  // namespace

transport::Registry BuiltinTransports() {
  transport::Registry r;
  for (auto* make : {&MemcpyEntry, &ShmEntry, &CmaEntry, &TcpEntry, &CudaEntry, &UcxEntry}) (void)r.Add(make());
  return r;
}

}  // namespace weft::engine
