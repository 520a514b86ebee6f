#include "transport/tcp/tcp_transport.h"

#include <cstring>
#include <vector>

namespace weft::transport::tcp {

TcpTransport::TcpTransport(gva::Layout layout, TcpTransportOptions options)
    : layout_(layout), options_(std::move(options)), client_(options_.client) {}

TcpTransport::~TcpTransport() = default;

void TcpTransport::AddPeer(uint32_t rank, const TcpPeerInfo& info) {
  std::lock_guard lock(mu_);
  peers_[rank] = info;
  removed_.erase(rank);
}

void TcpTransport::RemovePeer(uint32_t rank) {
  PeerAddr addr;
  {
    std::lock_guard lock(mu_);
    auto it = peers_.find(rank);
    if (it == peers_.end()) return;
    addr = PeerAddr{it->second.host, it->second.port};
    peers_.erase(it);
    removed_.insert(rank);
  }
  client_.Forget(addr);
}

bool TcpTransport::Serves(const RouteKey& key) const {
  return key.locality == Locality::kRemoteNode && !IsDevice(key.src) && !IsDevice(key.dst);
}

double TcpTransport::CostNanos(const RouteKey& key, uint64_t bytes) const {
  return options_.fixed_cost_ns + static_cast<double>(bytes) / options_.bytes_per_ns;
}

std::string_view TcpTransport::Explain(const RouteKey& key) const {
  return "the remote end is host memory of a peer reached over TCP: one-sided READ/WRITE served by its progress "
         "threads";
}

bool TcpTransport::IsRemote(const Endpoint& e) const {
  if (e.mapped == nullptr) return true;
  return options_.self_rank != UINT32_MAX && e.gva != 0 && e.rank != options_.self_rank;
}

Result<TcpTransport::Target> TcpTransport::Locate(const Endpoint& e, uint64_t len) const {
  auto loc = layout_.Decode(e.gva);
  if (!loc) return Error(Code::kInvalidAddress, "{:#x} is not a GVA of this pool", e.gva);
  if (loc->medium != gva::Medium::kHost)
    return Error(Code::kNotSupported, "{:#x} is device memory of rank {}; the tcp path carries host memory only", e.gva,
                 loc->rank);
  std::lock_guard lock(mu_);
  auto it = peers_.find(loc->rank);
  if (it == peers_.end()) {
    if (removed_.count(loc->rank)) return Error(Code::kPeerDown, "rank {} has left the pool or is down", loc->rank);
    return Error(Code::kNotFound, "no tcp endpoint is known for rank {}", loc->rank);
  }
  const TcpPeerInfo& p = it->second;
  if (loc->offset > p.size || len > p.size - loc->offset)
    return Error(Code::kOutOfRange, "[{:#x}, +{}) runs past the {} bytes rank {} serves over tcp", e.gva, len, p.size,
                 loc->rank);
  return Target{PeerAddr{p.host, p.port}, p, loc->offset};
}

Status TcpTransport::Bounce(const Target& dst, const Target& src, uint64_t len, Deadline deadline) {
  const uint64_t chunk = std::min<uint64_t>(len, 8ull << 20);
  std::vector<uint8_t> buf(chunk);
  for (uint64_t off = 0; off < len; off += chunk) {
    uint64_t n = std::min(chunk, len - off);
    WEFT_RETURN_IF_ERROR(client_.Read(src.addr, src.info.segment_id, src.info.access_key, src.offset + off,
                                      buf.data(), n, deadline));
    WEFT_RETURN_IF_ERROR(client_.Write(dst.addr, dst.info.segment_id, dst.info.access_key, dst.offset + off,
                                       buf.data(), n, deadline));
  }
  return OkStatus();
}

Status TcpTransport::Copy(const Endpoint& dst, const Endpoint& src, uint64_t len) {
  if (len == 0) return OkStatus();
  Deadline deadline = Deadline::After(Millis(options_.copy_timeout_ms));
  bool rd = IsRemote(dst), rs = IsRemote(src);
  if (rd && rs) {
    WEFT_ASSIGN_OR_RETURN(Target d, Locate(dst, len));
    WEFT_ASSIGN_OR_RETURN(Target s, Locate(src, len));
    return Bounce(d, s, len, deadline);
  }
  if (rd) {
    WEFT_ASSIGN_OR_RETURN(Target d, Locate(dst, len));
    return client_.Write(d.addr, d.info.segment_id, d.info.access_key, d.offset, src.mapped, len, deadline);
  }
  if (rs) {
    WEFT_ASSIGN_OR_RETURN(Target s, Locate(src, len));
    return client_.Read(s.addr, s.info.segment_id, s.info.access_key, s.offset, dst.mapped, len, deadline);
  }
  std::memmove(dst.mapped, src.mapped, len);  // both ends are local after all
  return OkStatus();
}

void TcpTransport::CopyBatch(std::span<const CopyItem> items, std::span<Status> results) {
  Deadline deadline = Deadline::After(Millis(options_.copy_timeout_ms));
  // One Transfer per peer, so the items to one peer are pipelined and coalesced together.
  std::map<PeerAddr, std::pair<std::vector<TcpRequest>, std::vector<size_t>>> groups;
  for (size_t i = 0; i < items.size(); ++i) {
    const CopyItem& it = items[i];
    bool rd = IsRemote(it.dst), rs = IsRemote(it.src);
    if (it.len == 0 || rd == rs) {
      results[i] = Copy(it.dst, it.src, it.len);
      continue;
    }
    auto t = Locate(rd ? it.dst : it.src, it.len);
    if (!t.ok()) {
      results[i] = t.status();
      continue;
    }
    TcpRequest r;
    r.op = rd ? wire::DataOp::kWrite : wire::DataOp::kRead;
    r.segment_id = t->info.segment_id;
    r.access_key = t->info.access_key;
    r.remote_offset = t->offset;
    r.local = rd ? it.src.mapped : it.dst.mapped;
    r.len = it.len;
    auto& g = groups[t->addr];
    g.first.push_back(r);
    g.second.push_back(i);
  }
  for (auto& [addr, g] : groups) {
    auto st = client_.Transfer(addr, g.first, deadline);
    for (size_t k = 0; k < st.size(); ++k) results[g.second[k]] = std::move(st[k]);
  }
}

}  // namespace weft::transport::tcp
