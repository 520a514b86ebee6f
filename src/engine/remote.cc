// The engine's remote ends (engine.h, "Remote ends"): local regions exported through every
// transport that can, peers attached from their advertised blobs, and one-sided ops routed to
// the cheapest transport that reaches each region.
#include <algorithm>
#include <array>
#include <map>
#include <span>

#include "base/clock.h"
#include "base/log.h"
#include "engine/dead_owners.h"
#include "engine/engine.h"

namespace weft::engine {

using transport::ImportedRegion;
using transport::PeerLink;
using transport::Transport;

// A peer as this engine reaches it: per region-capable transport, a link or why there is none;
// per region, the imports. Immutable once built: an update builds a new one and ops in flight
// keep the old one (and its mappings) alive.
struct Engine::PeerState {
  struct Path {
    Transport* transport = nullptr;
    std::string endpoint_blob;
    std::shared_ptr<PeerLink> link;  // null: not reachable this way
    std::string reason;              // why not
  };
  struct Region {
    uint64_t addr = 0;
    uint64_t len = 0;
    bool device = false;
    std::vector<std::string> blobs;                      // per path ("" when not advertised)
    std::vector<std::shared_ptr<ImportedRegion>> imports;  // per path, null when not imported
    std::vector<std::string> reasons;                    // per path, why not imported
  };
  PeerId id = 0;
  std::string name;
  std::vector<Path> paths;
  std::vector<Region> regions;  // sorted by addr

