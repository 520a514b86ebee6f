#include "engine/engine.h"

#include <algorithm>
#include <cctype>

#include "base/log.h"
#include "engine/builtin_transports.h"
#include "engine/peer_slices.h"

namespace weft::engine {

using transport::EndKind;
using transport::Endpoint;
using transport::Locality;
using transport::RouteKey;

namespace {

constexpr uint64_t kPieceAlign = 4096;

struct DirectionEnds {
  const char* name;
  EndKind src;
  EndKind dst;
};
// Indexed by the Direction value.
constexpr DirectionEnds kDirections[kDirectionCount] = {
    {"AUTO", EndKind::kLH, EndKind::kLH},
    {"LH2LH", EndKind::kLH, EndKind::kLH}, {"LH2GH", EndKind::kLH, EndKind::kGH},
    {"GH2LH", EndKind::kGH, EndKind::kLH}, {"GH2GH", EndKind::kGH, EndKind::kGH},
    {"LH2GD", EndKind::kLH, EndKind::kGD}, {"LD2GH", EndKind::kLD, EndKind::kGH},
    {"LD2GD", EndKind::kLD, EndKind::kGD}, {"GH2GD", EndKind::kGH, EndKind::kGD},
    {"GH2LD", EndKind::kGH, EndKind::kLD}, {"GD2GH", EndKind::kGD, EndKind::kGH},
    {"GD2GD", EndKind::kGD, EndKind::kGD}, {"GD2LH", EndKind::kGD, EndKind::kLH},
    {"GD2LD", EndKind::kGD, EndKind::kLD}, {"LH2LD", EndKind::kLH, EndKind::kLD},
    {"LD2LH", EndKind::kLD, EndKind::kLH}, {"LD2LD", EndKind::kLD, EndKind::kLD},
};

EndKind WantedSrc(Direction d) { return kDirections[static_cast<int>(d)].src; }
EndKind WantedDst(Direction d) { return kDirections[static_cast<int>(d)].dst; }

}  // namespace

const char* DirectionName(Direction d) {
  const int i = static_cast<int>(d);
  return i < kDirectionCount ? kDirections[i].name : "?";
}

Direction DirectionOf(EndKind src, EndKind dst) {
  for (int i = 1; i < kDirectionCount; ++i)
    if (kDirections[i].src == src && kDirections[i].dst == dst) return static_cast<Direction>(i);
  return Direction::kAuto;  // unreachable: the table covers all sixteen pairs
}

Result<Direction> ParseDirection(const std::string& text) {
  std::string up;
  for (char c : text) up += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (int i = 0; i < kDirectionCount; ++i)
    if (up == kDirections[i].name) return static_cast<Direction>(i);
  return Error(Code::kInvalidArgument,
               "unknown direction '{}' (use AUTO or SRC2DST with LH, LD, GH or GD on each side, e.g. GD2LH)", text);
}

struct Engine::Resolved {
  RouteKey key;
  gva::SegmentTable::Pin dst_pin;
  gva::SegmentTable::Pin src_pin;
  Endpoint dst;
  Endpoint src;
  transport::Transport* path = nullptr;
};

// A series per (path, source kind, destination kind) that has carried a copy: made on first use
// (the registry's lock, once), then found lock-free. Most of the 16 kinds never occur on a
// path, so making them all up front would fill the scrape with zeros.
struct Engine::PathMetrics {
  struct Series {
    std::atomic<Counter*> copies{nullptr};
    std::atomic<Counter*> bytes{nullptr};
  };
  MetricsRegistry& registry;
  std::vector<const transport::Transport*> paths;  // the engine's transports, then the peer path
  std::unique_ptr<Series[]> series;                // paths.size() x 16

