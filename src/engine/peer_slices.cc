#include "engine/peer_slices.h"

#include <algorithm>
#include <vector>

#include "engine/engine.h"

namespace weft::engine {

namespace {

using transport::CopyItem;
using transport::Endpoint;

constexpr uint64_t kBounceBytes = 4 << 20;  // a copy between two remote slices, per round

}  // namespace

bool PeerSlicePath::Serves(const transport::RouteKey& key) const {
  return key.locality == transport::Locality::kRemoteNode;
}

double PeerSlicePath::CostNanos(const transport::RouteKey&, uint64_t) const { return 0; }  // the only one

std::string_view PeerSlicePath::Explain(const transport::RouteKey&) const {
  return "the slice is not mapped here: a one-sided op to the peer that holds it";
}

Status PeerSlicePath::Copy(const Endpoint& dst, const Endpoint& src, uint64_t len) {
  const Deadline deadline = NewDeadline();
  if (dst.peer && src.peer) return Bounce(dst, src, len, deadline);
  const RemoteRequest r = Engine::RemoteRequestOf(dst, src, len);
  return std::move(engine_.TransferRemote({&r, 1}, deadline)[0]);
}

void PeerSlicePath::CopyBatch(std::span<const CopyItem> items, std::span<Status> results) {
  const Deadline deadline = NewDeadline();
  std::vector<RemoteRequest> direct;
  std::vector<size_t> where;
  for (size_t i = 0; i < items.size(); ++i) {
    const CopyItem& it = items[i];
    if (it.dst.peer && it.src.peer) {
      results[i] = Bounce(it.dst, it.src, it.len, deadline);
      continue;
    }
    direct.push_back(Engine::RemoteRequestOf(it.dst, it.src, it.len));
    where.push_back(i);
  }
  if (direct.empty()) return;
  auto got = engine_.TransferRemote(direct, deadline);
  for (size_t k = 0; k < where.size(); ++k) results[where[k]] = std::move(got[k]);
}

// Two remote slices (of one peer or two): read a round into a buffer here, write it out.
Status PeerSlicePath::Bounce(const Endpoint& dst, const Endpoint& src, uint64_t len, Deadline deadline) {
  std::vector<uint8_t> buffer(std::min(len, kBounceBytes));
  for (uint64_t off = 0; off < len; off += buffer.size()) {
    const uint64_t n = std::min<uint64_t>(buffer.size(), len - off);
    const RemoteRequest read{transport::RemoteOpKind::kRead, buffer.data(), false, src.peer, src.gva + off, n};
    WEFT_RETURN_IF_ERROR(engine_.TransferRemote({&read, 1}, deadline)[0].Annotate("bounce: reading the source"));
    const RemoteRequest write{transport::RemoteOpKind::kWrite, buffer.data(), false, dst.peer, dst.gva + off, n};
    WEFT_RETURN_IF_ERROR(engine_.TransferRemote({&write, 1}, deadline)[0].Annotate("bounce: writing the destination"));
  }
  return OkStatus();
}

}  // namespace weft::engine
