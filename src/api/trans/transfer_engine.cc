#include <weft/transfer_engine.h>

#include "api/trans/transfer_engine_internal.h"

#include <arpa/inet.h>

#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "api/trans/device_query.h"
#include "api/trans/segment_descriptor.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/node_identity.h"
#if WEFT_HAVE_UCX
#include "transport/ucx/ucx_transport.h"
#endif
#include "engine/builtin_transports.h"
#include "engine/engine.h"
#include "mem/host_segment.h"
#include "base/worker_pool.h"
#include "meta/directory.h"
#include "meta/http_call.h"
#include "meta/p2p_directory.h"
#include "transport/tcp/tcp_transport.h"
#include "wire/data.h"
#if WEFT_HAVE_CUDA
#include "mem/cuda/host_device_copy.h"
#endif

namespace weft::trans {

namespace {

using engine::PeerId;
using engine::RemoteRequest;

bool IsP2P(const std::string& metadata) {
  return metadata == "P2PHANDSHAKE" || metadata == "p2p" || metadata == "p2p://";
}

// Mooncake's metadata strings: a bare "host:port" is etcd (its default scheme); redis has no
// backend here.
Result<std::string> DirectoryUrl(const std::string& metadata) {
  if (metadata.empty())
    return Error(Code::kInvalidArgument, "no metadata server given: use P2PHANDSHAKE, etcd://host:port, "
                                         "http://host:port/metadata or embedded://host:port");
  if (metadata.rfind("redis://", 0) == 0)
    return Error(Code::kNotSupported, "metadata server '{}': redis is not supported; use etcd://, http:// "
                                      "(Mooncake's metadata protocol, e.g. `weft meta`) or P2PHANDSHAKE",
                 metadata);
  if (metadata.find("://") != std::string::npos || metadata == "local") return metadata;
  return "etcd://" + metadata;
}

// "host" or "host:port" -> host (brackets removed).
std::string HostPart(const std::string& name) {
  auto hp = meta::ParseHostPort(name);
  if (hp.ok()) return hp->first;
  return name;
}

TransferState StateOf(const Status& s) {
  if (s.ok()) return TransferState::kCompleted;
  return s.code() == Code::kTimeout ? TransferState::kTimeout : TransferState::kFailed;
}

struct LocalBuffer {
  uint64_t length = 0;
  std::string location;
  bool remote_accessible = true;
  bool device = false;
  uint64_t region_id = 0;  // the engine's export
  BlobMap blobs;           // what peers reach it with, per transport
};

// A buffer from AllocateManagedBuffer: a memfd mapping peers on this node can map too.
struct ManagedBuffer {
  int fd = -1;
  uint64_t length = 0;
};

struct RemoteSegment {
  std::string name;
  std::shared_ptr<const SegmentDescriptor> descriptor;
  PeerId peer = 0;  // the engine's view of it
};

engine::PeerAdvert AdvertOf(const SegmentDescriptor& d) {
  engine::PeerAdvert a;
  a.name = d.name;
  a.endpoints = d.endpoints;
  for (const auto& b : d.buffers)
    a.regions.push_back({b.addr, b.length, b.location.rfind("cuda", 0) == 0, b.blobs});
  return a;
}

struct Batch {
  std::vector<TransferRequest> requests;
  std::optional<Notification> notify;
  Deadline deadline = Deadline::Never();
  Clock::time_point started = Clock::now();
  std::mutex mu;
  std::condition_variable cv;
  std::vector<TransferState> states;
  std::vector<Status> results;
  Status notification;
  size_t groups_left = 0;
  bool done = false;

  BatchStatus Snapshot() {
    BatchStatus s;
    s.states = states;
    s.results = results;
    s.done = done;
    s.notification = notification;
    return s;
  }
};

}  // namespace

struct TransferEngine::Impl {
  TransferEngineOptions options;
  const transport::Registry* registry = nullptr;  // null: this build's transports
  std::string name;
  std::string host;  // advertised
  std::string protocol = "tcp";
  bool p2p = false;
  uint16_t rpc_port = 0;

  TransferEngineOptions::DeviceMemory device;  // empty copy: no device memory here

  MetricsRegistry metrics;
  Counter* batches_total = nullptr;
  Counter* requests_failed = nullptr;
  Counter* bytes_written = nullptr;
  Counter* bytes_read = nullptr;
  Counter* notifications_received = nullptr;
  Counter* notifications_refused = nullptr;
  Gauge* notifications_queued = nullptr;  // received and not yet taken
  Gauge* batches_running = nullptr;
  Histogram* batch_latency_ns = nullptr;
  // A synchronous Transfer from entry to return, and its checks before any copy starts; with the
  // engine's weft_remote_batch_*_ns they show where a call's time goes (scripts/pd-check.py).
  Histogram* call_ns = nullptr;
  Histogram* validate_ns = nullptr;

  std::unique_ptr<meta::Directory> directory;
  // Orders descriptor writes and guards `lease` and `published`. Held across the directory call,
  // so never together with mu: registrations and batches do not wait for the directory.
  std::mutex publish_mu;
  meta::LeaseId lease = 0;
  std::string published;  // the descriptor as last written: what the directory should hold
  std::unique_ptr<engine::Engine> engine;  // every data path; its tcp transport serves peers
  std::unique_ptr<WorkerPool> workers;
  MetricsRegistry::ScrapeHook workers_hook;  // after workers: it goes first

  mutable std::mutex mu;  // buffers, segments, batches
  std::map<uint64_t, LocalBuffer> buffers;  // by address
  std::map<uint64_t, ManagedBuffer> managed;  // by address
  std::map<SegmentHandle, RemoteSegment> segments;
  std::map<std::string, SegmentHandle> segment_by_name;
  SegmentHandle next_handle = 1;
  std::map<BatchId, std::shared_ptr<Batch>> batches;
  BatchId next_batch = 1;
  size_t running = 0;  // batches not done
  std::condition_variable idle;
  bool closing = false;

  std::mutex notify_mu;
  std::deque<Notification> received;

  // Descriptor keep-alive.
  std::thread keeper;
  std::mutex keeper_mu;
  std::condition_variable keeper_cv;
  bool keeper_stop = false;

  // On Create's failure paths the data server is already serving: stop it (with the engine)
  // before the members its on_notify callback uses (notify_mu, received) are destroyed.
  ~Impl() { engine.reset(); }

  std::string DescriptorKey(const std::string& segment) const {
    return options.metadata_prefix + "ram/" + segment;
  }
  // The key under which a peer's descriptor is fetched (p2p keys name their owner).
  std::string RemoteKey(const std::string& segment) const {
    return p2p ? segment + "/" + DescriptorKey(segment) : DescriptorKey(segment);
  }
  Deadline MetaDeadline() const { return Deadline::After(options.metadata_timeout); }