  const Region* Find(uint64_t addr, uint64_t len) const {
    auto it = std::upper_bound(regions.begin(), regions.end(), addr,
                               [](uint64_t a, const Region& r) { return a < r.addr; });
    if (it == regions.begin()) return nullptr;
    --it;
    uint64_t off = addr - it->addr;
    if (off >= it->len || len > it->len - off) return nullptr;
    return &*it;
  }
};

struct Engine::RemoteChoice {
  size_t path = 0;
  const PeerState::Region* region = nullptr;
  std::string passed_over;  // cheaper transports that could not take the op, and why
};

uint64_t Engine::NextRegionId() {
  std::lock_guard lock(peers_mu_);
  return next_region_++;
}

Result<Blobs> Engine::ExportRegion(transport::LocalRegion region, uint64_t* id) {
  *id = region.id = NextRegionId();
  Blobs blobs;
  for (const auto& t : transports_) {
    if (!(t->capabilities() & transport::kCapRegions)) continue;
    auto blob = t->ExportRegion(region);
    if (blob.ok()) {
      blobs[std::string(t->name())] = std::move(*blob);
    } else {
      WEFT_LOG_DEBUG("region {:#x}+{} not exported through {}: {}", reinterpret_cast<uint64_t>(region.base),
                     region.len, t->name(), blob.status().message());
    }
  }
  if (blobs.empty()) {
    WithdrawRegion(region.id);
    return Error(Code::kNotSupported, "no transport of this engine can export the region ({} bytes{})", region.len,
                 region.device ? ", device memory" : "");
  }
  return blobs;
}

Result<std::string> Engine::ExportRegionThrough(std::string_view name, transport::LocalRegion region, uint64_t* id) {
  Transport* t = FindTransport(name);
  if (!t || !(t->capabilities() & transport::kCapRegions))
    return Error(Code::kNotSupported, "this engine has no transport {} with regions", name);
  *id = region.id = NextRegionId();
  return t->ExportRegion(region);
}

void Engine::WithdrawRegion(uint64_t id) {
  for (const auto& t : transports_)
    if (t->capabilities() & transport::kCapRegions) t->WithdrawRegion(id);
}

Blobs Engine::EndpointBlobs() const {
  Blobs out;
  for (const auto& t : transports_) {
    if (!(t->capabilities() & transport::kCapRegions)) continue;
    if (auto b = t->EndpointBlob(); b.ok()) out[std::string(t->name())] = std::move(*b);
  }
  return out;
}

uint16_t Engine::ListenPort() const {
  for (const auto& t : transports_)
    if (auto p = t->ListenPort()) return *p;
  return 0;
}

Result<std::shared_ptr<const Engine::PeerState>> Engine::BuildPeer(const PeerAdvert& advert,
                                                                 const PeerState* before) const {
  auto peer = std::make_shared<PeerState>();
  peer->name = advert.name;
  for (const auto& t : transports_) {
    if (!(t->capabilities() & transport::kCapRegions)) continue;
    PeerState::Path path;
    path.transport = t.get();
    auto it = advert.endpoints.find(std::string(t->name()));
    if (it == advert.endpoints.end()) {
      path.reason = "the peer does not advertise it";
    } else {
      path.endpoint_blob = it->second;
      const PeerState::Path* old = nullptr;
      if (before)
        for (const auto& p : before->paths)
          if (p.transport == t.get() && p.link && p.endpoint_blob == it->second) old = &p;
      if (old) {
        path.link = old->link;
      } else if (auto link = t->Connect(it->second); link.ok()) {
        path.link = std::move(*link);
      } else {
        path.reason = link.status().ToString();
        if (link.status().code() == Code::kProtocol)
          WEFT_LOG_WARN("peer '{}': path {} disabled for it: {}", advert.name, t->name(), path.reason);
      }
    }
    peer->paths.push_back(std::move(path));
  }
  for (const RegionAdvert& ra : advert.regions) {
    PeerState::Region region;
    region.addr = ra.addr;
    region.len = ra.len;
    region.device = ra.device;
    const PeerState::Region* old = before ? before->Find(ra.addr, ra.len) : nullptr;
    if (old && (old->addr != ra.addr || old->len != ra.len)) old = nullptr;
    for (size_t p = 0; p < peer->paths.size(); ++p) {
      const auto& path = peer->paths[p];
      auto blob = ra.blobs.find(std::string(path.transport->name()));
      region.blobs.push_back(blob == ra.blobs.end() ? std::string() : blob->second);
      region.imports.emplace_back();
      region.reasons.emplace_back();
      if (!path.link) {
        region.reasons.back() = path.reason;
        continue;
      }
      if (blob == ra.blobs.end()) {
        region.reasons.back() = "the region is not advertised for it";
        continue;
      }
      if (old && p < old->imports.size() && old->imports[p] && old->blobs[p] == blob->second &&
          before->paths[p].link == path.link) {
        region.imports.back() = old->imports[p];
        continue;
      }
      auto imported = path.transport->ImportRegion(*path.link, ra.addr, ra.len, blob->second);
      if (imported.ok()) {
        region.imports.back() = std::move(*imported);
      } else {
        region.reasons.back() = imported.status().ToString();
      }
    }
    peer->regions.push_back(std::move(region));
  }
  return std::shared_ptr<const PeerState>(std::move(peer));
}

Result<PeerId> Engine::AttachPeer(const PeerAdvert& advert) {
  WEFT_ASSIGN_OR_RETURN(auto built, BuildPeer(advert, nullptr));
  auto state = std::const_pointer_cast<PeerState>(built);
  std::lock_guard lock(peers_mu_);
  state->id = next_peer_++;
  peers_[state->id] = state;
  return state->id;
}

Status Engine::UpdatePeer(PeerId id, const PeerAdvert& advert) {
  auto before = FindPeer(id);
  if (!before) return Error(Code::kNotFound, "peer {} is not attached", id);
  WEFT_ASSIGN_OR_RETURN(auto built, BuildPeer(advert, before.get()));
  auto state = std::const_pointer_cast<PeerState>(built);
  state->id = id;
  std::lock_guard lock(peers_mu_);
  if (peers_.count(id)) peers_[id] = state;
  return OkStatus();
}

void Engine::DetachPeer(PeerId id) {
  std::shared_ptr<const PeerState> gone;  // released outside the lock (unmaps)
  std::lock_guard lock(peers_mu_);
  auto it = peers_.find(id);
  if (it == peers_.end()) return;
  gone = std::move(it->second);
  peers_.erase(it);
}

void Engine::FailPeer(PeerId id, const Status& why) {
  auto peer = FindPeer(id);
  if (!peer) return;
  for (const auto& path : peer->paths)
    if (path.link) path.transport->PeerDown(*path.link, why);
}

std::shared_ptr<const Engine::PeerState> Engine::FindPeer(PeerId id) const {
  std::lock_guard lock(peers_mu_);
  auto it = peers_.find(id);
  return it == peers_.end() ? nullptr : it->second;
}

Result<Engine::RemoteChoice> Engine::ChooseRemote(const PeerState& peer, const RemoteRequest& r,
                                                  bool explain) const {
  RemoteChoice choice;
  choice.region = peer.Find(r.remote_addr, r.len);
  if (!choice.region)
    return Error(Code::kInvalidAddress, "remote range {:#x}+{} is not inside a region that '{}' advertises",
                 r.remote_addr, r.len, peer.name);
  // The paths, cheapest first for this length (a handful: sorted in place, nothing allocated).
  constexpr size_t kMaxPaths = 16;
  std::array<std::pair<double, size_t>, kMaxPaths> order;
  const size_t n = std::min(peer.paths.size(), kMaxPaths);
  for (size_t i = 0; i < n; ++i) order[i] = {peer.paths[i].transport->RemoteCostNanos(r.len), i};
  std::stable_sort(order.begin(), order.begin() + n,
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  // Why path p cannot carry r, or nullptr when it can ("" for the region's own reason). Static
  // strings only: this runs for every op of a batch.
  auto refuses = [&](size_t p) -> const char* {
    const Transport* t = peer.paths[p].transport;
    const auto& import = choice.region->imports[p];
    // A remote device region is the owner's to serve (it exported it only where it can); local
    // device memory and a mapped device region need the transport to copy device memory here.
    const bool device_here = t->capabilities() & transport::kCapDeviceMemory;
    if (r.local_device && !device_here) return "it does not reach device memory here";
    if (!import) return "";
    if (choice.region->device && import->mapped && !device_here) return "its mapping is host memory only";
    return nullptr;
  };
  std::string reasons;  // filled only to explain (a route, a logged path) or to fail
  auto note = [&](size_t p, const char* why) {
    reasons += fmt::format("{}{}: {}", reasons.empty() ? "" : "; ", peer.paths[p].transport->name(),
                           *why ? why : choice.region->reasons[p]);
  };
  for (size_t k = 0; k < n; ++k) {
    const size_t p = order[k].second;
    const char* why = refuses(p);
    if (!why) {
      choice.path = p;
      choice.passed_over = std::move(reasons);
      return choice;
    }
    if (explain) note(p, why);
  }
  if (!explain) return ChooseRemote(peer, r, /*explain=*/true);  // fails again, saying why
  for (const auto& [name, why] : absent_) reasons += fmt::format("{}{}: {}", reasons.empty() ? "" : "; ", name, why);
  return Error(Code::kUnavailable, "no transport reaches {:#x}+{} of '{}' ({})", r.remote_addr, r.len, peer.name,
               reasons.empty() ? "this engine has no transport for remote regions" : reasons);
}

namespace {

// The kinds of a remote op's ends, as the path counters label them (source2destination).
transport::RouteKey RemoteKey(const RemoteRequest& r, bool remote_device) {
  const auto local = r.local_device ? transport::EndKind::kLD : transport::EndKind::kLH;
  const auto remote = remote_device ? transport::EndKind::kGD : transport::EndKind::kGH;
  const bool read = r.kind == transport::RemoteOpKind::kRead;
  return transport::RouteKey{read ? remote : local, read ? local : remote, transport::Locality::kSameNode};
}

}  // namespace

namespace {

// Per-batch bookkeeping of TransferRemote that would otherwise cost an atomic or a lookup per op.
// Peer and Region are the engine's (private) PeerState and PeerState::Region.
template <typename Peer, typename Region>
class BatchTally {
 public:
  // A batch's ops mostly go to one region with one length (a KV layer's blocks): the previous
  // op's choice serves the next one when its peer, region, length and local end are the same.
  struct Choice {
    const Peer* peer = nullptr;
    const Region* region = nullptr;
    uint64_t len = 0;
    bool local_device = false;
    size_t path = 0;
  };
  const Choice* Reuse(const Peer* peer, const RemoteRequest& r) const {
    const Choice& c = last_;
    if (!c.region || c.peer != peer || c.len != r.len || c.local_device != r.local_device ||
        r.remote_addr < c.region->addr)
      return nullptr;
    const uint64_t off = r.remote_addr - c.region->addr;
    if (off >= c.region->len || r.len > c.region->len - off) return nullptr;
    return &c;
  }
  void Remember(const Choice& c) { last_ = c; }

  // A mapped region is entered once per batch (a withdrawal waits until the batch is done with it)
  // and left once after the copies.
  Status Enter(const transport::ImportedRegion* region) {
    if (!entered_.empty() && entered_.back() == region) return OkStatus();
    if (std::find(entered_.begin(), entered_.end(), region) != entered_.end()) return OkStatus();
    WEFT_RETURN_IF_ERROR(region->Enter());
    entered_.push_back(region);
    return OkStatus();
  }
  void ExitAll() {
    for (const auto* region : entered_) region->Exit();
    entered_.clear();
  }
  // The mapped regions entered this batch, each once.
  std::span<const transport::ImportedRegion* const> entered() const { return entered_; }

  // Path counters added per run of ops with the same path and ends, not per op.
  template <typename CountFn>
  void Count(const Transport* path, const transport::RouteKey& key, uint64_t len, CountFn&& flush) {
    if (run_.path != path || !(run_.key == key)) {
      Flush(flush);
      run_ = {path, key, 0, 0};
    }
    ++run_.copies;
    run_.bytes += len;
    bytes_ += len;
  }
  template <typename CountFn>
  void Flush(CountFn&& flush) {
    if (run_.copies > 0) flush(run_.path, run_.key, run_.copies, run_.bytes);
    run_.copies = 0;
    run_.bytes = 0;
  }
  uint64_t bytes() const { return bytes_; }

 private:
  Choice last_;
  std::vector<const transport::ImportedRegion*> entered_;
  struct Run {
    const Transport* path = nullptr;
    transport::RouteKey key{};
    uint64_t copies = 0, bytes = 0;
  } run_;
  uint64_t bytes_ = 0;
};

}  // namespace

std::vector<Status> Engine::TransferRemote(std::span<const RemoteRequest> requests, Deadline deadline) {
  const bool timed = requests.size() > 1;
  const uint64_t t_start = timed ? NowNanos() : 0;
  std::vector<Status> results(requests.size());
  auto job = std::make_shared<CopyJob>(requests.size(), deadline);
  // Posted ops grouped by (transport, peer): one Post each.
  std::map<std::pair<Transport*, PeerId>, std::vector<size_t>> posted;
  std::map<PeerId, std::shared_ptr<const PeerState>> peers;
  std::vector<transport::RemoteOp> ops(requests.size());
  // The mapped region each op copies to or from (entered; left after the copies); null: posted.
  std::vector<const ImportedRegion*> mapped(requests.size(), nullptr);
  BatchTally<PeerState, PeerState::Region> tally;
  auto count_path = [this](const Transport* t, const transport::RouteKey& key, uint64_t copies, uint64_t bytes) {
    CountPath(t, key, copies, bytes);
  };
  copies_->Add(requests.size());
  const PeerState* peer = nullptr;
  PeerId peer_id = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const RemoteRequest& r = requests[i];
    if (!peer || r.peer != peer_id) {
      auto& held = peers[r.peer];
      if (!held) held = FindPeer(r.peer);
      peer = held.get();
      peer_id = r.peer;
    }
    size_t path = 0;
    const PeerState::Region* region = nullptr;
    if (const auto* same = options_.log_paths || !peer ? nullptr : tally.Reuse(peer, r)) {
      path = same->path;
      region = same->region;
    } else {
      auto choice = peer ? ChooseRemote(*peer, r, options_.log_paths)
                         : Result<RemoteChoice>(Error(Code::kNotFound, "peer {} is not attached", r.peer));
      if (!choice.ok()) {
        results[i] = choice.status();
        job->Fail(i, choice.status());
        continue;
      }
      path = choice->path;
      region = choice->region;
      tally.Remember({peer, region, r.len, r.local_device, path});
      if (options_.log_paths)
        WEFT_LOG_INFO("{} {} B {:#x} of '{}' via {}{}", r.kind == transport::RemoteOpKind::kRead ? "read" : "write",
                      r.len, r.remote_addr, peer->name, peer->paths[path].transport->name(),
                      choice->passed_over.empty() ? "" : " (passed over: " + choice->passed_over + ")");
    }
    Transport* t = peer->paths[path].transport;
    const auto& import = region->imports[path];
    const uint64_t offset = r.remote_addr - region->addr;
    tally.Count(t, RemoteKey(r, region->device), r.len, count_path);
    if (import->mapped) {
      // Counted in the owner's control page until the copies are done (a withdrawal waits for it).
      if (Status in = tally.Enter(import.get()); !in.ok()) {
        results[i] = in;
        job->Fail(i, in);
        continue;
      }
      transport::Endpoint remote{import->mapped + offset}, local{r.local};
      const bool read = r.kind == transport::RemoteOpKind::kRead;
      AddPieces(*job, i, t, read ? local : remote, read ? remote : local, r.len);
      mapped[i] = import.get();
      continue;
    }
    ops[i] = transport::RemoteOp{r.kind, r.local, r.local_device, peer->paths[path].link.get(), import.get(), offset,
                                 r.len};
    posted[{t, r.peer}].push_back(i);
  }
  tally.Flush(count_path);
  bytes_->Add(tally.bytes());
  for (auto& [id, p] : peers)
    if (p) job->KeepAlive(p);
  const uint64_t t_planned = timed ? NowNanos() : 0;
  // With nothing to post the caller copies too (no hand-off for a small op); else it posts.
  Start(job, /*caller_helps=*/posted.empty());
  for (auto& [key, idx] : posted) {
    std::vector<transport::RemoteOp> group;
    for (size_t i : idx) group.push_back(ops[i]);
    std::vector<Status> got(group.size());
    key.first->Post(group, got, deadline);
    for (size_t k = 0; k < idx.size(); ++k) results[idx[k]] = std::move(got[k]);
  }
  job->WaitUntil(Deadline::Never());  // pieces check the deadline before they start
  const uint64_t t_copied = timed ? NowNanos() : 0;
  const auto gone = DeadOwners(tally.entered());
  tally.ExitAll();
  const auto& copied = job->results();
  for (size_t i = 0; i < requests.size(); ++i) {
    if (mapped[i]) results[i] = copied[i];
    if (mapped[i] && results[i].ok() && !gone.empty())
      if (auto it = gone.find(mapped[i]); it != gone.end()) results[i] = it->second;
    failures_->Count(results[i]);
  }
  if (timed) {
    batch_stages_.plan->Observe(t_planned - t_start);
    batch_stages_.copy->Observe(t_copied - t_planned);
    batch_stages_.finish->Observe(NowNanos() - t_copied);
  }
  return results;
}

RemoteRequest Engine::RemoteRequestOf(const transport::Endpoint& dst, const transport::Endpoint& src, uint64_t len) {
  const bool read = src.peer != 0;
  const transport::Endpoint& local = read ? dst : src;
  const transport::Endpoint& remote = read ? src : dst;
  return RemoteRequest{read ? transport::RemoteOpKind::kRead : transport::RemoteOpKind::kWrite, local.mapped,
                       local.device >= 0, remote.peer, remote.gva, len};
}

Result<RouteInfo> Engine::RouteRemote(const RemoteRequest& r) const {
  auto peer = FindPeer(r.peer);
  if (!peer) return Error(Code::kNotFound, "peer {} is not attached", r.peer);
  WEFT_ASSIGN_OR_RETURN(RemoteChoice choice, ChooseRemote(*peer, r, /*explain=*/true));
  Transport* t = peer->paths[choice.path].transport;
  const auto local = r.local_device ? transport::EndKind::kLD : transport::EndKind::kLH;
  const auto remote = choice.region->device ? transport::EndKind::kGD : transport::EndKind::kGH;
  const bool read = r.kind == transport::RemoteOpKind::kRead;
  RouteInfo info{read ? remote : local, read ? local : remote,
                 (t->capabilities() & transport::kCapRemoteNode) ? transport::Locality::kRemoteNode
                                                                  : transport::Locality::kSameNode,
                 std::string(t->name()), std::string(t->ExplainRemote())};
  if (!choice.passed_over.empty()) info.reason += " (passed over: " + choice.passed_over + ")";
  return info;
}

Status Engine::NotifyPeer(PeerId id, std::span<const uint8_t> payload, Deadline deadline) {
  auto peer = FindPeer(id);
  if (!peer) return Error(Code::kNotFound, "peer {} is not attached", id);
  std::string reasons;
  for (const auto& path : peer->paths) {
    if (!(path.transport->capabilities() & transport::kCapNotify)) continue;
    if (path.link) return path.transport->Notify(*path.link, payload, deadline);
    reasons += fmt::format("{}{}: {}", reasons.empty() ? "" : "; ", path.transport->name(), path.reason);
  }
  return Error(Code::kUnavailable, "no transport carries notifications to '{}' ({})", peer->name,
               reasons.empty() ? "none of this engine's transports carries them" : reasons);
}

}  // namespace weft::engine
