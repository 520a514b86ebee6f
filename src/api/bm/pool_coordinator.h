// The coordinator of a pool together with the services it hosts: the pool allocator and the
// store's master, which allocates its objects from the same allocator. Hosted inside the first
// peer (Pool::Join) or alone by `weft meta` / `weft store-master`.
#pragma once

#include <memory>
#include <mutex>
#include <string>

#include <weft/config.h>

#include "base/metrics.h"
#include "base/status.h"
#include "api/bm/alloc_service.h"
#include "api/bm/mapped_slices.h"
#include "api/bm/pool_state.h"
#include "api/store/master.h"
#include "gva/allocator.h"
#include "meta/coordinator.h"

namespace weft::bm {

// An elected master's durable state (HA): where its changes go, and what the master before it left.
struct Durability {
  meta::JournalWriter* journal = nullptr;  // not owned; outlives the coordinator
  std::string prefix;                      // StatePrefix(pool_name)
  PoolState restored;
  // How long each restored member's rank is held for it; a member not back by then is gone (its
  // allocations and its replicas with it), as a peer that died.
  std::chrono::milliseconds rejoin_grace{15000};
};

class PoolCoordinator {
 public:
  // ALREADY_EXISTS when a coordinator already answers on config.CoordinatorPath() (unix) or its
  // port is taken (tcp); UNAUTHENTICATED for a tcp:// coordinator without cluster_secret.
  // metrics: where the coordinator's counters go and what MetricsText() renders (the hosting
  // pool's registry); a registry of its own when null.
  // write: how the store's master writes small values itself (kPutInline) into the slices this
  // process maps (the hosting peer passes one). It runs on the coordinator thread and must stay
  // valid as long as the coordinator. A coordinator alone passes none: on a unix socket it then
  // maps the host slices its peers send with their Joins (MappedPeerSlices); on tcp nothing is
  // mapped and inline puts are copied by their writers.
  // durable: an elected master's (HA): first restores `restored` into the allocator and the
  // store, holds the members' ranks for them, then records every change through the journal.
  static Result<std::unique_ptr<PoolCoordinator>> Start(const Config& config, MetricsRegistry* metrics = nullptr,
                                                        store::ReplicaWriter write = {},
                                                        const Durability* durable = nullptr);
  // Where peers join: the unix path, or tcp://host:port with the port actually bound.
  const std::string& socket_path() const { return coordinator_->socket_path(); }
  std::vector<meta::PeerSummary> Peers() const { return coordinator_->Peers(); }
  Result<gva::SliceStats> Stats(uint32_t rank) const { return allocator_->Stats(rank, gva::Medium::kHost); }
  store::MasterStats StoreStats() const { return master_->Stats(); }
  // What was restored at Start (all zero without durability).
  const RestoreSummary& restored() const { return restored_; }
  // Host and device slices of every live peer, summed.
  gva::SliceStats AllocatorStats(gva::Medium medium) const;
  // Reads the store's and the allocator's figures into their gauges (weft_store_*, weft_alloc_*;
  // docs/ops.md), then renders the registry: what a scrape serves. Thread-safe.
  std::string MetricsText();

 private:
  PoolCoordinator() = default;
  void RefreshMetrics();
  void BecomeDurable(const Durability& durable, const gva::Layout& layout, meta::CoordinatorOptions& options);
  MetricsRegistry own_metrics_;  // when Start was given none
  MetricsRegistry* metrics_ = &own_metrics_;
  std::mutex refresh_mu_;
  std::unique_ptr<gva::Allocator> allocator_;          // outlives the coordinator that calls it
  std::unique_ptr<store::Master> master_;              // likewise
  std::unique_ptr<MappedPeerSlices> mapped_;           // likewise; alone on a unix socket only
  std::unique_ptr<PoolStateRecorder> recorder_;        // likewise; elected masters only
  AllocObserver alloc_observer_;                       // feeds recorder_
  RestoreSummary restored_;
  std::unique_ptr<meta::Coordinator> coordinator_;
};

}  // namespace weft::bm