  SegmentDescriptor LocalDescriptor() const {  // mu held
    SegmentDescriptor d;
    d.name = name;
    d.endpoints = engine->EndpointBlobs();
    for (const auto& [addr, b] : buffers) {
      if (!b.remote_accessible) continue;
      d.buffers.push_back({addr, b.length, b.location, b.blobs});
    }
    return d;
  }

  // Writes the descriptor as the buffers are now; the last write always holds the latest state,
  // because the snapshot is taken under publish_mu.
  Status Publish() {
    std::lock_guard p(publish_mu);
    return PublishLocked();
  }
  Status PublishLocked() {  // publish_mu held, mu not
    std::string text;
    {
      std::lock_guard g(mu);
      text = EncodeDescriptor(LocalDescriptor());
    }
    Status s = directory->Put(DescriptorKey(name), text, lease, MetaDeadline());
    if (!s.ok()) return s.Annotate(fmt::format("publishing the descriptor of '{}' in {}", name, directory->Describe()));
    published = std::move(text);
    return OkStatus();
  }

  // The first publish. On the embedded server a record held under a live lease of another
  // engine is refused (PERMISSION_DENIED): this name's previous process may have died with its
  // lease still running, so wait for that lease to run out (at most a lease's length) before
  // concluding that another live engine has this name.
  Status PublishFirst() {
    Status s = Publish();
    const auto patience = std::max(options.descriptor_lease, std::chrono::milliseconds(1000)) + options.metadata_timeout;
    const auto until = Clock::now() + patience;
    if (s.code() == Code::kPermissionDenied) {
      WEFT_LOG_INFO("transfer engine '{}': the directory holds this name under another lease (a previous process "
                    "of it?); waiting up to {} ms for that lease to expire",
                    name, patience.count());
    }
    while (s.code() == Code::kPermissionDenied && Clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (lease != 0) {  // our own lease must outlive the wait (the keeper starts after it)
        Status kept = directory->KeepAlive(lease, MetaDeadline());
        if (kept.code() == Code::kNotFound) {
          auto fresh = directory->Grant(options.descriptor_lease, MetaDeadline());
          if (!fresh.ok()) return fresh.status().Annotate("transfer engine: a lease for the descriptor");
          std::lock_guard p(publish_mu);
          lease = *fresh;
        }
      }
      s = Publish();
    }
    if (s.code() == Code::kPermissionDenied) {
      return s.Annotate(fmt::format("another live transfer engine holds the name '{}' in {}", name,
                                    directory->Describe()));
    }
    return s;
  }

  std::chrono::milliseconds KeeperPeriod() const {
    if (options.descriptor_lease.count() <= 0) return std::chrono::milliseconds(3000);
    return std::max<std::chrono::milliseconds>(options.descriptor_lease / 3, std::chrono::milliseconds(100));
  }

  // Renews the lease; when it is gone (e.g. the directory restarted) takes a new one and
  // publishes again.
  Status RenewLease() {
    Status s = directory->KeepAlive(lease, MetaDeadline());
    if (s.code() != Code::kNotFound) return s;
    auto fresh = directory->Grant(options.descriptor_lease, MetaDeadline());
    if (!fresh.ok()) return fresh.status();
    std::lock_guard p(publish_mu);
    lease = *fresh;
    s = PublishLocked();
    if (s.ok()) WEFT_LOG_INFO("transfer engine '{}': descriptor lease renewed after it expired", name);
    return s;
  }

  // Reads the record back and writes it again when it is not ours: someone deleted or replaced
  // it (an etcd client, a process sharing the store, a holder of the secret on a key under no
  // lease). Peers that open this segment would otherwise find no descriptor, or a stranger's.
  Status ReassertDescriptor() {
    std::lock_guard p(publish_mu);  // no publish of ours between the read and the compare
    auto stored = directory->Get(DescriptorKey(name), MetaDeadline());
    if (stored.ok() && *stored == published) return OkStatus();
    if (!stored.ok() && stored.status().code() != Code::kNotFound) return stored.status();
    WEFT_LOG_WARN("transfer engine '{}': its descriptor in {} was {} by someone else; publishing it again", name,
                  directory->Describe(), stored.ok() ? "replaced" : "deleted");
    return PublishLocked();
  }

  void KeepDescriptorAlive() {
    const auto period = KeeperPeriod();
    std::unique_lock lk(keeper_mu);
    while (!keeper_cv.wait_for(lk, period, [&] { return keeper_stop; })) {
      lk.unlock();
      if (Status s = lease != 0 ? RenewLease() : OkStatus(); !s.ok()) {
        WEFT_LOG_WARN("transfer engine '{}': keeping the descriptor alive: {}", name, s.ToString());
      } else if (s = ReassertDescriptor(); !s.ok()) {
        WEFT_LOG_WARN("transfer engine '{}': checking its descriptor: {}", name, s.ToString());
      }
      lk.lock();
    }
  }

  Result<std::shared_ptr<const SegmentDescriptor>> Fetch(const std::string& segment) {
    if (p2p) {
      auto* p2pdir = static_cast<meta::P2PDirectory*>(directory.get());
      p2pdir->Forget(RemoteKey(segment));
    }
    auto text = directory->Get(RemoteKey(segment), MetaDeadline());
    if (!text.ok()) {
      if (text.status().code() == Code::kNotFound)
        return Error(Code::kNotFound, "no transfer engine named '{}' in {} (has it started and registered memory?)",
                     segment, directory->Describe());
      return text.status().Annotate(fmt::format("fetching the descriptor of '{}'", segment));
    }
    auto d = DecodeDescriptor(*text);
    if (!d.ok()) return d.status().Annotate(fmt::format("descriptor of '{}'", segment));
    return std::make_shared<const SegmentDescriptor>(std::move(*d));
  }

  Result<std::shared_ptr<const SegmentDescriptor>> Descriptor(SegmentHandle h) const {
    std::lock_guard g(mu);
    auto it = segments.find(h);
    if (it == segments.end()) return Error(Code::kNotFound, "segment handle {} is not open", h);
    return it->second.descriptor;
  }

  // Fetches the descriptor of an open segment again; returns the new one.
  Result<std::shared_ptr<const SegmentDescriptor>> Refresh(SegmentHandle h) {
    std::string segment;
    {
      std::lock_guard g(mu);
      auto it = segments.find(h);
      if (it == segments.end()) return Error(Code::kNotFound, "segment handle {} is not open", h);
      segment = it->second.name;
    }
    WEFT_ASSIGN_OR_RETURN(auto d, Fetch(segment));
    PeerId peer = 0;
    {
      std::lock_guard g(mu);
      auto it = segments.find(h);
      if (it == segments.end()) return Error(Code::kNotFound, "segment handle {} is not open", h);
      it->second.descriptor = d;
      peer = it->second.peer;
    }
    WEFT_RETURN_IF_ERROR(engine->UpdatePeer(peer, AdvertOf(*d)));
    return d;
  }

