#include <weft/pool.h>

#include "api/bm/pool_internal.h"
#include "api/bm/pool_impl.h"

#include <shared_mutex>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "api/bm/alloc_service.h"
#include "api/bm/device_slice.h"
#include "api/bm/slice_blobs.h"
#include "base/log.h"
#include "base/random.h"
#include "engine/builtin_transports.h"
#include "gva/segment_table.h"
#include "mem/host_segment.h"
#include "net/control_stream.h"
#include "base/node_identity.h"
#include "net/tcp_socket.h"
#include "transport/tcp/tcp_transport.h"
#if WEFT_HAVE_UCX
#include "transport/ucx/ucx_transport.h"
#endif
#include "api/bm/pool_coordinator.h"
#include "meta/coordinator_client.h"
#include "meta/leader_election.h"
#include "meta/metrics_server.h"

namespace weft::bm {

// Pool::Impl is declared in api/bm/pool_impl.h; the coordinator connection and following an
// elected coordinator are in pool_follower.cc.

// A peer we do not map (transport=tcp or another network path): its slices are regions of it,
// at their GVAs, reached through the engine's remote ends. Without a usable blob the peer is in
// the pool but unreachable from here.
void Pool::Impl::AttachThroughPath(const meta::SegmentDescriptor& desc, const Result<PathSliceBlob>& blob) {
  if (!blob.ok()) {
    const std::string why = fmt::format("{}: {} (every peer of the pool needs transport={}); shm: not used with "
                                        "transport={}", network, blob.status().ToString(), network, network);
    MarkUnreachable(desc, Medium::kHost, why);
    if (desc.device_size > 0) MarkUnreachable(desc, Medium::kDevice, why);
    return;
  }
  engine::PeerAdvert advert{desc.peer_name, {{network, blob->endpoint}}, {}};
  advert.regions.push_back({layout.SliceBase(Medium::kHost, desc.rank), desc.size, false, {{network, blob->host_region}}});
  if (desc.device_size > 0 && !blob->device_region.empty()) {
    advert.regions.push_back(
        {layout.SliceBase(Medium::kDevice, desc.rank), desc.device_size, true, {{network, blob->device_region}}});
  }
  std::sort(advert.regions.begin(), advert.regions.end(), [](const auto& a, const auto& b) { return a.addr < b.addr; });
  auto id = engine->AttachPeer(advert);
  if (!id.ok()) {
    const std::string why = fmt::format("{}: {}", network, id.status().ToString());
    MarkUnreachable(desc, Medium::kHost, why);
    if (desc.device_size > 0) MarkUnreachable(desc, Medium::kDevice, why);
    return;
  }
  AttachRemoteSlices(desc, *blob, *id);
}

// The host slot's release detaches the peer from the engine (both slices go with it); the engine
// may be gone by then (Leave resets it before the table).
void Pool::Impl::AttachRemoteSlices(const meta::SegmentDescriptor& desc, const PathSliceBlob& blob,
                                    engine::PeerId id) {
  const uint32_t rank = desc.rank;
  Status s = table->AttachRemote({Medium::kHost, rank, 0}, desc.size, desc.peer_name, id, [this, id] {
    if (engine) engine->DetachPeer(id);
  });
  if (!s.ok()) {
    WEFT_LOG_ERROR("cannot attach rank {}: {}", rank, s.ToString());
    engine->DetachPeer(id);
    return;
  }
  {
    std::lock_guard lock(remote_mu);
    remote_ids[rank] = id;
  }
  WEFT_LOG_INFO("rank {} ({}) joined: reached over {}", rank, desc.peer_name, network);
  if (desc.device_size == 0) return;
  if (blob.device_region.empty())
    return MarkUnreachable(desc, Medium::kDevice, fmt::format("{}: the peer's blob offers no device slice", network));
  Status d = table->AttachRemote({Medium::kDevice, rank, 0}, desc.device_size, desc.peer_name, id, [] {});
  if (!d.ok()) WEFT_LOG_ERROR("cannot attach the device slice of rank {}: {}", rank, d.ToString());
}

// Copies to the slice then fail with UNAVAILABLE quoting `why`, instead of finding no peer there.
void Pool::Impl::MarkUnreachable(const meta::SegmentDescriptor& desc, Medium medium, const std::string& why) {
  WEFT_LOG_WARN("rank {} ({}) joined, but its {} slice cannot be reached from this peer: {}", desc.rank,
                desc.peer_name, gva::MediumName(medium), why);
  Status s = table->MarkUnreachable({medium, desc.rank, 0}, desc.peer_name, why);
  if (!s.ok()) WEFT_LOG_ERROR("rank {}: {}", desc.rank, s.ToString());
}

// Why a host slice is not reached without shm: this peer has no other path to it.
std::string Pool::Impl::ShmUnusable(const Status& why) const {
  return fmt::format("shm: {}; no other path: this peer maps same-node slices only (transport={}; set "
                     "transport=tcp on every peer to reach peers over their data servers)",
                     why.ToString(), config.transport);
}

std::function<void()> Pool::Impl::RegisterWithGpu(void* ptr, uint64_t len, std::function<void()> release) {
  if (!engine || !engine->HasCapability(transport::kCapDeviceMemory)) return release;
  Status s = engine->RegisterHostMemory(ptr, len);
  if (!s.ok()) {
    WEFT_LOG_WARN("host slice at {} ({} bytes) is not registered with the GPU, so copies between it and device "
                  "memory are staged by the driver: {}",
                  ptr, len, s.ToString());
    return release;
  }
  // The engine may be gone by the time the table releases (Leave resets it first); its CUDA
  // transport then unregistered everything itself.
  return [this, ptr, release = std::move(release)] {
    if (engine) engine->UnregisterHostMemory(ptr);
    release();
  };
}

Status Pool::Impl::CreateOwnDevice() {
  if (config.device_size == 0) return OkStatus();
  if (config.device_size > layout.rank_stride()) {
    return Error(Code::kInvalidArgument,
                 "device_size {} is more than a rank's share of the device region ({} bytes: rank_size rounded up "
                 "to 2 MiB); lower device_size or raise rank_size",
                 config.device_size, layout.rank_stride());
  }
  if (Status usable = DeviceSlicesUsable(); !usable.ok()) {
    return Error(Code::kNotSupported, "device_size={} needs a CUDA GPU, but {}; set device_size=0 to join without a "
                 "device slice", config.device_size, usable.message());
  }
  if (!engine->HasCapability(transport::kCapDeviceMemory)) {
    return Error(Code::kNotSupported, "device_size={}: the engine has no cuda path (see the log for why), so the "
                 "device slice could not be copied to; set device_size=0", config.device_size);
  }
  WEFT_ASSIGN_OR_RETURN(own_device, CreateDeviceSlice(config.device, config.device_size));
  return OkStatus();
}

// A same-node peer's device slice, mapped from the VMM fd its cuda blob names.
void Pool::Impl::AttachPeerDevice(const meta::SegmentDescriptor& desc, const Result<CudaSliceBlob>& blob,
                                  std::vector<net::UniqueFd>& fds) {
  if (desc.device_size == 0) return;
  if (!blob.ok()) return MarkUnreachable(desc, Medium::kDevice, fmt::format("cuda: {}", blob.status().ToString()));
  auto slice = ImportDeviceSlice(fds[blob->fd_index].Release(), blob->size, config.device);
  if (!slice.ok()) {
    return MarkUnreachable(desc, Medium::kDevice,
                           fmt::format("cuda: cannot map its slice on GPU {}: {}", blob->gpu, slice.status().ToString()));
  }
  Status s = table->Attach({Medium::kDevice, desc.rank, 0}, slice->data, slice->size, /*local=*/false, desc.peer_name,
                           [hold = slice->hold]() mutable { hold.reset(); }, slice->gpu);
  if (!s.ok()) WEFT_LOG_ERROR("cannot attach the device slice of rank {}: {}", desc.rank, s.ToString());
  else WEFT_LOG_INFO("rank {} ({}): device slice of {} bytes on GPU {} mapped", desc.rank, desc.peer_name,
                     slice->size, slice->gpu);
}

// A same-node peer's host slice, mapped from the memfd its shm blob names.
void Pool::Impl::AttachPeerHost(const meta::SegmentDescriptor& desc, const Result<ShmSliceBlob>& blob,
                                std::vector<net::UniqueFd>& fds) {
  if (!blob.ok()) return MarkUnreachable(desc, Medium::kHost, ShmUnusable(blob.status()));
  // The rank's previous incarnation may still be mapped at the fixed address for a copy in
  // flight (Detach does not wait for it); mapping over it would let its release unmap ours.
  void* at = FixedAddressFor(desc.rank);
  if (at && table->Draining({Medium::kHost, desc.rank, 0})) {
    WEFT_LOG_WARN("rank {} ({}) rejoined while a copy still uses its previous slice: mapped outside the unified "
                  "window this time (copies through the pool work; its GVAs are not addresses here)",
                  desc.rank, desc.peer_name);
    at = nullptr;
  }
  auto seg = mem::HostSegment::Import(fds[blob->fd_index].Release(), desc.size, at);
  if (!seg.ok()) return MarkUnreachable(desc, Medium::kHost, ShmUnusable(seg.status().Annotate("mapping its memfd")));
  std::shared_ptr<mem::HostSegment> owned = std::move(*seg);
  Status s = table->Attach({Medium::kHost, desc.rank, 0}, owned->data(), desc.size, /*local=*/false, desc.peer_name,
                           RegisterWithGpu(owned->data(), desc.size, [owned]() mutable { owned.reset(); }));
  if (!s.ok()) WEFT_LOG_ERROR("cannot attach rank {}: {}", desc.rank, s.ToString());
  else WEFT_LOG_INFO("rank {} ({}, pid {}) joined: {} bytes mapped", desc.rank, desc.peer_name, desc.pid, desc.size);
}

void Pool::Impl::OnPeerGone(uint32_t rank, bool clean) {
  if (clean) WEFT_LOG_INFO("rank {} left the pool; copies to its memory now fail with PEER_DOWN", rank);
  else WEFT_LOG_WARN("rank {} is down; copies to its memory now fail with PEER_DOWN", rank);
  const std::string name = table->PeerName({Medium::kHost, rank, 0});
  // Neither waits for copies in flight: this is the coordinator client's only thread.
  table->Detach({Medium::kHost, rank, 0}, /*dead=*/!clean);
  table->Detach({Medium::kDevice, rank, 0}, /*dead=*/!clean);
  if (!clean) FailCopiesTo(rank, name);
  std::lock_guard lock(remote_mu);
  remote_ids.erase(rank);
}

// A dead peer's copies in flight over the network would wait out their deadlines (a frozen
// peer's sockets never close); failing them lets their pins, and so the slice, go now.
void Pool::Impl::FailCopiesTo(uint32_t rank, const std::string& peer_name) {
  engine::PeerId id = 0;
  {
    std::lock_guard lock(remote_mu);
    auto it = remote_ids.find(rank);
    if (it == remote_ids.end()) return;
    id = it->second;
  }
  engine->FailPeer(id, Error(Code::kPeerDown, "rank {} ({}) was declared down by the pool during the copy", rank,
                             peer_name));
}

namespace {
// A malformed blob disables its transport for that peer only; names this build does not know
// are a newer peer's transports and are skipped.
void LogBlobsOf(const meta::SegmentDescriptor& desc, const PeerSliceBlobs& blobs, const std::string& network) {
  for (const Status* s : {&blobs.shm.status(), &blobs.cuda.status(), &blobs.path.status()}) {
    if (s->code() == Code::kProtocol)
      WEFT_LOG_WARN("rank {} ({}): {}; that path is not used for this peer", desc.rank, desc.peer_name, s->ToString());
  }
  for (const auto& [name, blob] : desc.transports) {
    if (name != kShmBlob && name != kCudaBlob && name != network)
      WEFT_LOG_DEBUG("rank {} ({}) advertises transport {}, which this peer does not use", desc.rank,
                     desc.peer_name, name);
  }
}
}  // namespace

void Pool::Impl::AttachPeer(meta::SegmentDescriptor desc, std::vector<net::UniqueFd> fds) {
  const PeerSliceBlobs blobs = ReadPeerSlices(desc.transports, fds.size(), desc.device_size, network);
  LogBlobsOf(desc, blobs, network);
  // Descriptors no transport takes over close when `fds` goes (with a network path: all of them).
  if (!network.empty()) return AttachThroughPath(desc, blobs.path);
  AttachPeerDevice(desc, blobs.cuda, fds);
  AttachPeerHost(desc, blobs.shm, fds);
}

Pool::Pool(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Pool::~Pool() { (void)Leave(); }

namespace {

bool IsLoopback(const std::string& host) { return host == "127.0.0.1" || host == "localhost" || host == "::1"; }

// Peers on other machines reach our memory at data_address: a loopback one serves none of them.
void WarnIfDataAddressIsLoopbackOnly(const Config& config, const net::ControlAddress& control) {
  auto data = net::ParseHostPort(config.data_address);
  const bool loopback_data = data.ok() && IsLoopback(data->host);
  const bool loopback_coord = IsLoopback(control.where.host);
  if (loopback_data && !loopback_coord) {
    WEFT_LOG_WARN("data_address {} is loopback but the coordinator {} is not: peers on other machines cannot "
                  "reach this peer's memory; set data_address (WEFT_DATA_ADDRESS) to an address they can reach",
                  config.data_address, control.ToString());
  }
}

// The coordinator address a peer dials, and how it may join there.
struct CoordinatorDial {
  std::string address;
  JoinMode mode;
};

// An etcd:// coordinator names HA masters (`weft store-master --ha`): the elected one publishes
// its tcp:// address there, read once at join. A peer only joins it: hosting a coordinator of
// its own would make a second, unelected master.
Result<CoordinatorDial> CoordinatorToDial(const Config& config, JoinMode mode) {
  std::string configured = config.CoordinatorPath();
  if (!meta::IsElectedCoordinator(configured)) return CoordinatorDial{std::move(configured), mode};
  if (mode == JoinMode::kHost) {
    return Error(Code::kInvalidArgument,
                 "coordinator {} names elected masters (weft store-master --ha): a peer cannot host the coordinator "
                 "there; join it, or host at a tcp:// address or unix path",
                 configured);
  }
  WEFT_ASSIGN_OR_RETURN(std::string leader, meta::ResolveCoordinator(configured, config.pool_name,
                                                                      Deadline::After(Millis(config.deadline_ms))));
  if (!leader.starts_with(net::kTcpScheme)) {
    return Error(Code::kProtocol, "the leader of pool '{}' in {} published '{}', not a tcp:// address",
                 config.pool_name, configured, leader);
  }
  WEFT_LOG_INFO("pool '{}': the elected coordinator in {} is {}", config.pool_name, configured, leader);
  return CoordinatorDial{std::move(leader), JoinMode::kJoin};
}

// Peers of a tcp:// coordinator may be on other machines, and no memfd crosses tcp: their
// memory is reached over the tcp data plane, which the secret also protects.
Status FitConfigToTcpCoordinator(Config& config, const net::ControlAddress& control) {
  if (config.cluster_secret.empty()) {
    return Error(Code::kUnauthenticated,
                 "coordinator {} is on tcp, which needs a cluster secret: set WEFT_CLUSTER_SECRET (config key "
                 "cluster_secret) to the same value on every peer",
                 control.ToString());
  }
  if (config.transport == "auto" || config.transport == "shm") {
    WEFT_LOG_INFO("transport {} -> tcp: the coordinator {} is on tcp, so no segment memfd can be passed and "
                  "every other peer is reached over the tcp data plane",
                  config.transport, control.ToString());
    config.transport = "tcp";
  }
  WarnIfDataAddressIsLoopbackOnly(config, control);
  return OkStatus();
}

// The registry's transports a pool can reach other peers through ("tcp").
std::string NetworkPathNames(const transport::Registry& registry) {
  std::string out;
  for (const auto& e : registry.entries())
    if ((e.capabilities & transport::kCapRegions) && e.pool_slices && e.name != kShmBlob && e.name != kCudaBlob)
      out += (out.empty() ? "" : ", ") + e.name;
  return out;
}

// The pool's `transport=`: "auto" (or "shm"): same-node peers' slices are mapped; or one name of
// the registry with regions (tcp, ...): every other peer is reached through it. memcpy and cuda
// serve this process's own ends whatever it says. Returns the network path's name ("" for none).
Result<std::string> CheckPoolTransport(Config& config, const transport::Registry& registry) {
  WEFT_ASSIGN_OR_RETURN(auto selected, registry.Select(config.transport));
  if (config.transport == "auto" || config.transport == "shm") {
    config.transport = "auto";
    return std::string();
  }
  if (selected.size() != 1 || !(selected[0]->capabilities & transport::kCapRegions) ||
      selected[0]->name == kCudaBlob || selected[0]->name == kShmBlob) {
    return Error(Code::kNotSupported,
                 "transport={}: the pool maps same-node peers' slices (transport=auto) or reaches every other peer "
                 "through one transport with remote regions ({})",
                 config.transport, NetworkPathNames(registry));
  }
  // cma: an owner cannot revoke access, and a pool slice is unmapped when its peer leaves while
  // the others may still write to it.
  if (!selected[0]->pool_slices) {
    return Error(Code::kNotSupported, "transport={}: {}; pool slices need a path whose owner can withdraw them",
                 config.transport, selected[0]->summary);
  }
  if ((selected[0]->capabilities & transport::kCapRemoteNode) && config.cluster_secret.empty()) {
    return Error(Code::kUnauthenticated, "transport={} reaches peers on other nodes, so it needs a cluster secret: "
                 "set WEFT_CLUSTER_SECRET (the same on every peer)", config.transport);
  }
  return selected[0]->name;
}

// The tcp transport as the pool runs it: our slices served by a data server at data_address.
Result<transport::tcp::TcpTransportOptions> PoolTcpOptions(const Config& config) {
  // ParseHostPort wants a real port; port 0 (any free one) is fine for a listener.
  std::string address = config.data_address;
  const bool any_port = address.size() > 2 && address.compare(address.size() - 2, 2, ":0") == 0;
  if (any_port) address.replace(address.size() - 1, 1, "1");
  WEFT_ASSIGN_OR_RETURN(auto where, net::ParseHostPort(address));
  transport::tcp::TcpTransportOptions t;
  t.client.auth.cluster_secret = config.cluster_secret;
  t.client.lanes = static_cast<int>(config.tcp_lanes);
  t.device = TcpDeviceStaging();
  t.advertise_host = where.host;
  transport::tcp::TcpServerOptions so;
  so.host = where.host;
  so.port = any_port ? 0 : where.port;
  so.auth.cluster_secret = config.cluster_secret;
  so.device_copy = t.device.copy;  // a socket cannot reach device memory: the server stages it
  so.staging_alloc = t.device.host;
  t.serve = so;
  return t;
}

}  // namespace

void Pool::Impl::ReserveUnifiedVa() {
  if (!config.unified_va) return;
  auto reserved = mem::VaReservation::Reserve(layout.base(), layout.end() - layout.base());
  if (reserved.ok()) {
    window = std::move(*reserved);
  } else {
    WEFT_LOG_WARN("unified VA is off, GVAs go through translation: {}", reserved.status().message());
  }
}

Status Pool::Impl::CreateEngine(const transport::Registry& registry) {
  table = std::make_unique<gva::SegmentTable>(layout);
  engine::EngineOptions eopts;
  eopts.threads = config.copy_threads;
  eopts.split_bytes = config.split_bytes;
  eopts.log_paths = config.log_paths;
  eopts.cuda_kernel_sms = config.gpu_copy_sms;
  eopts.remote_timeout_ms = static_cast<int64_t>(config.deadline_ms);
  if (eopts.log_paths && log::Get().level() > spdlog::level::info) log::SetLevel("info");
  if (network.empty()) {
    engine = std::make_unique<engine::Engine>(eopts, *table, metrics);
    return OkStatus();
  }
  WEFT_ASSIGN_OR_RETURN(auto tcp, PoolTcpOptions(config));
  tcp.metrics = &metrics;
  transport::TransportContext context;
  context.node_id = NodeIdentity();
  context.cuda_kernel_sms = config.gpu_copy_sms;
  context.tcp = &tcp;
#if WEFT_HAVE_UCX
  transport::ucx::UcxOptions ucx;
  ucx.device = tcp.device;  // local device ends staged as on tcp, when the loaded UCX has no CUDA
  ucx.named = network == "ucx";
  context.ucx = &ucx;
#endif
  context.metrics = &metrics;
  WEFT_ASSIGN_OR_RETURN(auto set, registry.Create("memcpy,cuda," + network, context));
  if (auto it = set.absent.find(network); it != set.absent.end())
    return Error(Code::kUnavailable, "transport={} cannot run here: {}", network, it->second);
  engine = std::make_unique<engine::Engine>(eopts, table.get(), metrics, std::move(set));
  return OkStatus();
}

// With a network path: our slices exported through it (tcp: segments of its data server), and
// the blobs the others reach them by. Before we join: they learn them from our descriptor.
Status Pool::Impl::ExportOwnSlices() {
  if (network.empty()) return OkStatus();
  auto endpoint = engine->EndpointBlobs();
  if (!endpoint.count(network))
    return Error(Code::kUnavailable, "transport={} gives no endpoint for peers to reach this one", network);
  own_path.endpoint = endpoint[network];
  uint64_t id = 0;
  transport::LocalRegion host{0, own_segment->data(), config.rank_size, false, -1, own_segment->fd(), 0};
  WEFT_ASSIGN_OR_RETURN(own_path.host_region, engine->ExportRegionThrough(network, host, &id));
  if (own_device.size > 0) {
    transport::LocalRegion device{0, own_device.data, own_device.size, true, own_device.gpu, -1, 0};
    auto blob = engine->ExportRegionThrough(network, device, &id);
    if (blob.ok()) own_path.device_region = std::move(*blob);
    else WEFT_LOG_WARN("our device slice is not reachable over {}: {}", network, blob.status().ToString());
  }
  return OkStatus();
}

// The coordinator in this process; its address (tcp port 0: with the port it took). Its store
// master writes small values (inline puts) into the slices this process maps with one memcpy on
// the coordinator thread; a slice reached only over the network is left to the put's writer, so
// that thread never waits on a socket. The table outlives the coordinator (Leave and ~Impl).
Result<std::string> Pool::Impl::HostCoordinator() {
  gva::SegmentTable* slices = table.get();
  store::ReplicaWriter write = [slices](const store::Replica& replica, std::span<const uint8_t> value) -> Status {
    WEFT_ASSIGN_OR_RETURN(gva::SegmentTable::Pin pin, slices->Resolve(replica.gva, value.size()));
    if (pin.ptr() == nullptr || pin.device() >= 0)
      return Error(Code::kNotSupported, "rank {}'s slice is not host memory mapped here", replica.rank);
    std::memcpy(pin.ptr(), value.data(), value.size());
    return OkStatus();
  };
  WEFT_ASSIGN_OR_RETURN(coordinator, PoolCoordinator::Start(config, &metrics, std::move(write)));
  return coordinator->socket_path();
}

// Our Join frame to the coordinator at `address`: our descriptor (our slices, and in transport
// blobs how a peer reaches them: memfds for a same-node coordinator, our network path's blobs).
Result<std::unique_ptr<meta::CoordinatorClient>> Pool::Impl::JoinAt(const std::string& address,
                                                                     bool coordinator_on_tcp, int device_fd,
                                                                     uint64_t gen) {
  meta::JoinOptions jopts;
  jopts.socket_path = address;
  jopts.cluster_secret = config.cluster_secret;
  jopts.pool_name = config.pool_name;
  jopts.rank_size = config.rank_size;
  // The default name is fresh per pool (several pools may live in one process), so only an
  // explicit peer_name makes a restart rejoin as the same peer; a failover rejoin reuses ours.
  if (peer_name.empty()) {
    peer_name = config.peer_name.empty()
                    ? fmt::format("{}:{}.{:04x}", config.pool_name, getpid(), FreshSeed() & 0xffff)
                    : config.peer_name;
  }
  jopts.peer_name = peer_name;
  jopts.segment.peer_name = jopts.peer_name;
  jopts.segment.pid = getpid();
  jopts.segment.size = config.rank_size;
  jopts.segment.permissions = own_segment->permissions();
  jopts.segment.device_size = own_device.size;
  SliceAdvert advert = AdvertiseSlices(OwnSlicesToAdvertise(coordinator_on_tcp, device_fd));
  jopts.segment.transports = std::move(advert.blobs);
  jopts.fds = std::move(advert.fds);
  jopts.heartbeat_interval = Millis(config.heartbeat_ms);
  jopts.reply_spin = std::chrono::microseconds(config.reply_spin_us);
  jopts.deadline = DefaultDeadline();
  return meta::CoordinatorClient::Join(
      jopts,
      [this, gen](meta::SegmentDescriptor d, std::vector<net::UniqueFd> fds) {
        OnClientPeerJoined(gen, std::move(d), std::move(fds));
      },
      [this, gen](uint32_t rank, bool clean) { OnClientPeerGone(gen, rank, clean); });
}

uint64_t Pool::Impl::NextGeneration() {
  std::lock_guard lock(attach_mu);
  return ++generation;
}

// A peer the coordinator announces. After a failover the new coordinator announces the peers
// we already have: the same peer (rank and name) keeps its attachment, so copies to it never
// stop; another peer on that rank replaces the old one.
void Pool::Impl::OnClientPeerJoined(uint64_t gen, meta::SegmentDescriptor desc, std::vector<net::UniqueFd> fds) {
  std::lock_guard lock(attach_mu);
  if (gen != generation) return;
  const gva::Location host{Medium::kHost, desc.rank, 0};
  if (table->IsUp(host)) {
    const std::string attached = table->PeerName(host);
    if (attached == desc.peer_name) {
      WEFT_LOG_INFO("rank {} ({}) is in the new coordinator's pool too: its attachment is kept", desc.rank,
                    desc.peer_name);
      return;
    }
    WEFT_LOG_WARN("rank {} is now '{}', no longer '{}': detaching the old peer", desc.rank, desc.peer_name,
                  attached);
    OnPeerGone(desc.rank, /*clean=*/false);
  }
  AttachPeer(std::move(desc), std::move(fds));
}

void Pool::Impl::OnClientPeerGone(uint64_t gen, uint32_t rank, bool clean) {
  std::lock_guard lock(attach_mu);
  if (gen == generation) OnPeerGone(rank, clean);
}

// Our slices and the ways to them that we can offer: descriptors only through a unix-socket
// coordinator (no descriptor crosses tcp), our network path's blobs when we run one.
OwnSlices Pool::Impl::OwnSlicesToAdvertise(bool coordinator_on_tcp, int device_fd) const {
  OwnSlices own;
  if (!coordinator_on_tcp) {
    own.host_fd = own_segment->fd();
    own.device_fd = device_fd;
  }
  own.device_size = own_device.size;
  own.device_gpu = own_device.gpu;
  if (!network.empty()) own.paths[network] = own_path;
  return own;
}

// Joins the coordinator at `address` (the configured one, or the elected master's), hosting it
// first (kHost) or when none answers (kAuto); sets client, rank and coordinator_address.
Status Pool::Impl::JoinCoordinator(std::string address, JoinMode mode, bool coordinator_on_tcp, int device_fd) {
  if (mode == JoinMode::kHost) {
    WEFT_ASSIGN_OR_RETURN(address, HostCoordinator());
  }
  auto joined = JoinAt(address, coordinator_on_tcp, device_fd, 0);
  if (!joined.ok() && mode == JoinMode::kAuto && joined.status().code() == Code::kUnavailable) {
    auto hosted = HostCoordinator();
    // Another peer may have won the race to host; joining it is as good.
    if (hosted.ok()) address = *hosted;
    else if (hosted.status().code() != Code::kAlreadyExists) return hosted.status();
    joined = JoinAt(address, coordinator_on_tcp, device_fd, 0);
  }
  if (!joined.ok()) return joined.status().Annotate("joining pool '" + config.pool_name + "' at " + address);
  rank = (*joined)->rank();
  InstallClient(std::move(*joined), address);
  return OkStatus();
}

// Our own slice: the memfd mapping, or a second mapping of it at the GVA in unified-VA mode;
// attached, then registered with the pool allocator.
Status Pool::Impl::AttachOwnHostSlice() {
  uint8_t* own = own_segment->data();
  std::function<void()> release = [] {};
  if (window) {
    int fd = dup(own_segment->fd());
    auto fixed = mem::HostSegment::Import(fd, config.rank_size, FixedAddressFor(rank));
    if (!fixed.ok()) return fixed.status().Annotate("mapping our slice at its GVA");
    own = (*fixed)->data();
    std::shared_ptr<mem::HostSegment> held = std::move(*fixed);
    release = [held]() mutable { held.reset(); };
  }
  return table->Attach({Medium::kHost, rank, 0}, own, config.rank_size, /*local=*/true, "self",
                       RegisterWithGpu(own, config.rank_size, std::move(release)));
}

// Our device slice, if we have one, attached.
Status Pool::Impl::AttachOwnDeviceSlice() {
  if (own_device.size == 0) return OkStatus();
  // The table holds the slice's mapping from here; own_device keeps it for a later export.
  return table->Attach({Medium::kDevice, rank, 0}, own_device.data, own_device.size, /*local=*/true, "self",
                       [hold = own_device.hold]() mutable { hold.reset(); }, own_device.gpu);
}

// Our slices registered with the pool allocator of the coordinator `to`: after the join, and
// again after each failover (a new leader that restored our slice takes the same-size re-add as
// a no-op).
Status Pool::Impl::AddOwnSlices(meta::CoordinatorClient& to, Deadline deadline) {
  auto added = to.Call(EncodeAddSlice(rank, Medium::kHost, config.rank_size), deadline);
  if (!added.ok()) return added.status().Annotate("registering our slice with the pool allocator");
  if (own_device.size == 0) return OkStatus();
  added = to.Call(EncodeAddSlice(rank, Medium::kDevice, own_device.size), deadline);
  if (!added.ok()) return added.status().Annotate("registering our device slice with the pool allocator");
  return OkStatus();
}

Result<std::unique_ptr<Pool>> Pool::Join(const Config& given, JoinMode mode) {
  return PoolAccess::Join(given, mode, engine::BuiltinTransports());
}

Result<std::unique_ptr<Pool>> PoolAccess::Join(const Config& given, JoinMode mode,
                                               const transport::Registry& registry) {
  WEFT_RETURN_IF_ERROR(CheckConfig(given));  // a Config built in C++ gets the ranges LoadConfig checks
  auto impl = std::make_unique<Pool::Impl>();
  impl->config = given;
  Config& config = impl->config;
  if (config.log_level != "warn") log::SetLevel(config.log_level);
  WEFT_ASSIGN_OR_RETURN(CoordinatorDial dial, CoordinatorToDial(config, mode));
  WEFT_ASSIGN_OR_RETURN(net::ControlAddress control, net::ParseControlAddress(dial.address));
  if (control.tcp) WEFT_RETURN_IF_ERROR(FitConfigToTcpCoordinator(config, control));
  WEFT_ASSIGN_OR_RETURN(impl->network, CheckPoolTransport(config, registry));
  WEFT_ASSIGN_OR_RETURN(impl->layout, gva::Layout::Make(config.gva_base, config.rank_size, config.max_ranks));

  impl->ReserveUnifiedVa();
  WEFT_ASSIGN_OR_RETURN(impl->own_segment,
                        mem::HostSegment::Create("weft-" + config.pool_name, config.rank_size, config.numa_node));
  WEFT_RETURN_IF_ERROR(impl->CreateEngine(registry));
  WEFT_RETURN_IF_ERROR(impl->CreateOwnDevice());
  WEFT_RETURN_IF_ERROR(impl->ExportOwnSlices().Annotate("exporting our slices over " + impl->network));

  // Our device slice's fd for same-node peers (closed once the Join frame is sent).
  net::UniqueFd device_fd;
  if (impl->own_device.size > 0 && !control.tcp) {
    WEFT_ASSIGN_OR_RETURN(int fd, ExportDeviceSlice(impl->own_device));
    device_fd = net::UniqueFd(fd);
  }
  WEFT_RETURN_IF_ERROR(impl->JoinCoordinator(std::move(dial.address), dial.mode, control.tcp, device_fd.get()));

  WEFT_RETURN_IF_ERROR(impl->AttachOwnHostSlice());
  WEFT_RETURN_IF_ERROR(impl->AttachOwnDeviceSlice());
  WEFT_ASSIGN_OR_RETURN(auto joined, impl->Client());
  WEFT_RETURN_IF_ERROR(impl->AddOwnSlices(*joined, impl->DefaultDeadline()));
  joined.reset();
  WEFT_RETURN_IF_ERROR(impl->ServeMetrics());
  if (meta::IsElectedCoordinator(config.CoordinatorPath())) impl->StartFollowing();
  return std::unique_ptr<Pool>(new Pool(std::move(impl)));  // PoolAccess is a friend
}

// Starts the metrics server when config.metrics_address asks for one. The server's thread reads
// the registry and the coordinator; Leave stops it before either goes away.
Status Pool::Impl::ServeMetrics() {
  if (config.metrics_address.empty()) return OkStatus();
  meta::MetricsServerOptions o;
  o.bind = config.metrics_address;
  WEFT_ASSIGN_OR_RETURN(metrics_server, meta::MetricsServer::Start(o, [this] { return ScrapeText(); }));
  metrics_address = metrics_server->address();
  WEFT_LOG_INFO("pool '{}' rank {}: metrics on http://{}/metrics", config.pool_name, rank, metrics_address);
  return OkStatus();
}

Status Pool::Leave() {
  std::lock_guard lock(impl_->leave_mu);
  if (impl_->left) return OkStatus();
  impl_->left = true;  // new calls return CANCELLED from here on
  if (impl_->metrics_server) impl_->metrics_server->Stop();
  impl_->StopFollowing();  // no rejoin races the teardown below
  // Leaving the coordinator first wakes calls blocked in it (barrier, allgather, waits) with an
  // error, so the exclusive lock below does not wait for their deadlines.
  Status s = OkStatus();
  if (auto current = impl_->Client(); current.ok()) s = (*current)->Leave();
  std::unique_lock gate(impl_->api_mu);  // calls in flight on other threads finish first
  impl_->DropClient(Status(Code::kCancelled, "this peer has left the pool"));
  impl_->coordinator.reset();
  // Finishes queued copies before their memory goes away, and stops serving our slices (peers
  // then get PEER_DOWN from us).
  impl_->engine.reset();
  impl_->table.reset();
  impl_->own_device = {};
  impl_->own_segment.reset();
  impl_->window.reset();
  return s;
}

uint32_t Pool::rank() const { return impl_->rank; }
uint64_t Pool::local_size() const { return impl_->config.rank_size; }
bool Pool::unified_va() const { return impl_->window != nullptr; }
bool Pool::hosts_coordinator() const { return impl_->coordinator != nullptr; }
const std::string& Pool::coordinator_address() const {
  std::lock_guard lock(impl_->client_mu);
  return impl_->joined_addresses.back();
}
const std::string& Pool::metrics_address() const { return impl_->metrics_address; }
const Config& Pool::config() const { return impl_->config; }
std::string Pool::MetricsText() { return impl_->metrics.PrometheusText(); }

const gva::Layout& PoolAccess::Layout(const Pool& pool) { return pool.impl_->layout; }
MetricsRegistry& PoolAccess::Metrics(Pool& pool) { return pool.impl_->metrics; }
engine::Engine& PoolAccess::Engine(Pool& pool) { return *pool.impl_->engine; }
Deadline PoolAccess::DefaultDeadline(const Pool& pool) { return pool.impl_->DefaultDeadline(); }

Result<gva::SegmentTable::Pin> PoolAccess::PinRange(const Pool& pool, uint64_t gva, uint64_t len) {
  return pool.impl_->table->Resolve(gva, len);
}

// Holds the API gate shared for the rest of the calling function. `left` is read before the
// lock too, so that once Leave started no new call queues for the gate (a steady stream of
// readers could otherwise keep Leave waiting).
#define WEFT_REQUIRE_JOINED()                                                            \
  if (impl_->left) return Error(Code::kCancelled, "this peer has left the pool");        \
  std::shared_lock api_gate_(impl_->api_mu);                                             \
  if (impl_->left) return Error(Code::kCancelled, "this peer has left the pool")

Result<std::vector<uint8_t>> PoolAccess::Call(Pool& pool, std::span<const uint8_t> request) {
  Pool::Impl* impl_ = pool.impl_.get();  // the name WEFT_REQUIRE_JOINED reads
  WEFT_REQUIRE_JOINED();
  WEFT_ASSIGN_OR_RETURN(auto client, impl_->Client());
  return client->Call(request, impl_->DefaultDeadline());
}

Result<uint64_t> Pool::SliceAddress(uint32_t rank, Medium medium) const {
  if (rank >= impl_->layout.max_ranks())
    return Error(Code::kOutOfRange, "rank {} is past max_ranks {}", rank, impl_->layout.max_ranks());
  return impl_->layout.SliceBase(medium, rank);
}

uint64_t Pool::device_size() const { return impl_->own_device.size; }

bool Pool::InWindow(uint64_t addr) const { return addr >= impl_->layout.base() && addr < impl_->layout.end(); }

bool Pool::HasSlice(uint32_t rank, Medium medium) const {
  if (impl_->left) return false;
  std::shared_lock gate(impl_->api_mu);
  return !impl_->left && rank < impl_->layout.max_ranks() && impl_->table->IsUp({medium, rank, 0});
}

Result<void*> Pool::LocalAddress(uint64_t gva, uint64_t len) const {
  WEFT_REQUIRE_JOINED();
  WEFT_ASSIGN_OR_RETURN(auto pin, impl_->table->Resolve(gva, len));
  if (!pin.ptr())
    return Error(Code::kNotSupported, "GVA {:#x} is in a slice this process does not map (it reaches it over {}): "
                 "copy to and from it instead of loading and storing", gva, impl_->network);
  return static_cast<void*>(pin.ptr());
}

Result<uint32_t> Pool::RankOf(uint64_t gva) const {
  auto loc = impl_->layout.Decode(gva);
  if (!loc) return Error(Code::kInvalidAddress, "{:#x} is not a GVA of pool '{}'", gva, impl_->config.pool_name);
  return loc->rank;
}

std::vector<uint32_t> Pool::LiveRanks() const {
  std::vector<uint32_t> out;
  if (impl_->left) return out;
  std::shared_lock gate(impl_->api_mu);
  if (impl_->left) return out;
  for (uint32_t r = 0; r < impl_->layout.max_ranks(); ++r)
    if (impl_->table->IsUp({Medium::kHost, r, 0})) out.push_back(r);
  return out;
}

Result<uint64_t> Pool::Alloc(uint64_t size, Placement placement) {
  WEFT_REQUIRE_JOINED();
  if (size == 0) return Error(Code::kInvalidArgument, "cannot allocate 0 bytes");
  WEFT_ASSIGN_OR_RETURN(auto client, impl_->Client());
  WEFT_ASSIGN_OR_RETURN(auto reply, client->Call(EncodeAlloc(size, placement), impl_->DefaultDeadline()));
  return DecodeAllocReply(reply);
}

Status Pool::Free(uint64_t gva) {
  WEFT_REQUIRE_JOINED();
  WEFT_ASSIGN_OR_RETURN(auto client, impl_->Client());
  auto reply = client->Call(EncodeFree(gva), impl_->DefaultDeadline());
  return reply.ok() ? OkStatus() : reply.status();
}

Status Pool::Copy(uint64_t dst, uint64_t src, uint64_t len, Direction dir) {
  return Copy(dst, src, len, dir, impl_->DefaultDeadline());
}

Status Pool::Copy(uint64_t dst, uint64_t src, uint64_t len, Direction dir, Deadline deadline) {
  WEFT_REQUIRE_JOINED();
  return impl_->engine->Copy(dst, src, len, dir, deadline);
}

CopyHandle Pool::CopyAsync(uint64_t dst, uint64_t src, uint64_t len, Direction dir) {
  CopyRequest r{dst, src, len};
  return CopyBatchAsync({&r, 1}, dir);
}

std::vector<Status> Pool::CopyBatch(std::span<const CopyRequest> requests, Direction dir) {
  auto cancelled = [&] {
    return std::vector<Status>(requests.size(), Error(Code::kCancelled, "this peer has left the pool"));
  };
  if (impl_->left) return cancelled();
  std::shared_lock gate(impl_->api_mu);
  if (impl_->left) return cancelled();
  return impl_->engine->CopyBatch(requests, dir, impl_->DefaultDeadline());
}

CopyHandle Pool::CopyBatchAsync(std::span<const CopyRequest> requests, Direction dir) {
  auto cancelled = [&] {
    return CopyHandle::Failed(std::max<size_t>(requests.size(), 1),
                              Error(Code::kCancelled, "this peer has left the pool"));
  };
  if (impl_->left) return cancelled();
  std::shared_lock gate(impl_->api_mu);
  if (impl_->left) return cancelled();
  return impl_->engine->CopyBatchAsync(requests, dir, impl_->DefaultDeadline());
}

Status Pool::CopyPages(uint64_t dst_base, uint64_t src_base, uint64_t page_bytes, std::span<const uint32_t> dst_pages,
                       std::span<const uint32_t> src_pages, Direction dir, void* stream) {
  WEFT_REQUIRE_JOINED();
  return impl_->engine->CopyPages(dst_base, src_base, page_bytes, dst_pages, src_pages, dir, stream);
}

Status Pool::CopyPagesDeviceIndexed(uint64_t dst_base, uint64_t src_base, uint64_t page_bytes,
                                    const uint32_t* device_pairs, size_t count, uint32_t max_dst_index,
                                    uint32_t max_src_index, Direction dir) {
  WEFT_REQUIRE_JOINED();
  return impl_->engine->CopyPagesDeviceIndexed(dst_base, src_base, page_bytes, device_pairs, count, max_dst_index,
                                               max_src_index, dir);
}

Status Pool::Wait(const CopyHandle& handle, Deadline deadline) { return handle.Wait(deadline); }

Result<RouteInfo> Pool::Route(uint64_t dst, uint64_t src, uint64_t len, Direction dir) const {
  WEFT_REQUIRE_JOINED();
  return impl_->engine->Route(dst, src, len, dir);
}

Result<std::vector<uint32_t>> Pool::WaitForPeers(uint32_t count, Deadline deadline) {
  WEFT_REQUIRE_JOINED();
  WEFT_ASSIGN_OR_RETURN(auto client, impl_->Client());
  return client->WaitForPeers(count, deadline);
}

Status Pool::Barrier(Deadline deadline) {
  WEFT_REQUIRE_JOINED();
  WEFT_ASSIGN_OR_RETURN(auto client, impl_->Client());
  return client->Barrier(deadline);
}

Result<std::vector<std::pair<uint32_t, std::vector<uint8_t>>>> Pool::Allgather(std::span<const uint8_t> mine,
                                                                              Deadline deadline) {
  WEFT_REQUIRE_JOINED();
  WEFT_ASSIGN_OR_RETURN(auto client, impl_->Client());
  return client->Allgather(mine, deadline);
}

}  // namespace weft::bm
