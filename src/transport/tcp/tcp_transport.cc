#include "transport/tcp/tcp_transport.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace weft::transport::tcp {

TcpTransport::TcpTransport(gva::Layout layout, TcpTransportOptions options)
    : layout_(layout),
      options_(std::move(options)),
      client_(options_.client),
      staging_(options_.staging, options_.device) {}

TcpTransport::~TcpTransport() = default;

void TcpTransport::AddPeerSlice(gva::Medium medium, uint32_t rank, const TcpPeerInfo& info) {
  std::lock_guard lock(mu_);
  peers_[{medium, rank}] = info;
  removed_.erase(rank);
}

void TcpTransport::AddPeer(uint32_t rank, const TcpPeerInfo& info) { AddPeerSlice(gva::Medium::kHost, rank, info); }

void TcpTransport::RemovePeer(uint32_t rank) {
  std::set<PeerAddr> addrs;
  {
    std::lock_guard lock(mu_);
    for (gva::Medium m : {gva::Medium::kHost, gva::Medium::kDevice}) {
      auto it = peers_.find({m, rank});
      if (it == peers_.end()) continue;
      addrs.insert(PeerAddr{it->second.host, it->second.port});
      peers_.erase(it);
      removed_.insert(rank);
    }
  }
  for (const PeerAddr& a : addrs) client_.Forget(a);
}

bool TcpTransport::Serves(const RouteKey& key) const {
  // Device ends included: a remote one is staged by its owner's data server, a local one here.
  return key.locality == Locality::kRemoteNode;
}

bool TcpTransport::IsLocalDevice(const Endpoint& e) const {
  if (e.device >= 0) return true;
  if (e.gva == 0) return false;
  auto loc = layout_.Decode(e.gva);
  return loc && loc->medium == gva::Medium::kDevice;
}

double TcpTransport::CostNanos(const RouteKey& key, uint64_t bytes) const {
  return options_.fixed_cost_ns + static_cast<double>(bytes) / options_.bytes_per_ns;
}

std::string_view TcpTransport::Explain(const RouteKey& key) const {
  if (IsDevice(key.src) || IsDevice(key.dst))
    return "an end is memory of a peer on another node, reached over TCP: one-sided READ/WRITE served by its "
           "progress threads; device ends pass through host bounce buffers, the device copy of one part overlapping "
           "the network transfer of another";
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
  std::lock_guard lock(mu_);
  auto it = peers_.find({loc->medium, loc->rank});
  if (it == peers_.end()) {
    if (removed_.count(loc->rank)) return Error(Code::kPeerDown, "rank {} has left the pool or is down", loc->rank);
    if (loc->medium == gva::Medium::kDevice)
      return Error(Code::kNotFound, "{:#x} is device memory of rank {}, and no tcp endpoint is known for that rank's "
                   "device slice (it has none, or it was not added with AddPeerSlice)", e.gva, loc->rank);
    return Error(Code::kNotFound, "no tcp endpoint is known for rank {}", loc->rank);
  }
  const TcpPeerInfo& p = it->second;
  if (loc->offset > p.size || len > p.size - loc->offset)
    return Error(Code::kOutOfRange, "[{:#x}, +{}) runs past the {} bytes of rank {}'s {} slice served over tcp", e.gva,
                 len, p.size, loc->rank, gva::MediumName(loc->medium));
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
  if (rd || rs) {
    const Endpoint& remote = rd ? dst : src;
    const Endpoint& local = rd ? src : dst;
    WEFT_ASSIGN_OR_RETURN(Target t, Locate(remote, len));
    TcpRequest r{rd ? wire::DataOp::kWrite : wire::DataOp::kRead, t.info.segment_id, t.info.access_key, t.offset,
                 local.mapped, len};
    if (!IsLocalDevice(local)) return client_.Transfer(t.addr, {&r, 1}, deadline)[0];
    const uint8_t on_device = 1;
    return staging_.Transfer(client_, t.addr, {&r, 1}, {&on_device, 1}, deadline)[0];
  }
  // Both ends are local after all.
  if (IsLocalDevice(dst) || IsLocalDevice(src)) {
    if (!options_.device.copy)
      return Error(Code::kNotSupported, "a device end in this process and the tcp path has no device copy");
    return options_.device.copy(dst.mapped, src.mapped, len);
  }
  std::memmove(dst.mapped, src.mapped, len);
  return OkStatus();
}

void TcpTransport::CopyBatch(std::span<const CopyItem> items, std::span<Status> results) {
  Deadline deadline = Deadline::After(Millis(options_.copy_timeout_ms));
  // One Transfer per peer, so the items to one peer are pipelined and coalesced together.
  struct Group {
    std::vector<TcpRequest> reqs;
    std::vector<uint8_t> on_device;  // the local end of reqs[k] is device memory (staged)
    std::vector<size_t> items;
  };
  std::map<PeerAddr, Group> groups;
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
    g.reqs.push_back(r);
    g.on_device.push_back(IsLocalDevice(rd ? it.src : it.dst));
    g.items.push_back(i);
  }
  for (auto& [addr, g] : groups) {
    const bool any_device = std::any_of(g.on_device.begin(), g.on_device.end(), [](uint8_t d) { return d != 0; });
    auto st = any_device ? staging_.Transfer(client_, addr, g.reqs, g.on_device, deadline)
                         : client_.Transfer(addr, g.reqs, deadline);
    for (size_t k = 0; k < st.size(); ++k) results[g.items[k]] = std::move(st[k]);
  }
}

}  // namespace weft::transport::tcp