  // The managed buffer holding [a, a+len) (mu held), if any.
  const std::pair<const uint64_t, ManagedBuffer>* ManagedAround(uint64_t a, uint64_t len) const {
    auto it = managed.upper_bound(a);
    if (it == managed.begin()) return nullptr;
    --it;
    uint64_t off = a - it->first;
    return off < it->second.length && len <= it->second.length - off ? &*it : nullptr;
  }

  // Whether p lies in a device buffer this engine registered.
  bool LocalIsDevice(const void* p) const {
    std::lock_guard g(mu);
    auto a = reinterpret_cast<uint64_t>(p);
    auto it = buffers.upper_bound(a);
    if (it == buffers.begin()) return false;
    --it;
    return it->second.device && a - it->first < it->second.length;
  }

  // Whether [p, p+len) lies inside one registered buffer (mu held).
  bool LocalRegistered(const void* p, uint64_t len) const {
    auto a = reinterpret_cast<uint64_t>(p);
    auto it = buffers.upper_bound(a);
    if (it == buffers.begin()) return false;
    --it;
    uint64_t off = a - it->first;
    return off < it->second.length && len <= it->second.length - off;
  }

  // Carries out the requests of one batch to one peer (a worker thread).
  void RunGroup(const std::shared_ptr<Batch>& b, SegmentHandle target, const std::vector<size_t>& idx) {
    std::vector<Status> out(idx.size());
    auto d = Descriptor(target);
    if (!d.ok()) {
      for (auto& s : out) s = d.status();
    } else {
      out = TransferTo(*d, target, b->requests, idx, b->deadline);
    }
    Status note;
    bool all_ok = std::all_of(out.begin(), out.end(), [](const Status& s) { return s.ok(); });
    if (b->notify) {
      if (!all_ok) {
        note = Error(Code::kCancelled, "notification '{}' withheld: a request of the batch failed", b->notify->name);
      } else {
        auto dd = Descriptor(target);
        note = dd.ok() ? SendNotification(target, (*dd)->name, *b->notify, b->deadline) : dd.status();
      }
    }
    bool last = false;
    {
      std::lock_guard g(b->mu);
      for (size_t k = 0; k < idx.size(); ++k) {
        size_t i = idx[k];
        b->results[i] = out[k];
        b->states[i] = StateOf(out[k]);
        if (!out[k].ok()) {
          requests_failed->Add();
        } else if (b->requests[i].op == Opcode::kWrite) {
          bytes_written->Add(b->requests[i].length);
        } else {
          bytes_read->Add(b->requests[i].length);
        }
      }
      if (!note.ok() && b->notification.ok()) b->notification = note;
      if (--b->groups_left == 0) {
        b->done = true;
        batch_latency_ns->Observe(static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - b->started).count()));
        b->cv.notify_all();
        last = true;
      }
    }
    // mu only after b->mu is released: FreeBatch takes mu, then b->mu (lock order mu -> b->mu).
    if (last) {
      std::lock_guard g(mu);
      batches_running->Set(static_cast<int64_t>(--running));
      if (running == 0) idle.notify_all();
    }
  }

  PeerId PeerOf(SegmentHandle h) const {
    std::lock_guard g(mu);
    auto it = segments.find(h);
    return it == segments.end() ? 0 : it->second.peer;
  }

  RemoteRequest ToRemote(const TransferRequest& r, PeerId peer) const {
    return RemoteRequest{r.op == Opcode::kWrite ? transport::RemoteOpKind::kWrite : transport::RemoteOpKind::kRead,
                         static_cast<uint8_t*>(r.local), LocalIsDevice(r.local), peer, r.remote_addr, r.length};
  }

  // The requests of one batch to one peer, through the engine. A remote range outside every
  // buffer the peer advertised fetches its descriptor once more (it may have registered the
  // buffer after we looked); a peer that restarted under its name (every request refused as
  // gone) is looked up again and the requests retried once.
  std::vector<Status> TransferTo(std::shared_ptr<const SegmentDescriptor> d, SegmentHandle target,
                                 const std::vector<TransferRequest>& requests, const std::vector<size_t>& idx,
                                 Deadline deadline) {
    std::vector<Status> out(idx.size());
    auto run = [&](const std::vector<size_t>& which) {
      std::vector<RemoteRequest> reqs;
      const PeerId peer = PeerOf(target);
      for (size_t k : which) reqs.push_back(ToRemote(requests[idx[k]], peer));
      auto got = engine->TransferRemote(reqs, deadline);
      for (size_t j = 0; j < which.size(); ++j) out[which[j]] = std::move(got[j]);
    };
    std::vector<size_t> all(idx.size());
    for (size_t k = 0; k < idx.size(); ++k) all[k] = k;
    run(all);
    std::vector<size_t> missing;
    for (size_t k = 0; k < idx.size(); ++k)
      if (out[k].code() == Code::kInvalidAddress) missing.push_back(k);
    if (!missing.empty() && !deadline.expired() && Refresh(target).ok()) run(missing);
    bool all_gone = std::all_of(out.begin(), out.end(), [&](const Status& s) {
      Code c = s.code();
      return c == Code::kPeerDown || c == Code::kNotFound || c == Code::kPermissionDenied;
    });
    if (all_gone && !deadline.expired()) {
      auto fresh = Refresh(target);
      if (fresh.ok() && !(**fresh == *d)) {
        WEFT_LOG_INFO("transfer engine '{}': peer '{}' changed its descriptor; retrying {} request(s)", name,
                      (*fresh)->name, idx.size());
        run(all);
      }
    }
    return out;
  }

  Result<BatchId> Start(std::span<const TransferRequest> requests, std::optional<Notification> notify,
                        std::optional<Deadline> deadline, bool run_one_here);

  Status SendNotification(SegmentHandle target, const std::string& peer_name, const Notification& n,
                          Deadline deadline) {
    WEFT_ASSIGN_OR_RETURN(auto payload, wire::EncodeNotification(n.name, n.message));
    return engine->NotifyPeer(PeerOf(target), payload, deadline)
        .Annotate(fmt::format("notifying '{}'", peer_name));
  }

  Status CreateEngine(const transport::HostBufferAllocator& bounce_alloc);
  // protocol rdma: ucx must be there, or the fallback is taken (logged); sets `protocol`.
  Status SettleProtocol(const transport::TransportSet& set);
  Status StartDirectory();
};

TransferEngine::TransferEngine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

