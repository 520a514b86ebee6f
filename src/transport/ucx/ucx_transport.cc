// The ucx transport's region contract (ucx_transport.h). Peers and regions made here keep the
// worker alive and take its mutex for every UCX call they make, their destructors included.
#include "transport/ucx/ucx_transport.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "base/log.h"
#include "transport/blob.h"
#include "transport/ucx/ucx_worker.h"

namespace weft::transport::ucx {

namespace {

constexpr uint8_t kBlobVersion = 1;
constexpr std::string_view kPath = "ucx";
constexpr auto kCloseWait = std::chrono::seconds(5);  // a forced close completes promptly

using Worker = UcxTransport::Worker;

// Waits (mu held, progressing) until `request` is no longer in progress, `until` passes or
// `abandon` turns true; returns its status (UCS_INPROGRESS when it stopped early) and frees it
// unless still in progress. Given `share` (the caller's lock on mu), a poll that found nothing
// lets go of mu while another call waits for the worker, so that calls to the same worker overlap
// (its ops are issued while ours fly; any caller's progress completes every caller's requests).
ucs_status_t WaitRequest(Worker& w, void* request, Deadline until, const std::atomic<bool>* abandon = nullptr,
                         std::unique_lock<std::mutex>* share = nullptr) {
  if (request == nullptr) return UCS_OK;
  if (UCS_PTR_IS_ERR(request)) return UCS_PTR_STATUS(request);
  ucs_status_t s;
  while ((s = w.lib->request_check_status(request)) == UCS_INPROGRESS && !until.expired() &&
         !(abandon && abandon->load(std::memory_order_acquire))) {
    if (w.lib->worker_progress(w.worker) != 0 || !share) continue;
    if (w.stats.posts_waiting.load(std::memory_order_relaxed) < 2) continue;  // nobody to let in
    share->unlock();
    std::this_thread::yield();
    share->lock();
  }
  if (s != UCS_INPROGRESS) w.lib->request_free(request);
  return s;
}

// A peer: its worker address and, once used, the endpoint to it. State under w->mu.
struct UcxPeer final : PeerLink {
  std::shared_ptr<Worker> w;
  std::string address;
  mutable ucp_ep_h ep = nullptr;
  mutable ucs_status_t failure = UCS_OK;  // set by UCX's error callback (inside progress)
  mutable uint64_t generation = 0;        // bumped per endpoint: rkeys of an older one are stale
  // Set by PeerDown (the pool declared the peer dead; any thread, without mu): an op waiting on
  // the peer stops, and this link fails every op from then on (a rejoined peer gets a new link).
  mutable std::atomic<bool> declared_down{false};
  mutable std::mutex down_mu;
  mutable Status down_why;  // under down_mu

  void DeclareDown(const Status& why) const {
    {
      std::lock_guard lock(down_mu);
      down_why = why;
    }
    declared_down.store(true, std::memory_order_release);
  }
  Status DownStatus() const {
    std::lock_guard lock(down_mu);
    return Error(Code::kPeerDown, "ucx: the peer was declared down by the pool during the op: {}", down_why.message());
  }

  ~UcxPeer() override {
    std::lock_guard lock(w->mu);
    Close();
  }

  static void OnError(void* arg, ucp_ep_h, ucs_status_t status) {
    const auto* peer = static_cast<const UcxPeer*>(arg);
    peer->failure = status;
    peer->w->stats.endpoint_failures.fetch_add(1, std::memory_order_relaxed);
  }

  // mu held: an endpoint that has not failed.
  Status Ensure() const {
    if (declared_down.load(std::memory_order_acquire)) {
      Close();
      return DownStatus();
    }
    if (ep && failure == UCS_OK) return OkStatus();
    Close();
    ucp_ep_params_t p{};
    p.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                   UCP_EP_PARAM_FIELD_ERR_HANDLER;
    p.address = reinterpret_cast<const ucp_address_t*>(address.data());
    p.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    p.err_handler.cb = &UcxPeer::OnError;
    p.err_handler.arg = const_cast<UcxPeer*>(this);
    failure = UCS_OK;
    if (ucs_status_t s = w->lib->ep_create(w->worker, &p, &ep); s != UCS_OK) {
      ep = nullptr;
      return w->Failed(s, "connecting to the peer");
    }
    ++generation;
    w->stats.endpoints_created.fetch_add(1, std::memory_order_relaxed);
    w->stats.endpoints_open.fetch_add(1, std::memory_order_relaxed);
    return OkStatus();
  }

