#include "api/bm/pool_coordinator.h"

#include "api/bm/alloc_service.h"
#include "api/store/protocol.h"
#include "base/clock.h"
#include "net/control_stream.h"

#include <algorithm>
#include <mutex>

namespace weft::bm {
namespace {

store::MasterOptions StoreOptions(const Config& config) {
  store::MasterOptions o;
  o.lease_ttl = Millis(config.store_lease_ttl_ms);
  o.high_watermark = config.store_high_watermark_pct / 100.0;
  o.eviction_ratio = config.store_eviction_pct / 100.0;
  o.put_timeout = Millis(config.store_put_timeout_ms);
  o.soft_pin_ttl = Millis(config.store_soft_pin_ttl_ms);
  return o;
}

// One rank's slice of one medium as `weft status` shows it; zeros when it has none.
wire::StatusUsage UsageOf(const gva::Allocator& allocator, uint32_t rank, gva::Medium medium) {
  auto stats = allocator.Stats(rank, medium);
  if (!stats.ok()) return {};
  return {stats->capacity, stats->used, stats->allocations};
}

}  // namespace

Result<std::unique_ptr<PoolCoordinator>> PoolCoordinator::Start(const Config& config, MetricsRegistry* metrics,
                                                                store::ReplicaWriter write,
                                                                const Durability* durable) {
  WEFT_ASSIGN_OR_RETURN(auto layout, gva::Layout::Make(config.gva_base, config.rank_size, config.max_ranks));
  std::unique_ptr<PoolCoordinator> pc(new PoolCoordinator());
  if (metrics != nullptr) pc->metrics_ = metrics;
  pc->allocator_ = std::make_unique<gva::Allocator>(layout);
  gva::Allocator* allocator = pc->allocator_.get();
  pc->master_ = std::make_unique<store::Master>(*allocator, StoreOptions(config));
  store::Master* master = pc->master_.get();
  WEFT_ASSIGN_OR_RETURN(net::ControlAddress control, net::ParseControlAddress(config.CoordinatorPath()));
  MappedPeerSlices* mapped = nullptr;
  if (!write && !control.tcp) {
    pc->mapped_ = std::make_unique<MappedPeerSlices>(layout);
    mapped = pc->mapped_.get();
    write = [mapped](const store::Replica& r, std::span<const uint8_t> value) { return mapped->Write(r, value); };
  }
  meta::CoordinatorOptions options;
  options.socket_path = config.CoordinatorPath();
  options.pool_name = config.pool_name;
  options.rank_size = config.rank_size;
  options.max_ranks = config.max_ranks;
  options.peer_timeout = Millis(config.peer_timeout_ms);
  options.join_timeout = Millis(config.coordinator_join_timeout_ms);
  options.max_pre_join = config.coordinator_max_pre_join;
  options.listen_address = config.coordinator_listen;
  options.cluster_secret = config.cluster_secret;
  options.metrics = pc->metrics_;
  options.usage = [allocator](uint32_t rank) {
    return meta::RankUsage{UsageOf(*allocator, rank, gva::Medium::kHost),
                           UsageOf(*allocator, rank, gva::Medium::kDevice)};
  };
  if (durable != nullptr) pc->BecomeDurable(*durable, layout, options);
  PoolStateRecorder* recorder = pc->recorder_.get();
  const AllocObserver* alloc_observer = recorder ? &pc->alloc_observer_ : nullptr;
  WEFT_ASSIGN_OR_RETURN(
      pc->coordinator_,
      meta::Coordinator::Start(
          options,
          // One handler, two services: a store call says so in its first byte.
          [allocator, master, alloc_observer, metrics = pc->metrics_, write = std::move(write)](
              uint32_t from, std::span<const uint8_t> request) {
            if (store::IsStoreCall(request)) return store::ServeStore(*master, from, request, metrics, write);
            return ServeAllocator(*allocator, from, request, alloc_observer);
          },
          // A peer that is gone takes its allocations with it, and the store its objects there.
          [allocator, master, mapped, recorder](uint32_t rank, bool) {
            master->DropRank(rank);
            allocator->RemoveSlice(rank, gva::Medium::kHost);
            allocator->RemoveSlice(rank, gva::Medium::kDevice);
            if (mapped) mapped->OnGone(rank);
            if (recorder) recorder->OnGone(rank);
          },
          [mapped, recorder](uint32_t rank, const std::string& peer_name, const wire::TransportBlobs& transports,
                             std::span<const int> fds) {
            if (mapped) mapped->OnJoined(rank, transports, fds);
            if (recorder) recorder->OnJoined(rank, peer_name);
          }));
  return pc;
}

// Restores what the previous master left, holds the members' ranks for them, and from then on
// records every change: the store's through its observer, the allocator's through the service's.
void PoolCoordinator::BecomeDurable(const Durability& durable, const gva::Layout& layout,
                                    meta::CoordinatorOptions& options) {
  restored_ = RestorePoolState(durable.restored, *allocator_, *master_);
  recorder_ = std::make_unique<PoolStateRecorder>(*durable.journal, durable.prefix, layout, durable.restored);
  master_->SetObserver(recorder_->MasterObserver());
  PoolStateRecorder* recorder = recorder_.get();
  alloc_observer_.on_alloc = [recorder](uint64_t gva, uint64_t size) { recorder->OnAlloc(gva, size); };
  alloc_observer_.on_free = [recorder](uint64_t gva) { recorder->OnFree(gva); };
  alloc_observer_.on_add_slice = [recorder](uint32_t rank, gva::Medium medium, uint64_t capacity) {
    recorder->OnAddSlice(rank, medium, capacity);
  };
  for (const auto& [rank, member] : durable.restored.members) {
    if (!member.peer_name.empty()) options.reserved_ranks.emplace(member.peer_name, rank);
  }
  options.reservation_ttl = durable.rejoin_grace;
}

gva::SliceStats PoolCoordinator::AllocatorStats(gva::Medium medium) const {
  gva::SliceStats sum;
  for (const auto& [rank, s] : allocator_->Slices(medium)) {
    sum.capacity += s.capacity;
    sum.used += s.used;
    sum.allocations += s.allocations;
    sum.free_blocks += s.free_blocks;
    sum.largest_free = std::max(sum.largest_free, s.largest_free);
  }
  return sum;
}

namespace {

void SetGauge(MetricsRegistry& m, const std::string& name, const char* help, uint64_t v) {
  m.gauge(name, help)->Set(static_cast<int64_t>(v));
}

void ExportSlices(MetricsRegistry& m, const std::string& medium, const gva::SliceStats& s) {
  const std::string p = "weft_alloc_" + medium;
  SetGauge(m, p + "_capacity_bytes", "Bytes of this medium's slices of every live peer", s.capacity);
  SetGauge(m, p + "_used_bytes", "Of which allocated (after alignment)", s.used);
  SetGauge(m, p + "_allocations", "Live allocations in this medium's slices", s.allocations);
  SetGauge(m, p + "_free_blocks", "Fragments in the free lists of this medium's slices", s.free_blocks);
  SetGauge(m, p + "_largest_free_bytes", "The largest block one allocation could get now", s.largest_free);
}

}  // namespace

// Gauges read when scraped rather than kept up to date on every put: the master and the
// allocator already count, under their own locks, and a scrape is rare next to a put.
void PoolCoordinator::RefreshMetrics() {
  MetricsRegistry& m = *metrics_;
  const store::MasterStats st = master_->Stats();
  SetGauge(m, "weft_store_objects", "Complete objects in memory", st.objects);
  SetGauge(m, "weft_store_on_disk_objects", "Objects evicted from memory, kept on their writer's SSD tier", st.on_disk);
  SetGauge(m, "weft_store_pending_puts", "Puts started and not yet ended or revoked", st.pending_puts);
  SetGauge(m, "weft_store_bytes", "Bytes of the objects in memory, each replica counted", st.bytes);
  SetGauge(m, "weft_store_capacity_bytes", "Host bytes of every slice of the pool", st.capacity);
  SetGauge(m, "weft_store_used_bytes", "Of which allocated (the store's and anyone else's)", st.used);
  SetGauge(m, "weft_store_parked_bytes", "Memory of removed objects still leased to readers", st.parked_bytes);
  // The master's totals, mirrored (Counter::SetTotal): they only grow while it lives.
  m.counter("weft_store_evicted_total", "Objects evicted from memory since the master started")->SetTotal(st.evicted);
  m.counter("weft_store_inline_puts_total", "Small puts the master wrote and ended itself: one round trip for the writer")
      ->SetTotal(st.inline_puts);
  m.counter("weft_store_inline_deferred_total",
            "Small puts the master placed but left to their writer to copy (a slice not mapped in its process, or no "
            "pool handle)")
      ->SetTotal(st.inline_deferred);
  ExportSlices(m, "host", AllocatorStats(gva::Medium::kHost));
  ExportSlices(m, "device", AllocatorStats(gva::Medium::kDevice));
}

std::string PoolCoordinator::MetricsText() {
  std::lock_guard lock(refresh_mu_);  // two scrapes at once must not both add to the counter
  RefreshMetrics();
  return metrics_->PrometheusText();
}

}  // namespace weft::bm