namespace {

bool IsRdma(const std::string& protocol) { return protocol == "rdma" || protocol == "ucx"; }

std::string ProtocolFallback(const TransferEngineOptions& options) {
  if (!options.protocol_fallback.empty()) return options.protocol_fallback;
  const char* env = std::getenv("WEFT_PROTOCOL_FALLBACK");
  return env ? env : "";
}

// The cross-node protocol: tcp, or rdma through the ucx transport; another is refused unless a
// fallback is named, so that asking for RDMA never silently gets TCP.
Status CheckProtocol(const TransferEngineOptions& options) {
  if (options.protocol == "tcp" || IsRdma(options.protocol)) return OkStatus();
  if (ProtocolFallback(options) != "tcp")
    return Error(Code::kNotSupported,
                 "protocol '{}' is not available (weft has tcp and rdma); pass one of them, or set "
                 "WEFT_PROTOCOL_FALLBACK=tcp to use tcp in its place",
                 options.protocol);
  WEFT_LOG_WARN("transfer engine: protocol '{}' is not available; using tcp instead (WEFT_PROTOCOL_FALLBACK=tcp)",
                options.protocol);
  return OkStatus();
}

// Mooncake's device_name ("mlx5_0,mlx5_1") as UCX_NET_DEVICES. UCX names an RDMA device with its
// port ("mlx5_0:1") and a network interface without ("eth0"), so a name without a port is given
// both ways; UCX uses the form that exists.
std::string NetDevices(const std::string& device_name) {
  std::string out, item;
  std::stringstream in(device_name);
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    out += (out.empty() ? "" : ",") + item;
    if (item.find(':') == std::string::npos) out += "," + item + ":1";
  }
  return out;
}

// The registry preference: protocol rdma adds ucx to what was asked for.
std::string TransportPreference(const TransferEngineOptions& options, const transport::Registry& registry) {
  if (!IsRdma(options.protocol)) return options.transports;
  std::string names = options.transports;
  if (names == "auto" || names.empty()) {
    names.clear();
    auto chosen = registry.Select("auto");
    for (const auto* e : chosen.ok() ? *chosen : std::vector<const transport::RegistryEntry*>{})
      names += (names.empty() ? "" : ",") + e->name;
  }
  if (("," + names + ",").find(",ucx,") == std::string::npos) names += ",ucx";
  return names;
}

}  // namespace

// The engine and its transports, from the registry: tcp serves this engine's buffers to peers
// (and carries notifications), the same-node transports find peers on this node.
Status TransferEngine::Impl::CreateEngine(const transport::HostBufferAllocator& bounce_alloc) {
  transport::tcp::TcpTransportOptions tcp;
  tcp.client.auth = options.auth;
  tcp.client.lanes = options.lanes;
  tcp.fixed_cost_ns = 25000;  // loopback or a LAN round trip
  tcp.device = transport::DeviceStagingOps{device.copy, bounce_alloc};
  tcp.staging.slice_bytes = options.staging_slice_bytes;
  tcp.staging.buffers = options.staging_buffers;
  tcp.staging.max_buffers = options.staging_max_buffers;
  tcp.advertise_host = host;
  tcp.metrics = &metrics;
  transport::tcp::TcpServerOptions so;
  so.device_copy = device.copy;
  so.staging_alloc = bounce_alloc;
  so.host = options.bind_host;
  so.auth = options.auth;
  so.threads = options.server_threads;
  so.on_notify = [this](std::string n, std::string msg) {
    std::lock_guard g(notify_mu);
    if (received.size() >= std::max<size_t>(1, options.max_queued_notifications)) {
      notifications_refused->Add();
      return Error(Code::kBusy,
                   "the receiver holds {} notifications it has not taken yet (max_queued_notifications): it must "
                   "take them (TakeNotifications, get_notifies) before more are accepted",
                   received.size());
    }
    notifications_received->Add();
    received.push_back(Notification{std::move(n), std::move(msg)});
    notifications_queued->Set(static_cast<int64_t>(received.size()));
    return OkStatus();
  };
  tcp.serve = so;

#if WEFT_HAVE_UCX
  transport::ucx::UcxOptions ucx;
  ucx.net_devices = NetDevices(options.device_name);
  ucx.device = tcp.device;  // used when the loaded UCX has no CUDA memory support
  ucx.staging = tcp.staging;
  ucx.named = IsRdma(options.protocol) || ("," + options.transports + ",").find(",ucx,") != std::string::npos;
#endif
  transport::TransportContext context;
  context.node_id = NodeIdentity();
  context.tcp = &tcp;
#if WEFT_HAVE_UCX
  context.ucx = &ucx;
#endif
  context.metrics = &metrics;
  const transport::Registry builtin = engine::BuiltinTransports();
  const transport::Registry& chosen = registry ? *registry : builtin;
  WEFT_ASSIGN_OR_RETURN(auto set, chosen.Create(TransportPreference(options, chosen), context));
  WEFT_RETURN_IF_ERROR(SettleProtocol(set));
  // tcp serves this engine's buffers and carries notifications: when it was asked for and cannot
  // start (port taken, bad secret policy), that is the engine's failure, as it always was.
  if (auto it = set.absent.find("tcp"); it != set.absent.end() && it->second.rfind("not ", 0) != 0)
    return Error(Code::kUnavailable, "transfer engine: the tcp data server: {}", it->second);
  if (set.transports.empty()) {
    std::string why;
    for (const auto& [t, reason] : set.absent) why += fmt::format("{}{}: {}", why.empty() ? "" : "; ", t, reason);
    return Error(Code::kUnavailable, "transfer engine: none of the transports '{}' can run here ({})",
                 options.transports, why);
  }
  engine::EngineOptions eo;
  eo.threads = static_cast<uint32_t>(options.worker_threads);
  eo.log_paths = std::getenv("WEFT_LOG_PATHS") && std::string(std::getenv("WEFT_LOG_PATHS")) == "1";
  engine = std::make_unique<engine::Engine>(eo, nullptr, metrics, std::move(set));
  return OkStatus();
}

Status TransferEngine::Impl::SettleProtocol(const transport::TransportSet& set) {
  protocol = "tcp";
  if (!IsRdma(options.protocol)) return OkStatus();
  auto absent = set.absent.find("ucx");
  if (absent == set.absent.end()) {
    protocol = "rdma";
    return OkStatus();
  }
  if (ProtocolFallback(options) != "tcp")
    return Error(Code::kNotSupported, "protocol '{}' runs on the ucx transport, which cannot run here: {}; set "
                 "WEFT_PROTOCOL_FALLBACK=tcp to use tcp in its place", options.protocol, absent->second);
  WEFT_LOG_WARN("transfer engine: protocol '{}' needs ucx, which cannot run here ({}); using tcp instead "
                "(WEFT_PROTOCOL_FALLBACK=tcp)", options.protocol, absent->second);
  return OkStatus();
}

