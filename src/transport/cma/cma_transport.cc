#include "transport/cma/cma_transport.h"

#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "transport/blob.h"
#include "transport/node_endpoint.h"

namespace weft::transport {

namespace {

constexpr uint8_t kBlobVersion = 1;

struct CmaPeer final : PeerLink {
  pid_t pid = 0;
};

// One op, all of it: the kernel may copy less than asked (a partial transfer), so go on from
// where it stopped.
Status MoveAll(pid_t pid, RemoteOpKind kind, uint8_t* local, uint64_t remote, uint64_t len) {
  uint64_t done = 0;
  while (done < len) {
    iovec l{local + done, len - done};
    iovec r{reinterpret_cast<void*>(remote + done), len - done};
    ssize_t n = kind == RemoteOpKind::kRead ? ::process_vm_readv(pid, &l, 1, &r, 1, 0)
                                            : ::process_vm_writev(pid, &l, 1, &r, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = errno;
      Code code = err == ESRCH ? Code::kPeerDown : err == EFAULT ? Code::kInvalidAddress : Code::kUnavailable;
      return Error(code, "path cma: {} of {} bytes at {:#x} in process {}: {}",
                   kind == RemoteOpKind::kRead ? "read" : "write", len, remote, pid,
                   n == 0 ? "no progress" : std::strerror(err));
    }
    done += static_cast<uint64_t>(n);
  }
  return OkStatus();
}

}  // namespace

CmaTransport::CmaTransport(std::string node_id) : node_id_(std::move(node_id)) {}

Status CmaTransport::Copy(const Endpoint&, const Endpoint&, uint64_t) {
  return Error(Code::kNotSupported, "path cma copies registered regions only");
}

Result<std::string> CmaTransport::EndpointBlob() const { return EncodeNodeEndpoint(node_id_); }

Result<std::string> CmaTransport::ExportRegion(const LocalRegion& region) {
  if (region.device) return Error(Code::kNotSupported, "path cma reaches host memory only");
  return BlobText(BlobWriter(kBlobVersion));  // the address and length are in the descriptor
}

Result<std::unique_ptr<PeerLink>> CmaTransport::Connect(std::string_view endpoint_blob) {
  WEFT_ASSIGN_OR_RETURN(uint32_t pid, DecodeNodeEndpoint(endpoint_blob, node_id_, "cma"));
  auto peer = std::make_unique<CmaPeer>();
  peer->pid = static_cast<pid_t>(pid);
  return std::unique_ptr<PeerLink>(std::move(peer));
}

Result<std::unique_ptr<ImportedRegion>> CmaTransport::ImportRegion(const PeerLink& peer, uint64_t base, uint64_t len,
                                                                   std::string_view blob) {
  WEFT_ASSIGN_OR_RETURN(auto r, OpenBlob(blob, kBlobVersion, "cma", "region"));
  if (Status s = r.ExpectEnd(); !s.ok()) return BadBlob(s, "cma", "region");
  // One byte read proves the kernel lets this process reach the peer (ptrace access).
  uint8_t probe = 0;
  Status s = MoveAll(static_cast<const CmaPeer&>(peer).pid, RemoteOpKind::kRead, &probe, base, 1);
  if (!s.ok()) return Error(Code::kUnavailable, "{} (probe of the peer's region)", s.message());
  auto region = std::make_unique<ImportedRegion>();
  region->base = base;
  region->len = len;
  return region;
}

void CmaTransport::Post(std::span<const RemoteOp> ops, std::span<Status> results, Deadline deadline) {
  for (size_t i = 0; i < ops.size(); ++i) {
    const RemoteOp& op = ops[i];
    if (deadline.expired()) {
      results[i] = Error(Code::kTimeout, "path cma: the deadline passed before the op started");
      continue;
    }
    results[i] = MoveAll(static_cast<const CmaPeer*>(op.peer)->pid, op.kind, op.local, op.region->base + op.offset,
                         op.len);
  }
}

double CmaTransport::RemoteCostNanos(uint64_t bytes) const {
  // A system call and page pinning per op; measured at 0.3-0.6x memcpy for large copies.
  return 600.0 + static_cast<double>(bytes) / 3.0;
}

std::string_view CmaTransport::ExplainRemote() const {
  return "the peer is a process on this node: the kernel copies between the two address spaces "
         "(process_vm_readv/writev)";
}

}  // namespace weft::transport