  // mu held (and kept throughout): closes the endpoint by force (its requests complete with an
  // error).
  void Close() const {
    if (!ep) return;
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    (void)WaitRequest(*w, w->lib->ep_close_nbx(ep, &p), Deadline::After(kCloseWait));
    ep = nullptr;
    w->stats.endpoints_open.fetch_sub(1, std::memory_order_relaxed);
  }
  // mu held: closes the endpoint if it is still the one of generation `used` (another call may
  // have closed it while mu was let go, and made a new one that is not ours to close).
  void CloseIfStill(uint64_t used) const {
    if (generation == used) Close();
  }
};

// A peer's region: its address there and its packed rkey, unpacked for the peer's endpoint.
struct UcxRegion final : ImportedRegion {
  std::shared_ptr<Worker> w;
  uint64_t remote_addr = 0;
  std::string packed;
  mutable ucp_rkey_h rkey = nullptr;
  mutable uint64_t generation = 0;  // the endpoint generation rkey was unpacked for

  ~UcxRegion() override {
    std::lock_guard lock(w->mu);
    Drop();
  }
  void Drop() const {
    if (rkey) w->lib->rkey_destroy(rkey);
    rkey = nullptr;
  }
  // mu held, peer's endpoint ready.
  Status Unpacked(const UcxPeer& peer) const {
    if (rkey && generation == peer.generation) return OkStatus();
    Drop();
    if (ucs_status_t s = w->lib->ep_rkey_unpack(peer.ep, packed.data(), &rkey); s != UCS_OK) {
      rkey = nullptr;
      return Error(Code::kProtocol, "ucx: the peer's rkey does not unpack: {}", w->lib->Describe(s));
    }
    generation = peer.generation;
    return OkStatus();
  }
};

// A PostDirect call for the metrics: counted as waiting on the worker from before it takes mu
// until it returns, then its ops by outcome, kind and bytes.
class WaitingPost {
 public:
  WaitingPost(Worker::Stats& stats, std::span<const RemoteOp> ops, std::span<const Status> results)
      : stats_(stats), ops_(ops), results_(results) {
    stats_.posts_waiting.fetch_add(1, std::memory_order_relaxed);
  }
  ~WaitingPost() {
    stats_.posts_waiting.fetch_sub(1, std::memory_order_relaxed);
    for (size_t i = 0; i < ops_.size(); ++i) {
      if (!results_[i].ok()) {
        stats_.ops_failed.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      const int kind = ops_[i].kind == RemoteOpKind::kWrite ? 1 : 0;
      stats_.ops[kind].fetch_add(1, std::memory_order_relaxed);
      stats_.bytes[kind].fetch_add(ops_[i].len, std::memory_order_relaxed);
    }
  }
  WaitingPost(const WaitingPost&) = delete;
  WaitingPost& operator=(const WaitingPost&) = delete;

 private:
  Worker::Stats& stats_;
  std::span<const RemoteOp> ops_;
  std::span<const Status> results_;
};

// Sets the weft_ucx_* series from the worker's counts when the metrics are read.
std::function<void()> ScrapeHook(MetricsRegistry& m, const Worker::Stats& stats) {
  struct Series {
    Gauge *endpoints_open, *regions, *waiting;
    Counter *created, *failures, *ops[2], *bytes[2], *failed;
  } s{m.gauge("weft_ucx_endpoints_open", "UCP endpoints open to peers"),
      m.gauge("weft_ucx_regions_exported", "Regions registered with UCX (ucp_mem_map) and exported to peers"),
      m.gauge("weft_ucx_posts_waiting", "Calls waiting for the UCX worker or progressing it: the transport's queue"),
      m.counter("weft_ucx_endpoints_created_total", "UCP endpoints created (lazily, on a peer's first op)"),
      m.counter("weft_ucx_endpoint_failures_total", "Endpoints UCX reported failed (the peer died or was cut off)"),
      {m.counter("weft_ucx_ops_total{op=\"read\"}", "One-sided ops completed, by kind"),
       m.counter("weft_ucx_ops_total{op=\"write\"}")},
      {m.counter("weft_ucx_bytes_total{op=\"read\"}", "Bytes moved by completed one-sided ops, by kind"),
       m.counter("weft_ucx_bytes_total{op=\"write\"}")},
      m.counter("weft_ucx_ops_failed_total", "One-sided ops that ended in an error")};
  return [s, &stats] {
    auto get = [](const auto& v) { return v.load(std::memory_order_relaxed); };
    s.endpoints_open->Set(get(stats.endpoints_open));
    s.regions->Set(get(stats.regions_exported));
    s.waiting->Set(get(stats.posts_waiting));
    s.created->SetTotal(get(stats.endpoints_created));
    s.failures->SetTotal(get(stats.endpoint_failures));
    for (int k = 0; k < 2; ++k) {
      s.ops[k]->SetTotal(get(stats.ops[k]));
      s.bytes[k]->SetTotal(get(stats.bytes[k]));
    }
    s.failed->SetTotal(get(stats.ops_failed));
  };
}

Result<wire::Reader> Open(std::string_view blob, std::string_view what) {
  return OpenBlob(blob, kBlobVersion, kPath, what);
}

}  // namespace

Result<std::unique_ptr<UcxTransport>> UcxTransport::Create(const UcxOptions& options) {
  WEFT_ASSIGN_OR_RETURN(auto lib, UcpLibrary::Load());
  WEFT_ASSIGN_OR_RETURN(auto worker, Worker::Create(std::move(lib), options));
  auto t = std::unique_ptr<UcxTransport>(new UcxTransport(std::move(worker), options));
  if (options.metrics) t->scrape_hook_ = options.metrics->OnScrape(ScrapeHook(*options.metrics, t->worker_->stats));
  return t;
}

namespace {

std::string_view DevicePath(bool direct, bool cuda_memory, bool staged) {
  if (direct) return "device memory given to UCX directly (this UCX supports CUDA memory)";
  if (staged && cuda_memory)
    return "device memory staged through host bounce buffers (this UCX reports CUDA memory support but failed to "
           "register device memory; the log has its error)";
  if (staged) return "device memory staged through host bounce buffers (this UCX has no CUDA memory support)";
  return "no device memory (this UCX has no CUDA memory support)";
}

}  // namespace

UcxTransport::UcxTransport(std::shared_ptr<Worker> worker, const UcxOptions& options)
    : worker_(std::move(worker)),
      device_direct_(worker_->cuda_memory),
      ahead_of_tcp_(options.named || !worker_->rdma_resources.empty()) {
  // Staging stands by even where UCX claims CUDA support: a registration it then refuses turns
  // the device ends over to the bounce buffers (DeviceRegistrationFailed).
  if (options.device) staging_ = std::make_unique<StagingPipeline>(options.staging, options.device);
  const std::string& rdma = worker_->rdma_resources;
  const std::string over = !rdma.empty() ? "RDMA (" + rdma + ")"
                           : options.named ? std::string("UCX's tcp or shared memory (no RDMA resource; named, so "
                                                         "ranked ahead of weft's tcp)")
                                           : std::string("UCX's tcp or shared memory (no RDMA resource: ranked "
                                                         "behind weft's tcp)");
  for (bool direct : {true, false}) {
    explain_[direct] = fmt::format(
        "UCX {} ({}): one-sided put/get on the peer's registered region, one flush per batch, over {}; {}",
        worker_->lib->version, worker_->lib->path, over,
        DevicePath(direct && worker_->cuda_memory, worker_->cuda_memory, staging_ != nullptr));
  }
}

uint32_t UcxTransport::capabilities() const {
  uint32_t caps = kCapHostMemory | kCapSameNode | kCapRemoteNode | kCapRegions;
  if (device_direct() || staging_) caps |= kCapDeviceMemory;
  return caps;
}

bool UcxTransport::device_direct() const { return device_direct_.load(std::memory_order_acquire); }

Status UcxTransport::DeviceRegistrationFailed(const Status& failed) {
  if (device_direct_.exchange(false))
    WEFT_LOG_WARN("ucx: {}; device ends are staged through host bounce buffers from now on and device "
             "regions are not exported through ucx", failed.message());
  return Error(Code::kNotSupported, "path ucx: {} (peers reach this region over a path that stages)",
               failed.message());
}

StagingStats UcxTransport::staging_stats() const { return staging_ ? staging_->stats() : StagingStats{}; }

UcxTransport::~UcxTransport() {
  std::lock_guard lock(worker_->mu);
  for (auto& [id, memh] : worker_->exported) worker_->lib->mem_unmap(worker_->context, memh);
  worker_->exported.clear();
  worker_->stats.regions_exported.store(0, std::memory_order_relaxed);
}

void UcxTransport::PeerDown(const PeerLink& peer, const Status& why) {
  static_cast<const UcxPeer&>(peer).DeclareDown(why);
}

Status UcxTransport::Copy(const Endpoint&, const Endpoint&, uint64_t) {
  return Error(Code::kNotSupported, "path ucx carries one-sided ops on a peer's regions only (Post)");
}

Result<std::string> UcxTransport::EndpointBlob() const {
  auto w = BlobWriter(kBlobVersion);
  w.String(worker_->address);
  if (w.size() > kMaxBlobBytes)
    return Error(Code::kNotSupported, "ucx: this worker's address has {} bytes, more than a blob carries ({}); "
                 "narrow UCX_TLS / UCX_NET_DEVICES", worker_->address.size(), kMaxBlobBytes);
  return BlobText(w);
}

Result<std::string> UcxTransport::ExportRegion(const LocalRegion& region) {
  if (region.device && !device_direct())
    return Error(Code::kNotSupported, "path ucx: the loaded UCX ({}) has no CUDA memory support, so device regions "
                 "are not exported through it (peers reach them over a path that stages)", worker_->lib->path);
  if (region.base == nullptr || region.len == 0)
    return Error(Code::kInvalidArgument, "path ucx: an empty region cannot be exported");
  std::lock_guard lock(worker_->mu);
  const UcpLibrary& ucp = *worker_->lib;
  if (worker_->exported.count(region.id))
    return Error(Code::kAlreadyExists, "path ucx: region {} is exported already", region.id);
  ucp_mem_map_params_t p{};
  p.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  p.address = region.base;
  p.length = region.len;
  if (region.device) {
    p.field_mask |= UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
    p.memory_type = UCS_MEMORY_TYPE_CUDA;
  }
  ucp_mem_h memh = nullptr;
  if (ucs_status_t s = ucp.mem_map(worker_->context, &p, &memh); s != UCS_OK)
    return region.device ? DeviceRegistrationFailed(worker_->Failed(s, "registering device memory (ucp_mem_map)")) : worker_->Failed(s, "registering the region (ucp_mem_map)");
  void* packed = nullptr;
  size_t size = 0;
  if (ucs_status_t s = ucp.rkey_pack(worker_->context, memh, &packed, &size); s != UCS_OK) {
    ucp.mem_unmap(worker_->context, memh);
    return worker_->Failed(s, "packing the region's rkey");
  }
  auto w = BlobWriter(kBlobVersion);
  w.U64(reinterpret_cast<uint64_t>(region.base));
  w.String(std::string_view(static_cast<const char*>(packed), size));
  ucp.rkey_buffer_release(packed);
  if (w.size() > kMaxBlobBytes) {
    ucp.mem_unmap(worker_->context, memh);
    return Error(Code::kNotSupported, "ucx: the region's rkey has {} bytes, more than a blob carries", size);
  }
  worker_->exported[region.id] = memh;
  worker_->stats.regions_exported.fetch_add(1, std::memory_order_relaxed);
  return BlobText(w);
}

void UcxTransport::WithdrawRegion(uint64_t region_id) {
  std::lock_guard lock(worker_->mu);
  auto it = worker_->exported.find(region_id);
  if (it == worker_->exported.end()) return;
  worker_->lib->mem_unmap(worker_->context, it->second);
  worker_->exported.erase(it);
  worker_->stats.regions_exported.fetch_sub(1, std::memory_order_relaxed);
}

Result<std::unique_ptr<PeerLink>> UcxTransport::Connect(std::string_view endpoint_blob) {
  WEFT_ASSIGN_OR_RETURN(auto r, Open(endpoint_blob, "endpoint"));
  auto peer = std::make_unique<UcxPeer>();
  peer->w = worker_;
  Status s = r.String(peer->address, kMaxBlobBytes);
  if (s.ok()) s = r.ExpectEnd();
  if (!s.ok()) return BadBlob(s, kPath, "endpoint");
  if (peer->address.empty()) return Error(Code::kProtocol, "endpoint blob of path ucx has an empty worker address");
  return std::unique_ptr<PeerLink>(std::move(peer));
}

Result<std::unique_ptr<ImportedRegion>> UcxTransport::ImportRegion(const PeerLink&, uint64_t base, uint64_t len,
                                                                   std::string_view blob) {
  WEFT_ASSIGN_OR_RETURN(auto r, Open(blob, "region"));
  auto region = std::make_unique<UcxRegion>();
  region->w = worker_;
  Status s = r.U64(region->remote_addr);
  if (s.ok()) s = r.String(region->packed, kMaxBlobBytes);
  if (s.ok()) s = r.ExpectEnd();
  if (!s.ok()) return BadBlob(s, kPath, "region");
  if (region->packed.empty() || region->remote_addr == 0)
    return Error(Code::kProtocol, "region blob of path ucx has no rkey or a null address");
  region->base = base;
  region->len = len;
  return std::unique_ptr<ImportedRegion>(std::move(region));
}

void UcxTransport::Post(std::span<const RemoteOp> ops, std::span<Status> results, Deadline deadline) {
  if (ops.empty()) return;
  const bool direct = device_direct();
  auto staged = [&](const RemoteOp& op) { return op.local_device && !direct; };
  const size_t n_staged = std::count_if(ops.begin(), ops.end(), staged);
  if (n_staged == 0) return PostDirect(ops, results, deadline);
  if (n_staged == ops.size()) return PostStaged(ops, results, deadline);
  // A mixed batch: the host ends in one flush, then the device ends through the bounce buffers.
  std::vector<RemoteOp> parts[2];
  std::vector<size_t> index[2];
  for (size_t i = 0; i < ops.size(); ++i) {
    parts[staged(ops[i])].push_back(ops[i]);
    index[staged(ops[i])].push_back(i);
  }
  for (int k = 0; k < 2; ++k) {
    std::vector<Status> got(parts[k].size());
    k == 0 ? PostDirect(parts[k], got, deadline) : PostStaged(parts[k], got, deadline);
    for (size_t j = 0; j < got.size(); ++j) results[index[k][j]] = std::move(got[j]);
  }
}

void UcxTransport::PostStaged(std::span<const RemoteOp> ops, std::span<Status> results, Deadline deadline) {
  if (!staging_) {
    for (auto& r : results)
      r = Error(Code::kNotSupported, "path ucx: the loaded UCX ({}) has no CUDA memory support and this engine "
                "gave it no device staging", worker_->lib->path);
    return;
  }
  std::vector<StagedRequest> requests(ops.size());
  for (size_t i = 0; i < ops.size(); ++i)
    requests[i] = StagedRequest{ops[i].kind == RemoteOpKind::kWrite, static_cast<uint8_t*>(ops[i].local), ops[i].len};
  // One network round: each piece is its op moved to the bounce buffer, at its offset.
  NetworkRound net = [&](std::span<const StagedPiece> pieces) {
    std::vector<RemoteOp> round(pieces.size());
    for (size_t k = 0; k < pieces.size(); ++k) {
      round[k] = ops[pieces[k].request];
      round[k].local = pieces[k].host;
      round[k].local_device = false;
      round[k].offset += pieces[k].offset;
      round[k].len = pieces[k].len;
    }
    std::vector<Status> got(round.size());
    PostDirect(round, got, deadline);
    return got;
  };
  auto got = staging_->Run(requests, net, deadline);
  for (size_t i = 0; i < got.size(); ++i) results[i] = std::move(got[i]);
}

void UcxTransport::PostDirect(std::span<const RemoteOp> ops, std::span<Status> results, Deadline deadline) {
  const auto& peer = static_cast<const UcxPeer&>(*ops[0].peer);
  Worker& w = *worker_;
  WaitingPost waiting(w.stats, ops, results);
  std::unique_lock lock(w.mu);
  if (Status ready = peer.Ensure(); !ready.ok()) {
    for (auto& r : results) r = ready;
    w.DrainAndArm();
    return;
  }
  // Issue every op, then one flush: it completes once every op before it is complete at the peer.
  std::vector<void*> requests(ops.size(), nullptr);
  std::vector<uint8_t> issued(ops.size(), 0);
  for (size_t i = 0; i < ops.size(); ++i) {
    const RemoteOp& op = ops[i];
    const auto& region = static_cast<const UcxRegion&>(*op.region);
    if (Status rk = region.Unpacked(peer); !rk.ok()) {
      results[i] = rk;
      continue;
    }
    ucp_request_param_t p{};
    if (op.local_device) {  // only when UCX moves CUDA memory (Post sends the others to staging)
      p.op_attr_mask = UCP_OP_ATTR_FIELD_MEMORY_TYPE;
      p.memory_type = UCS_MEMORY_TYPE_CUDA;
    }
    const uint64_t remote = region.remote_addr + op.offset;
    void* req = op.kind == RemoteOpKind::kWrite ? w.lib->put_nbx(peer.ep, op.local, op.len, remote, region.rkey, &p)
                                                : w.lib->get_nbx(peer.ep, op.local, op.len, remote, region.rkey, &p);
    if (UCS_PTR_IS_ERR(req)) {
      results[i] = w.Failed(UCS_PTR_STATUS(req), op.kind == RemoteOpKind::kWrite ? "put" : "get");
      continue;
    }
    requests[i] = req;
    issued[i] = 1;
  }
  ucp_request_param_t fp{};
  const uint64_t ep_generation = peer.generation;
  void* flush = w.lib->ep_flush_nbx(peer.ep, &fp);
  const ucs_status_t flushed = WaitRequest(w, flush, deadline, &peer.declared_down, &lock);
  const bool abandoned = flushed == UCS_INPROGRESS && peer.declared_down.load(std::memory_order_acquire);
  const bool timed_out = flushed == UCS_INPROGRESS && !abandoned;
  // On the deadline, a failed peer or one declared down, nothing may land in local memory after
  // we return: the forced close completes every request still in flight (the flush too).
  if (flushed == UCS_INPROGRESS || peer.failure != UCS_OK) peer.CloseIfStill(ep_generation);
  if (flushed == UCS_INPROGRESS) (void)WaitRequest(w, flush, Deadline::After(kCloseWait));  // ended by the close; freed
  for (size_t i = 0; i < ops.size(); ++i) {
    if (!issued[i]) continue;
    const ucs_status_t s = WaitRequest(w, requests[i], Deadline::After(kCloseWait));
    if (abandoned) {
      results[i] = peer.DownStatus();
    } else if (timed_out) {
      results[i] = Error(Code::kTimeout, "ucx: the op did not complete before the deadline; the endpoint to the "
                         "peer was closed and is made again on the next op");
    } else if (s != UCS_OK) {
      results[i] = w.Failed(s, ops[i].kind == RemoteOpKind::kWrite ? "put" : "get");
    } else if (flushed != UCS_OK) {
      results[i] = w.Failed(flushed, "flushing the ops to the peer");
    } else {
      results[i] = OkStatus();
    }
  }
  w.DrainAndArm();
}

double UcxTransport::RemoteCostNanos(uint64_t bytes) const {
  // Ahead: a few µs and tens of GB/s, below tcp's model (25-50 µs + 1.2 GB/s). Behind: UCX's own
  // tcp measured 0.33-0.8x of weft's on loopback (docs/performance.md), so it carries only what
  // tcp cannot.
  if (ahead_of_tcp_) return 3000 + static_cast<double>(bytes) / 20.0;
  return 60000 + static_cast<double>(bytes) / 0.5;
}

const std::string& UcxTransport::rdma_resources() const { return worker_->rdma_resources; }

std::string_view UcxTransport::ExplainRemote() const { return explain_[device_direct()]; }

}  // namespace weft::transport::ucx