namespace {

// Where the p2p descriptor endpoint listens. Peers reach it at the advertised host, so that is all
// it listens on unless the user asks for more: it is plain HTTP without the cluster secret. A
// host *name* is the exception: on many distributions the machine's own name resolves to
// 127.0.1.1 locally while peers resolve it to the real address, so binding it would lock peers
// out; every interface then, as before, with a warning that says how to narrow it.
std::string RpcBindHost(const std::string& asked, const std::string& advertised) {
  if (!asked.empty()) return asked;
  if (advertised == "localhost") return advertised;  // loopback by name: nothing to widen
  in6_addr scratch;
  if (::inet_pton(AF_INET, advertised.c_str(), &scratch) == 1 || ::inet_pton(AF_INET6, advertised.c_str(), &scratch) == 1) {
    return advertised;
  }
  WEFT_LOG_WARN("transfer engine: the advertised host '{}' is a name, not an address, so the p2p descriptor "
                "endpoint listens on every interface; set advertise_host to this machine's address, or "
                "rpc_bind_host, to narrow it", advertised);
  return "0.0.0.0";
}

}  // namespace

// The directory and the engine's name; publishes the (empty) descriptor.
Status TransferEngine::Impl::StartDirectory() {
  meta::DirectoryOptions dopts;
  dopts.timeout = options.metadata_timeout;
  dopts.p2p_metrics = &metrics;
  dopts.cluster_secret = options.auth.cluster_secret;  // proves our writes to a directory that wants it
  if (p2p) {
    uint16_t want = options.rpc_port;
    if (auto hp = meta::ParseHostPort(options.local_name); hp.ok() && want == 0) want = hp->second;
    const std::string rpc_host = RpcBindHost(options.rpc_bind_host, host);
    dopts.p2p_bind = meta::HttpTarget{rpc_host, want}.Address();
    auto opened = meta::P2PDirectory::Open(dopts.p2p_bind, dopts);
    if (!opened.ok()) {
      return opened.status().Annotate(
          "the p2p descriptor endpoint listens on the advertised host; set rpc_bind_host (\"0.0.0.0\" for every "
          "interface) when that is not an address of this machine");
    }
    auto p2pdir = std::move(opened).value();
    auto hp = meta::ParseHostPort(p2pdir->PeerName());
    if (!hp.ok()) return hp.status().Annotate("p2p endpoint");
    rpc_port = hp->second;
    name = fmt::format("{}:{}", host.find(':') != std::string::npos ? "[" + host + "]" : host, rpc_port);
    directory = std::move(p2pdir);
  } else {
    WEFT_ASSIGN_OR_RETURN(std::string url, DirectoryUrl(options.metadata));
    WEFT_ASSIGN_OR_RETURN(directory, meta::OpenDirectory(url, dopts));
    name = options.local_name;
    rpc_port = engine->ListenPort();
    if (options.descriptor_lease.count() > 0) {
      auto granted = directory->Grant(options.descriptor_lease, MetaDeadline());
      if (granted.ok()) {
        lease = *granted;
      } else if (granted.status().code() != Code::kNotSupported) {
        return granted.status().Annotate("transfer engine: a lease for the descriptor");
      }
    }
  }
  return PublishFirst();
}

Result<std::unique_ptr<TransferEngine>> TransferEngine::Create(const TransferEngineOptions& options) {
  return TransferEngineAccess::Create(options, nullptr);
}

Result<std::unique_ptr<TransferEngine>> TransferEngineAccess::Create(const TransferEngineOptions& options,
                                                                     const transport::Registry* registry) {
  using Impl = TransferEngine::Impl;
  auto impl = std::make_unique<Impl>();
  Impl& m = *impl;
  m.options = options;
  m.registry = registry;
  if (options.local_name.empty())
    return Error(Code::kInvalidArgument, "the transfer engine needs a local name (its host, or host:port)");
  if (options.lanes < 1 || options.worker_threads < 1 || options.server_threads < 1)
    return Error(Code::kInvalidArgument, "lanes, worker_threads and server_threads must be at least 1");
  WEFT_RETURN_IF_ERROR(CheckProtocol(options));
  WEFT_RETURN_IF_ERROR(net::CheckAuthPolicy(options.auth));
  if (options.staging_slice_bytes < 4096 || options.staging_slice_bytes > (64ull << 20) ||
      options.staging_buffers < 1 || options.staging_buffers > options.staging_max_buffers)
    return Error(Code::kInvalidArgument, "staging_slice_bytes must be 4 KiB .. 64 MiB and staging_buffers 1 .. "
                 "staging_max_buffers (got {}, {}, {})", options.staging_slice_bytes, options.staging_buffers,
                 options.staging_max_buffers);

  m.batches_total = m.metrics.counter("weft_trans_batches_total", "Batches submitted");
  m.requests_failed = m.metrics.counter("weft_trans_requests_failed_total", "Requests that failed");
  m.bytes_written = m.metrics.counter("weft_trans_bytes_written_total", "Bytes written to peers");
  m.bytes_read = m.metrics.counter("weft_trans_bytes_read_total", "Bytes read from peers");
  m.notifications_received = m.metrics.counter("weft_trans_notifications_received_total", "Notifications received");
  m.notifications_refused = m.metrics.counter("weft_trans_notifications_refused_total",
                                              "Notifications refused because the untaken queue was full");
  m.notifications_queued = m.metrics.gauge("weft_trans_notifications_queued",
                                           "Notifications received and not yet taken (TakeNotifications, get_notifies)");
  m.batches_running = m.metrics.gauge("weft_trans_batches_running", "Batches submitted and not yet done");
  m.batch_latency_ns = m.metrics.histogram("weft_trans_batch_latency_ns", "Submit to completion of a batch");
  m.call_ns = m.metrics.histogram("weft_trans_sync_call_ns", "A synchronous Transfer, entry to return");
  m.validate_ns = m.metrics.histogram("weft_trans_validate_ns", "Checking and recording a batch before its copies start");

  // Device memory: as given, else CUDA where this build and this machine have it.
  m.device = options.device;
#if WEFT_HAVE_CUDA
  if (!m.device.copy && mem::cuda::DevicesPresent()) {
    // Copies on weft's own non-blocking streams, bounce buffers pinned (DMA without the driver's
    // own staging). The copier lives as long as the functions holding it.
    auto copier = std::make_shared<mem::cuda::HostDeviceCopier>();
    m.device.is_device = [](const void* p) { return mem::cuda::IsDevicePointer(p); };
    m.device.copy = [copier](void* dst, const void* src, uint64_t len) { return copier->Copy(dst, src, len); };
    m.device.alloc_host = [](uint64_t bytes) { return mem::cuda::AllocPinnedHost(bytes); };
    m.device.free_host = [](void* p, uint64_t) { mem::cuda::FreePinnedHost(p); };
  }
#endif
  transport::HostBufferAllocator bounce_alloc;
  if (m.device.alloc_host && m.device.free_host) bounce_alloc = {m.device.alloc_host, m.device.free_host};

  m.p2p = IsP2P(options.metadata);
  m.host = options.advertise_host.empty() ? HostPart(options.local_name) : options.advertise_host;
  WEFT_RETURN_IF_ERROR(m.CreateEngine(bounce_alloc));
  m.workers = std::make_unique<WorkerPool>(static_cast<unsigned>(options.worker_threads));
  m.workers_hook = m.metrics.OnScrape(
      [workers = m.workers.get(),
       queued = m.metrics.gauge("weft_trans_batch_groups_queued",
                                 "Parts of submitted batches (one per target segment) waiting for a worker thread")] {
        queued->Set(static_cast<int64_t>(workers->load().queued));
      });
  WEFT_RETURN_IF_ERROR(m.StartDirectory());
  Impl* raw = &m;
  // p2p keeps its record in-process, behind a read-only endpoint: nothing to keep or check.
  if (!m.p2p) m.keeper = std::thread([raw] { raw->KeepDescriptorAlive(); });
  std::string paths;
  for (const auto& [t, blob] : m.engine->EndpointBlobs()) paths += (paths.empty() ? "" : ", ") + t;
  WEFT_LOG_INFO("transfer engine '{}' up: paths {}, data port {}, directory {}", m.name, paths, m.engine->ListenPort(),
                m.directory->Describe());
  return std::unique_ptr<TransferEngine>(new TransferEngine(std::move(impl)));
}