  Series& Find(const transport::Transport* path, const transport::RouteKey& key) {
    size_t slot = 0;
    while (slot + 1 < paths.size() && paths[slot] != path) ++slot;  // unknown: the last slot's
    Series& s = series[slot * 16 + static_cast<size_t>(key.src) * 4 + static_cast<size_t>(key.dst)];
    if (s.bytes.load(std::memory_order_acquire) == nullptr) {
      const std::string labels = fmt::format("{{path=\"{}\",dir=\"{}2{}\"}}", path ? path->name() : "?",
                                             transport::EndKindName(key.src), transport::EndKindName(key.dst));
      s.copies.store(registry.counter("weft_copy_path_copies_total" + labels,
                                      "Copies by path and by the kinds of their ends (dir: source2destination)"),
                     std::memory_order_release);
      s.bytes.store(registry.counter("weft_copy_path_bytes_total" + labels,
                                     "Bytes by path and by the kinds of their ends (dir: source2destination)"),
                    std::memory_order_release);
    }
    return s;
  }
};

void Engine::CountPath(const transport::Transport* path, const transport::RouteKey& key, uint64_t copies,
                       uint64_t bytes) {
  PathMetrics::Series& s = path_metrics_->Find(path, key);
  s.copies.load(std::memory_order_acquire)->Add(copies);
  s.bytes.load(std::memory_order_acquire)->Add(bytes);
}

namespace {
transport::TransportSet PoolTransports(const EngineOptions& options, MetricsRegistry& metrics) {
  transport::TransportContext context;
  context.cuda_kernel_sms = options.cuda_kernel_sms;
  context.metrics = &metrics;
  auto set = BuiltinTransports().Create(options.transports, context);
  if (set.ok()) return std::move(*set);
  WEFT_LOG_WARN("engine transports '{}': {}; using all built-in ones", options.transports, set.status().ToString());
  auto all = BuiltinTransports().Create("auto", context);
  return std::move(*all);
}
}  // namespace

Engine::Engine(EngineOptions options, const gva::SegmentTable& table, MetricsRegistry& metrics)
    : Engine(options, &table, metrics, PoolTransports(options, metrics)) {}

Engine::Engine(EngineOptions options, const gva::SegmentTable* table, MetricsRegistry& metrics,
               transport::TransportSet transports)
    : options_(options),
      table_(table),
      transports_(std::move(transports.transports)),
      absent_(std::move(transports.absent)),
      pool_(std::max(1u, options.threads - (options.threads > 1 ? 1 : 0))) {
  if (options_.threads == 0) options_.threads = 1;
  if (options_.split_bytes < kPieceAlign) options_.split_bytes = kPieceAlign;
  if (table_) peer_path_ = std::make_unique<PeerSlicePath>(*this, options_.remote_timeout_ms);
  if (auto it = absent_.find("cuda"); it != absent_.end()) WEFT_LOG_INFO("device paths off: {}", it->second);
  path_metrics_ = std::make_unique<PathMetrics>(PathMetrics{metrics, {}, nullptr});
  for (const auto& t : transports_) path_metrics_->paths.push_back(t.get());
  path_metrics_->paths.push_back(peer_path_.get());
  path_metrics_->series = std::make_unique<PathMetrics::Series[]>(path_metrics_->paths.size() * 16);
  copies_ = metrics.counter("weft_copies_total", "Copies submitted to the engine");
  bytes_ = metrics.counter("weft_copy_bytes_total", "Bytes copied by the engine");
  failures_ = std::make_unique<CopyFailures>(metrics);
  latency_ns_ = metrics.histogram("weft_copy_latency_ns", "Latency of synchronous copies in nanoseconds (copies below split_bytes: 1 in 16 sampled)");
  batch_stages_ = {
      metrics.histogram("weft_remote_batch_plan_ns", "Remote batches (2+ requests): choosing paths, splitting into pieces"),
      metrics.histogram("weft_remote_batch_copy_ns", "Remote batches (2+ requests): the copies, start to last piece done"),
      metrics.histogram("weft_remote_batch_finish_ns", "Remote batches (2+ requests): releasing regions, collecting results")};
  metrics.gauge("weft_engine_copy_threads", "Threads that copy pieces of split copies and remote batches")
      ->Set(static_cast<int64_t>(pool_.size()));
  Gauge* queued = metrics.gauge("weft_engine_copy_tasks_queued", "Pieces waiting for one of the engine's copy threads");
  Gauge* busy = metrics.gauge("weft_engine_copy_threads_busy", "Copy threads running a piece");
  load_hook_ = metrics.OnScrape([this, queued, busy] {
    const WorkerPool::Load load = pool_.load();
    queued->Set(static_cast<int64_t>(load.queued));
    busy->Set(static_cast<int64_t>(load.running));
  });
}

bool Engine::HasCapability(uint32_t caps) const {
  for (const auto& t : transports_)
    if ((t->capabilities() & caps) == caps) return true;
  return false;
}

std::string Engine::AbsentReason(std::string_view name) const {
  auto it = absent_.find(std::string(name));
  return it == absent_.end() ? std::string() : it->second;
}

Engine::~Engine() = default;

transport::Transport* Engine::FindTransport(std::string_view name) const {
  for (const auto& t : transports_)
    if (t->name() == name) return t.get();
  return nullptr;
}

Status Engine::RegisterHostMemory(void* ptr, uint64_t len) {
  for (const auto& t : transports_) WEFT_RETURN_IF_ERROR(t->RegisterHost(ptr, len));
  return OkStatus();
}

void Engine::UnregisterHostMemory(void* ptr) {
  for (const auto& t : transports_) t->UnregisterHost(ptr);
}

Status Engine::CopyOnStream(uint64_t dst, uint64_t src, uint64_t len, void* stream, Direction dir) {
  CopyRequest r{dst, src, len};
  return CopyBatchOnStream({&r, 1}, stream, dir);
}

Status Engine::CopyBatchOnStream(std::span<const CopyRequest> requests, void* stream, Direction dir) {
  // The pins live until the stream has passed the copies (the transport's release callback).
  auto pins = std::make_shared<std::vector<gva::SegmentTable::Pin>>();
  std::vector<transport::CopyItem> items;
  transport::Transport* path = nullptr;
  transport::ClassifyMemo memos[2];
  for (size_t i = 0; i < requests.size(); ++i) {
    copies_->Add();
    auto resolved = Resolve(requests[i], dir, memos);
    if (!resolved.ok()) {
      return Failed(resolved.status().Annotate(fmt::format("copy {}", i)));
    }
    if (path && resolved->path != path)
      return Error(Code::kNotSupported, "copy {} takes path {} but the others take {}: one stream batch takes one path",
                   i, resolved->path->name(), path->name());
    path = resolved->path;
    if (requests[i].len == 0) continue;
    bytes_->Add(requests[i].len);
    CountPath(path, resolved->key, 1, requests[i].len);
    items.push_back(transport::CopyItem{resolved->dst, resolved->src, requests[i].len});
    pins->push_back(std::move(resolved->dst_pin));
    pins->push_back(std::move(resolved->src_pin));
  }
  if (items.empty()) return OkStatus();
  transport::StreamOps* ops = path->stream_ops();
  if (!ops || !(path->capabilities() & transport::kCapStreamOrdering)) {
    return Failed(Error(Code::kNotSupported, "path {} cannot order copies on a caller's stream", path->name()));
  }
  Status s = ops->Enqueue(items, stream, [pins]() mutable { pins->clear(); });
  return Failed(std::move(s));
}

transport::Transport* Engine::Choose(const RouteKey& key, uint64_t len) const {
  // A slice not mapped here is reached through the peer's advertised regions, whatever else is.
  if (key.locality == Locality::kRemoteNode && peer_path_) return peer_path_.get();
  transport::Transport* best = nullptr;
  double best_cost = 0;
  for (const auto& t : transports_) {
    if (!t->Serves(key)) continue;
    double c = t->CostNanos(key, len);
    if (!best || c < best_cost) {
      best = t.get();
      best_cost = c;
    }
  }
  return best;
}

Result<Engine::Resolved> Engine::Resolve(const CopyRequest& r, Direction dir, transport::ClassifyMemo* memos,
                                         std::optional<uint64_t> src_len) const {
  static const gva::Layout kNoPool{};
  const gva::Layout& layout = table_ ? table_->layout() : kNoPool;
  Resolved out;
  bool remote = false;
  bool other_node = false;  // an end that is not mapped here: only a network path reaches it
  auto resolve_end = [&](uint64_t addr, uint64_t len, const char* which, EndKind& kind, Endpoint& ep,
                         gva::SegmentTable::Pin& pin, transport::ClassifyMemo* memo) -> Status {
    if (addr == 0) return Error(Code::kInvalidArgument, "{} is a null pointer", which);
    if (auto loc = layout.Decode(addr)) {
      kind = loc->medium == gva::Medium::kHost ? EndKind::kGH : EndKind::kGD;
      auto p = table_->Resolve(addr, len);
      if (!p.ok()) return p.status().Annotate(which);
      pin = std::move(*p);
      ep = Endpoint{pin.ptr(), addr, loc->rank};
      ep.device = pin.device();  // a device slice's GPU, known at attach: no driver query
      ep.mapping_id = pin.mapping_id();
      ep.peer = pin.remote_peer();
      remote = remote || !pin.local();
      other_node = other_node || pin.ptr() == nullptr;
      return OkStatus();
    }
    if (len > UINT64_MAX - addr)
      return Error(Code::kInvalidArgument, "{} {:#x} + {} bytes wraps around the address space", which, addr, len);
    kind = EndKind::kLH;
    ep = Endpoint{reinterpret_cast<uint8_t*>(addr), 0, 0};
    // Device memory behind a plain pointer is told apart by the transport that knows it (CUDA).
    for (const auto& t : transports_) {
      auto claim = t->ClassifyLocal(addr, len, memo);
      if (!claim) continue;
      if (!claim->ok()) return claim->status().Annotate(which);
      kind = (*claim)->kind;
      ep.device = (*claim)->device;
      ep.host = (*claim)->host;
      break;
    }
    return OkStatus();
  };
  WEFT_RETURN_IF_ERROR(resolve_end(r.dst, r.len, "dst", out.key.dst, out.dst, out.dst_pin, memos ? &memos[0] : nullptr));
  WEFT_RETURN_IF_ERROR(resolve_end(r.src, src_len.value_or(r.len), "src", out.key.src, out.src, out.src_pin,
                                   memos ? &memos[1] : nullptr));
  if (dir != Direction::kAuto && (out.key.src != WantedSrc(dir) || out.key.dst != WantedDst(dir)))
    return Error(Code::kInvalidArgument, "direction {} was given but the addresses make it {}2{}", DirectionName(dir),
                 transport::EndKindName(out.key.src), transport::EndKindName(out.key.dst));
  out.key.locality = other_node ? Locality::kRemoteNode : remote ? Locality::kSameNode : Locality::kSameProcess;
  out.path = Choose(out.key, r.len);
  if (!out.path)
    return Error(Code::kNotSupported, "no path serves {} -> {} ({}) on this machine",
                 transport::EndKindName(out.key.src), transport::EndKindName(out.key.dst),
                 transport::LocalityName(out.key.locality));
  if (options_.log_paths)
    WEFT_LOG_INFO("copy {} B {:#x} ({}) -> {:#x} ({}) via {}", r.len, r.src, transport::EndKindName(out.key.src), r.dst,
                  transport::EndKindName(out.key.dst), out.path->name());
  return out;
}

namespace {
// Bytes from a base to the end of page `max` (the extent a copy of pages 0..max reaches).
Result<uint64_t> PageExtent(uint64_t page_bytes, uint32_t max, const char* which) {
  const uint64_t pages = uint64_t{max} + 1;
  if (page_bytes > UINT64_MAX / pages)
    return Error(Code::kOutOfRange, "copy pages: {} page {} × {} bytes lies past any address", which, max, page_bytes);
  return pages * page_bytes;
}
}  // namespace

Result<PageExtents> ScanPages(uint64_t page_bytes, std::span<const uint32_t> dst_pages,
                              std::span<const uint32_t> src_pages) {
  if (dst_pages.size() != src_pages.size())
    return Error(Code::kInvalidArgument, "copy pages: {} destination pages but {} source pages; give one of each per page",
                 dst_pages.size(), src_pages.size());
  if (page_bytes == 0) return Error(Code::kInvalidArgument, "copy pages: the page size is zero");
  if (dst_pages.empty()) return PageExtents{};
  // Indices are unsigned: only the largest matters. Plain loops the compiler vectorises.
  uint32_t dmax = 0, smax = 0;
  for (uint32_t v : dst_pages) dmax = std::max(dmax, v);
  for (uint32_t v : src_pages) smax = std::max(smax, v);
  WEFT_ASSIGN_OR_RETURN(uint64_t d, PageExtent(page_bytes, dmax, "destination"));
  WEFT_ASSIGN_OR_RETURN(uint64_t s, PageExtent(page_bytes, smax, "source"));
  return PageExtents{d, s};
}

Status Engine::CopyPagesDeviceIndexed(uint64_t dst_base, uint64_t src_base, uint64_t page_bytes,
                                      const uint32_t* device_pairs, size_t count, uint32_t max_dst_index,
                                      uint32_t max_src_index, Direction dir) {
  if (page_bytes == 0) return Error(Code::kInvalidArgument, "copy pages: the page size is zero");
  if (count > 0 && device_pairs == nullptr)
    return Error(Code::kInvalidArgument, "copy pages: {} index pairs at a null pointer", count);
  WEFT_ASSIGN_OR_RETURN(uint64_t dst_extent, PageExtent(page_bytes, max_dst_index, "destination"));
  WEFT_ASSIGN_OR_RETURN(uint64_t src_extent, PageExtent(page_bytes, max_src_index, "source"));
  transport::PageCopy pc;
  pc.page_bytes = page_bytes;
  pc.dst_extent = dst_extent;
  pc.src_extent = src_extent;
  pc.device_pairs = device_pairs;
  pc.count = count;
  return RunPages(dst_base, src_base, std::move(pc), dir, nullptr);
}

Status Engine::CopyPages(uint64_t dst_base, uint64_t src_base, uint64_t page_bytes, std::span<const uint32_t> dst_pages,
                         std::span<const uint32_t> src_pages, Direction dir, void* stream) {
  WEFT_ASSIGN_OR_RETURN(PageExtents ext, ScanPages(page_bytes, dst_pages, src_pages));
  transport::PageCopy pc;
  pc.page_bytes = page_bytes;
  pc.dst_extent = ext.dst;
  pc.src_extent = ext.src;
  pc.dst_pages = dst_pages;
  pc.src_pages = src_pages;
  pc.count = dst_pages.size();
  return RunPages(dst_base, src_base, std::move(pc), dir, stream);
}

Status Engine::RunPages(uint64_t dst_base, uint64_t src_base, transport::PageCopy pc, Direction dir, void* stream) {
  if (!HasCapability(transport::kCapPageBatches))
    return Error(Code::kNotSupported, "copy pages runs on a GPU page kernel and this process has no path with one "
                 "({}); use CopyBatch", AbsentReason("cuda").empty() ? "none selected" : AbsentReason("cuda"));
  if (pc.count == 0) return OkStatus();
  copies_->Add(pc.count);
  // Both ends at once over the extents the indices reach: an index past an end's memory is
  // OUT_OF_RANGE here, before anything is launched.
  auto resolved = Resolve(CopyRequest{dst_base, src_base, pc.dst_extent}, dir, nullptr, pc.src_extent);
  if (!resolved.ok()) {
    return Failed(resolved.status().Annotate("copy pages"));
  }
  pc.dst = resolved->dst;
  pc.src = resolved->src;
  transport::StreamOps* ops = resolved->path->stream_ops();
  if (!ops || !(resolved->path->capabilities() & transport::kCapPageBatches)) {
    return Failed(
        Error(Code::kNotSupported, "path {} has no page-batch copy; use CopyBatch", resolved->path->name()));
  }
  Status s;
  if (stream) {
    // The pins live until the stream has passed the copy.
    auto pins = std::make_shared<std::pair<gva::SegmentTable::Pin, gva::SegmentTable::Pin>>(
        std::move(resolved->dst_pin), std::move(resolved->src_pin));
    s = ops->CopyPages(pc, stream, [pins]() mutable { *pins = {}; });
  } else {
    s = ops->CopyPages(pc, nullptr, nullptr);
  }
  if (!s.ok()) return Failed(std::move(s));
  bytes_->Add(pc.count * pc.page_bytes);
  CountPath(resolved->path, resolved->key, pc.count, pc.count * pc.page_bytes);
  return s;
}

Result<RouteInfo> Engine::Route(uint64_t dst, uint64_t src, uint64_t len, Direction dir) const {
  auto r = Resolve(CopyRequest{dst, src, len}, dir);
  if (!r.ok()) return r.status();
  RouteInfo info{r->key.src, r->key.dst, r->key.locality, std::string(r->path->name()),
                 std::string(r->path->Explain(r->key))};
  if (r->path != peer_path_.get() || !peer_path_) return info;
  // Named by the transport the remote op takes.
  WEFT_ASSIGN_OR_RETURN(RouteInfo via, RouteRemote(RemoteRequestOf(r->dst, r->src, len)));
  info.path = via.path;
  info.reason = via.reason;
  if (r->dst.peer && r->src.peer) info.reason += " (both ends remote: bounced through this process)";
  return info;
}

std::shared_ptr<CopyJob> Engine::Plan(std::span<const CopyRequest> requests, Direction dir, Deadline deadline) {
  auto job = std::make_shared<CopyJob>(requests.size(), deadline);
  job->CountFailuresIn(failures_.get());
  transport::ClassifyMemo memos[2];  // KV batches touch the same two allocations again and again
  for (size_t i = 0; i < requests.size(); ++i) {
    const CopyRequest& r = requests[i];
    copies_->Add();
    auto resolved = Resolve(r, dir, memos);
    if (!resolved.ok()) {  // counted with the job's other failures when it completes
      job->Fail(i, resolved.status());
      continue;
    }
    bytes_->Add(r.len);
    CountPath(resolved->path, resolved->key, 1, r.len);
    // A batching transport (cuda) spreads a large copy over its own streams: no split here.
    AddPieces(*job, i, resolved->path, resolved->dst, resolved->src, r.len);
    job->KeepPinned(std::move(resolved->dst_pin));
    job->KeepPinned(std::move(resolved->src_pin));
  }
  return job;
}

void Engine::AddPieces(CopyJob& job, size_t entry, transport::Transport* path, const Endpoint& dst,
                       const Endpoint& src, uint64_t len) const {
  uint64_t pieces = len >= options_.split_bytes && !path->batches() ? options_.threads : 1;
  uint64_t chunk = (len / pieces + kPieceAlign - 1) / kPieceAlign * kPieceAlign;
  if (chunk == 0) chunk = len;
  for (uint64_t off = 0; off < len || (len == 0 && off == 0); off += chunk) {
    uint64_t n = std::min(chunk, len - off);
    Endpoint d = dst, s = src;
    d.mapped += off;
    d.gva = d.gva ? d.gva + off : 0;
    s.mapped += off;
    s.gva = s.gva ? s.gva + off : 0;
    job.AddPiece(Piece{entry, path, d, s, n});
    if (len == 0) break;
  }
}

void Engine::Start(const std::shared_ptr<CopyJob>& job, bool caller_helps) {
  size_t runners = std::min<size_t>(job->piece_count(), options_.threads);
  if (runners == 0) {
    job->Run();  // nothing to copy: completes at once
    return;
  }
  size_t submitted = caller_helps ? runners - 1 : runners;
  for (size_t i = 0; i < submitted; ++i) pool_.Submit([job] { job->Run(); });
  if (caller_helps) job->Run();
}

Status Engine::Copy(uint64_t dst, uint64_t src, uint64_t len, Direction dir, Deadline deadline) {
  // Copies run inline on the caller's thread (no job, no queue, no allocation) unless they are
  // large copies on a CPU path, which are split over the copy threads. Latency is sampled for
  // small copies (1 in 16): two clock reads cost as much as a 4 KiB memcpy here.
  const bool large = len >= options_.split_bytes;
  const bool sample = large || sample_tick_.fetch_add(1, std::memory_order_relaxed) % 16 == 0;
  const uint64_t t0 = sample ? NowNanos() : 0;
  auto resolved = Resolve(CopyRequest{dst, src, len}, dir);
  if (!resolved.ok()) {
    copies_->Add();
    return Failed(resolved.status());
  }
  if (large && !resolved->path->batches()) {
    // Split over the copy threads; Plan resolves again (nothing next to the copy) and counts it.
    resolved->dst_pin = {};  // Plan takes pins of its own
    resolved->src_pin = {};
    CopyRequest r{dst, src, len};
    auto job = Plan({&r, 1}, dir, deadline);
    Start(job, /*caller_helps=*/true);
    job->WaitUntil(Deadline::Never());  // the caller ran pieces itself; others are in flight
    latency_ns_->Observe(NowNanos() - t0);
    return job->results()[0];
  }
  // A device or network path takes a large copy whole (it spreads it over its own streams or
  // lanes): splitting it here would only add a job's set-up to its latency.
  copies_->Add();
  if (deadline.expired()) {
    return Failed(Error(Code::kTimeout, "the deadline passed before the copy started"));
  }
  Status s = len ? resolved->path->Copy(resolved->dst, resolved->src, len) : OkStatus();
  if (s.ok()) {
    bytes_->Add(len);
    CountPath(resolved->path, resolved->key, 1, len);
  } else {
    failures_->Count(s);
  }
  if (sample) latency_ns_->Observe(NowNanos() - t0);
  return s;
}

CopyHandle Engine::CopyAsync(uint64_t dst, uint64_t src, uint64_t len, Direction dir, Deadline deadline) {
  CopyRequest r{dst, src, len};
  return CopyBatchAsync({&r, 1}, dir, deadline);
}

std::vector<Status> Engine::CopyBatch(std::span<const CopyRequest> requests, Direction dir, Deadline deadline) {
  auto job = Plan(requests, dir, deadline);
  Start(job, /*caller_helps=*/true);
  job->WaitUntil(Deadline::Never());
  return job->results();
}

CopyHandle Engine::CopyBatchAsync(std::span<const CopyRequest> requests, Direction dir, Deadline deadline) {
  auto job = Plan(requests, dir, deadline);
  Start(job, /*caller_helps=*/false);
  return CopyHandle(job);
}

}  // namespace weft::engine

