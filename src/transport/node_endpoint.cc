#include "transport/node_endpoint.h"

#include <unistd.h>

#include <climits>

#include "transport/blob.h"

namespace weft::transport {

namespace {
constexpr uint8_t kVersion = 1;
}

std::string EncodeNodeEndpoint(const std::string& node_id) {
  auto w = BlobWriter(kVersion);
  w.String(node_id);
  w.U32(static_cast<uint32_t>(::getpid()));
  return BlobText(w);
}

Result<uint32_t> DecodeNodeEndpoint(std::string_view blob, const std::string& node_id, std::string_view transport) {
  WEFT_ASSIGN_OR_RETURN(auto r, OpenBlob(blob, kVersion, transport, "endpoint"));
  std::string node;
  uint32_t pid = 0;
  Status s = r.String(node, 256);
  if (s.ok()) s = r.U32(pid);
  if (s.ok()) s = r.ExpectEnd();
  if (!s.ok()) return BadBlob(s, transport, "endpoint");
  if (pid == 0 || pid > INT_MAX) return Error(Code::kProtocol, "endpoint blob of path {} has pid {}", transport, pid);
  if (node != node_id)
    return Error(Code::kUnavailable, "path {}: the peer runs on another node ({}; this is {})", transport, node,
                 node_id);
  return pid;
}

}  // namespace weft::transport