TransferEngine::~TransferEngine() {
  Impl& m = *impl_;
  {
    std::unique_lock lk(m.mu);
    m.closing = true;
    m.idle.wait(lk, [&] { return m.running == 0; });  // every batch ends by its deadline
  }
  m.workers.reset();
  if (m.keeper.joinable()) {
    {
      std::lock_guard g(m.keeper_mu);
      m.keeper_stop = true;
    }
    m.keeper_cv.notify_all();
    m.keeper.join();
  }
  if (m.directory) {
    Status s = m.lease != 0 ? m.directory->Revoke(m.lease, m.MetaDeadline())
                            : m.directory->Delete(m.DescriptorKey(m.name), m.MetaDeadline());
    if (!s.ok() && s.code() != Code::kNotFound)
      WEFT_LOG_WARN("transfer engine '{}': withdrawing the descriptor: {}", m.name, s.ToString());
  }
  for (auto& [addr, mb] : m.managed) m.engine->UnregisterHostMemory(reinterpret_cast<void*>(addr));
  m.engine.reset();  // stops the data server
  for (auto& [addr, mb] : m.managed) {
    ::munmap(reinterpret_cast<void*>(addr), mb.length);
    ::close(mb.fd);
  }
}

const std::string& TransferEngine::name() const { return impl_->name; }
uint16_t TransferEngine::rpc_port() const { return impl_->rpc_port; }
uint16_t TransferEngine::data_port() const { return impl_->engine->ListenPort(); }
const std::string& TransferEngine::protocol() const { return impl_->protocol; }
std::string TransferEngine::MetricsText() { return impl_->metrics.PrometheusText(); }

MetricsRegistry& TransferEngineAccess::Metrics(TransferEngine& engine) { return engine.impl_->metrics; }

Status TransferEngine::RegisterMemory(void* addr, uint64_t length, const std::string& location,
                                      bool remote_accessible) {
  Impl& m = *impl_;
  if (!addr || length == 0)
    return Error(Code::kInvalidArgument, "register {}+{} bytes: a buffer needs an address and a length", addr,
                 length);
  auto a = reinterpret_cast<uint64_t>(addr);
  if (a > UINT64_MAX - length) return Error(Code::kInvalidArgument, "register {}+{} wraps around", addr, length);
  if (location.rfind("npu", 0) == 0 || location.rfind("musa", 0) == 0)
    return Error(Code::kNotSupported, "register {} bytes at {} on '{}': weft reaches CUDA devices only", length, addr,
                 location);
  const bool says_device = location.rfind("cuda", 0) == 0;
  const bool is_device = m.device.is_device && m.device.is_device(addr);
  if (says_device && !m.device.copy)
    return Error(Code::kNotSupported,
                 "register {} bytes at {} on '{}': no GPU is usable here (or this build has no CUDA); register "
                 "host memory",
                 length, addr, location);
  if (says_device && m.device.is_device && !is_device)
    return Error(Code::kInvalidArgument, "register {} bytes at {} as '{}': the address is host memory", length, addr,
                 location);
  const bool device = says_device || is_device;
  // "*" at a device address is recorded as the device it is, as Mooncake records "cuda:N": peers
  // learn from the descriptor's location that the buffer is device memory (their route and
  // mapping choices depend on it), and LocalBuffers says what was found.
  std::string recorded = location;
  if (device && !says_device) {
    const int ordinal = DeviceOfPointer(addr);
    recorded = ordinal >= 0 ? fmt::format("cuda:{}", ordinal) : "cuda";
  }
  LocalBuffer b;
  {
    std::lock_guard g(m.mu);
    auto next = m.buffers.lower_bound(a);
    if (next != m.buffers.end() && next->first < a + length)
      return Error(Code::kAlreadyExists, "register {:#x}+{}: overlaps the buffer registered at {:#x}", a, length,
                   next->first);
    if (next != m.buffers.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second.length > a)
        return Error(Code::kAlreadyExists, "register {:#x}+{}: overlaps the buffer registered at {:#x}", a, length,
                     prev->first);
    }
    b.length = length;
    b.location = recorded;
    b.remote_accessible = remote_accessible;
    b.device = device;
    if (remote_accessible) {
      transport::LocalRegion region{0, static_cast<uint8_t*>(addr), length, device, -1, -1, 0};
      if (auto mb = m.ManagedAround(a, length)) {
        region.fd = mb->second.fd;
        region.fd_offset = a - mb->first;
      }
      WEFT_ASSIGN_OR_RETURN(b.blobs, m.engine->ExportRegion(region, &b.region_id));
    }
    m.buffers.emplace(a, b);
  }
  if (!remote_accessible) return OkStatus();
  Status s = m.Publish();
  if (!s.ok()) {  // not published: take the registration back (unless another thread already did)
    {
      std::lock_guard g(m.mu);
      auto it = m.buffers.find(a);
      if (it != m.buffers.end() && it->second.region_id == b.region_id) m.buffers.erase(it);
    }
    m.engine->WithdrawRegion(b.region_id);
  }
  return s;
}