// The public copy types (include/weft/copy.h): their state is the engine's CopyJob.
namespace weft {

using engine::CopyJob;

std::string RouteInfo::ToString() const {
  return fmt::format("{} -> {} ({}) via {}: {}", transport::EndKindName(src_kind), transport::EndKindName(dst_kind),
                     transport::LocalityName(locality), path, reason);
}

Status CopyHandle::Wait(Deadline deadline) const {
  if (!job_) return Error(Code::kInvalidArgument, "waiting on an empty copy handle");
  if (!job_->WaitUntil(deadline))
    return Error(Code::kTimeout, "the copy did not complete before the deadline; it goes on, wait again or poll");
  for (const Status& s : job_->results())
    if (!s.ok()) return s;
  return OkStatus();
}

CopyHandle CopyHandle::Failed(size_t copies, const Status& status) {
  auto job = std::make_shared<CopyJob>(copies, Deadline::Never());
  for (size_t i = 0; i < copies; ++i) job->Fail(i, status);
  job->Run();  // no pieces: completes at once
  return CopyHandle(std::move(job));
}

std::optional<Status> CopyHandle::Poll() const {
  if (!job_) return Error(Code::kInvalidArgument, "polling an empty copy handle");
  if (!job_->done()) return std::nullopt;
  return Wait(Deadline::Never());
}

std::vector<Status> CopyHandle::Results() const {
  if (!job_ || !job_->done()) return {};
  return job_->results();
}

}  // namespace weft