Status TransferEngine::UnregisterMemory(void* addr) {
  Impl& m = *impl_;
  auto a = reinterpret_cast<uint64_t>(addr);
  LocalBuffer b;
  {
    std::lock_guard g(m.mu);
    auto it = m.buffers.find(a);
    if (it == m.buffers.end())
      return Error(Code::kNotFound, "unregister {}: no buffer was registered at this address", addr);
    b = it->second;
    m.buffers.erase(it);
  }
  if (!b.remote_accessible) return OkStatus();
  // Peers stop addressing it first. A failed write leaves a stale descriptor: requests for the
  // buffer are then refused NOT_FOUND by the access table, never served.
  if (Status s = m.Publish(); !s.ok()) WEFT_LOG_WARN("transfer engine '{}': {}", m.name, s.ToString());
  // Waits for peer requests that are using the buffer; new ones are refused NOT_FOUND.
  m.engine->WithdrawRegion(b.region_id);
  return OkStatus();
}

std::vector<BufferInfo> TransferEngine::LocalBuffers() const {
  std::lock_guard g(impl_->mu);
  std::vector<BufferInfo> out;
  for (const auto& [addr, b] : impl_->buffers) out.push_back({addr, b.length, b.location, b.remote_accessible});
  return out;
}

Result<SegmentHandle> TransferEngine::OpenSegment(const std::string& segment) {
  Impl& m = *impl_;
  if (segment.empty()) return Error(Code::kInvalidArgument, "open segment: empty name");
  if (m.p2p && !meta::ParseHostPort(segment).ok())
    return Error(Code::kInvalidArgument,
                 "open segment '{}': in P2PHANDSHAKE mode peers are named host:rpc_port (their get_rpc_port())",
                 segment);
  {
    std::lock_guard g(m.mu);
    auto it = m.segment_by_name.find(segment);
    if (it != m.segment_by_name.end()) return it->second;
  }
  WEFT_ASSIGN_OR_RETURN(auto d, m.Fetch(segment));
  WEFT_ASSIGN_OR_RETURN(PeerId peer, m.engine->AttachPeer(AdvertOf(*d)));
  std::lock_guard g(m.mu);
  auto it = m.segment_by_name.find(segment);  // another thread may have opened it meanwhile
  if (it != m.segment_by_name.end()) {
    m.engine->DetachPeer(peer);
    return it->second;
  }
  SegmentHandle h = m.next_handle++;
  m.segments[h] = RemoteSegment{segment, std::move(d), peer};
  m.segment_by_name[segment] = h;
  return h;
}

Status TransferEngine::CloseSegment(SegmentHandle handle) {
  Impl& m = *impl_;
  std::lock_guard g(m.mu);
  auto it = m.segments.find(handle);
  if (it == m.segments.end()) return Error(Code::kNotFound, "close segment: handle {} is not open", handle);
  m.segment_by_name.erase(it->second.name);
  m.engine->DetachPeer(it->second.peer);  // batches in flight keep what they use
  m.segments.erase(it);
  return OkStatus();
}

Result<std::vector<BufferInfo>> TransferEngine::RemoteBuffers(SegmentHandle handle, bool refresh) {
  auto d = refresh ? impl_->Refresh(handle) : impl_->Descriptor(handle);
  if (!d.ok()) return d.status();
  std::vector<BufferInfo> out;
  for (const auto& b : (*d)->buffers) out.push_back({b.addr, b.length, b.location, true});
  return out;
}

Result<BatchId> TransferEngine::Submit(std::span<const TransferRequest> requests, std::optional<Notification> notify,
                                       std::optional<Deadline> deadline) {
  return impl_->Start(requests, std::move(notify), deadline, /*run_one_here=*/false);
}

// Validates and records a batch, then hands its groups (one per target) to the workers. With
// run_one_here the caller carries out one group itself: a synchronous Transfer to a single peer
// then needs no thread hand-off at all (measured in docs/performance.md, bench-trans 1x4K).
Result<BatchId> TransferEngine::Impl::Start(std::span<const TransferRequest> requests,
                                            std::optional<Notification> notify, std::optional<Deadline> deadline,
                                            bool run_one_here) {
  Impl& m = *this;
  const uint64_t t_start = NowNanos();
  if (requests.empty()) return Error(Code::kInvalidArgument, "submit: the batch has no requests");
  if (notify && 4 + notify->name.size() + notify->message.size() > wire::kMaxNotifyPayload)
    return Error(Code::kInvalidArgument, "submit: the notification is {} bytes, the limit is {}",
                 notify->name.size() + notify->message.size(), kMaxNotificationBytes);
  auto b = std::make_shared<Batch>();
  b->requests.assign(requests.begin(), requests.end());
  b->notify = std::move(notify);
  b->deadline = deadline ? *deadline : Deadline::After(m.options.transfer_timeout);
  b->states.assign(requests.size(), TransferState::kPending);
  b->results.assign(requests.size(), OkStatus());
  std::map<SegmentHandle, std::vector<size_t>> groups;
  BatchId id = 0;
  {
    std::lock_guard g(m.mu);
    if (m.closing) return Error(Code::kCancelled, "submit: the transfer engine is shutting down");
    for (size_t i = 0; i < requests.size(); ++i) {
      const TransferRequest& r = requests[i];
      if (r.length == 0) return Error(Code::kInvalidArgument, "request {}: zero length", i);
      if (!r.local) return Error(Code::kInvalidArgument, "request {}: null local address", i);
      if (r.op != Opcode::kRead && r.op != Opcode::kWrite)
        return Error(Code::kInvalidArgument, "request {}: unknown opcode {}", i, static_cast<int>(r.op));
      if (!m.segments.count(r.target))
        return Error(Code::kNotFound, "request {}: segment handle {} is not open (OpenSegment first)", i, r.target);
      if (!m.LocalRegistered(r.local, r.length))
        return Error(Code::kNotRegistered,
                     "request {}: local range {}+{} is not inside one registered buffer (RegisterMemory first)", i,
                     r.local, r.length);
      groups[r.target].push_back(i);
    }
    id = m.next_batch++;
    b->groups_left = groups.size();
    m.batches[id] = b;
    m.batches_running->Set(static_cast<int64_t>(++m.running));
  }
  m.batches_total->Add();
  m.validate_ns->Observe(NowNanos() - t_start);
  std::optional<std::pair<SegmentHandle, std::vector<size_t>>> here;
  if (run_one_here) {
    here.emplace(groups.begin()->first, std::move(groups.begin()->second));
    groups.erase(groups.begin());
  }
  for (auto& [target, idx] : groups) {
    m.workers->Submit([&m, b, target = target, idx = std::move(idx)] { m.RunGroup(b, target, idx); });
  }
  if (here) m.RunGroup(b, here->first, here->second);
  return id;
}

Result<BatchStatus> TransferEngine::Poll(BatchId id) const {
  std::shared_ptr<Batch> b;
  {
    std::lock_guard g(impl_->mu);
    auto it = impl_->batches.find(id);
    if (it == impl_->batches.end()) return Error(Code::kNotFound, "batch {} is not known (freed already?)", id);
    b = it->second;
  }
  std::lock_guard g(b->mu);
  return b->Snapshot();
}

Result<BatchStatus> TransferEngine::Wait(BatchId id, Deadline wait) {
  std::shared_ptr<Batch> b;
  {
    std::lock_guard g(impl_->mu);
    auto it = impl_->batches.find(id);
    if (it == impl_->batches.end()) return Error(Code::kNotFound, "batch {} is not known (freed already?)", id);
    b = it->second;
  }
  std::unique_lock lk(b->mu);
  if (wait.never()) {
    b->cv.wait(lk, [&] { return b->done; });
  } else if (!b->cv.wait_until(lk, wait.at(), [&] { return b->done; })) {
    return Error(Code::kTimeout, "batch {} is still running", id);
  }
  return b->Snapshot();
}

Status TransferEngine::FreeBatch(BatchId id) {
  std::lock_guard g(impl_->mu);
  auto it = impl_->batches.find(id);
  if (it == impl_->batches.end()) return Error(Code::kNotFound, "batch {} is not known (freed already?)", id);
  {
    std::lock_guard g2(it->second->mu);
    if (!it->second->done) return Error(Code::kBusy, "batch {} is still running; wait for it first", id);
  }
  impl_->batches.erase(it);
  return OkStatus();
}

std::vector<Status> TransferEngine::Transfer(std::span<const TransferRequest> requests,
                                             std::optional<Notification> notify, std::optional<Deadline> deadline) {
  const uint64_t t_start = NowNanos();
  auto id = impl_->Start(requests, std::move(notify), deadline, /*run_one_here=*/true);
  if (!id.ok()) return std::vector<Status>(std::max<size_t>(requests.size(), 1), id.status());
  auto st = Wait(*id);
  (void)FreeBatch(*id);
  if (!st.ok()) return std::vector<Status>(requests.size(), st.status());
  std::vector<Status> out = std::move(st->results);
  // A notification that could not be delivered fails the call (the data did arrive).
  if (!st->notification.ok()) {
    for (auto& s : out)
      if (s.ok()) s = st->notification;
  }
  impl_->call_ns->Observe(NowNanos() - t_start);
  return out;
}

Status TransferEngine::Notify(SegmentHandle target, const Notification& notification,
                              std::optional<Deadline> deadline) {
  WEFT_ASSIGN_OR_RETURN(auto d, impl_->Descriptor(target));
  return impl_->SendNotification(target, d->name, notification,
                                 deadline ? *deadline : Deadline::After(impl_->options.transfer_timeout));
}

std::vector<Notification> TransferEngine::TakeNotifications() {
  std::lock_guard g(impl_->notify_mu);
  std::vector<Notification> out(std::make_move_iterator(impl_->received.begin()),
                                std::make_move_iterator(impl_->received.end()));
  impl_->received.clear();
  impl_->notifications_queued->Set(0);
  return out;
}

Status TransferEngine::Probe(const std::string& segment, std::optional<Deadline> deadline) {
  Impl& m = *impl_;
  if (m.p2p && !meta::ParseHostPort(segment).ok())
    return Error(Code::kInvalidArgument, "probe '{}': in P2PHANDSHAKE mode peers are named host:rpc_port", segment);
  WEFT_ASSIGN_OR_RETURN(auto d, m.Fetch(segment));
  Deadline dl = deadline ? *deadline : Deadline::After(m.options.metadata_timeout);
  // An empty notification: the peer answers it once the connection and handshake passed.
  WEFT_ASSIGN_OR_RETURN(PeerId peer, m.engine->AttachPeer(AdvertOf(*d)));
  Status s = m.engine->NotifyPeer(peer, {}, dl).Annotate(fmt::format("probing '{}'", segment));
  m.engine->DetachPeer(peer);
  return s;
}

Result<void*> TransferEngine::AllocateManagedBuffer(uint64_t length) {
  Impl& m = *impl_;
  if (length == 0) return Error(Code::kInvalidArgument, "allocate a managed buffer of 0 bytes");
  int fd = ::memfd_create("weft-trans-buffer", MFD_CLOEXEC);
  if (fd < 0) return Error(Code::kUnavailable, "memfd_create: {}", std::strerror(errno));
  if (::ftruncate(fd, static_cast<off_t>(length)) != 0) {
    int err = errno;
    ::close(fd);
    return Error(Code::kUnavailable, "a managed buffer of {} bytes: {}", length, std::strerror(err));
  }
  void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int err = errno;
    ::close(fd);
    return Error(Code::kUnavailable, "mapping a managed buffer of {} bytes: {}", length, std::strerror(err));
  }
  mem::PopulateWrite(p, length);
  {
    std::lock_guard g(m.mu);
    m.managed[reinterpret_cast<uint64_t>(p)] = ManagedBuffer{fd, length};
  }
  // Pinned for DMA where a transport can (cuda): copies between it and device memory then need
  // no staging by the driver.
  if (Status pin = m.engine->RegisterHostMemory(p, length); !pin.ok())
    WEFT_LOG_INFO("transfer engine '{}': managed buffer not pinned for DMA: {}", m.name, pin.ToString());
  if (Status s = RegisterMemory(p, length, "cpu:0"); !s.ok()) {
    {
      std::lock_guard g(m.mu);
      m.managed.erase(reinterpret_cast<uint64_t>(p));
    }
    m.engine->UnregisterHostMemory(p);
    ::munmap(p, length);
    ::close(fd);
    return s;
  }
  return p;
}

Status TransferEngine::FreeManagedBuffer(void* addr) {
  Impl& m = *impl_;
  ManagedBuffer mb;
  {
    std::lock_guard g(m.mu);
    auto it = m.managed.find(reinterpret_cast<uint64_t>(addr));
    if (it == m.managed.end())
      return Error(Code::kNotFound, "free managed buffer {}: not allocated by AllocateManagedBuffer", addr);
    mb = it->second;
  }
  Status s = UnregisterMemory(addr);
  if (!s.ok() && s.code() != Code::kNotFound) return s;
  {
    std::lock_guard g(m.mu);
    m.managed.erase(reinterpret_cast<uint64_t>(addr));
  }
  m.engine->UnregisterHostMemory(addr);
  ::munmap(addr, mb.length);
  ::close(mb.fd);
  return OkStatus();
}

Result<std::string> TransferEngine::Route(const TransferRequest& request) {
  Impl& m = *impl_;
  PeerId peer = m.PeerOf(request.target);
  if (peer == 0) return Error(Code::kNotFound, "segment handle {} is not open (OpenSegment first)", request.target);
  auto route = m.engine->RouteRemote(m.ToRemote(request, peer));
  if (!route.ok() && route.status().code() == Code::kInvalidAddress && m.Refresh(request.target).ok())
    route = m.engine->RouteRemote(m.ToRemote(request, peer));
  if (!route.ok()) return route.status();
  return route->ToString();
}

}  // namespace weft::trans
