// Pool::Impl, the state behind a weft::bm::Pool, shared by the files that implement it: pool.cc
// (joining, attaching peers, the API calls) and pool_follower.cc (the coordinator connection and
// following an elected coordinator). Internal to src/api/bm.
#pragma once

#include <weft/pool.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <thread>

#include "api/bm/device_slice.h"
#include "api/bm/pool_coordinator.h"
#include "api/bm/slice_blobs.h"
#include "base/metrics.h"
#include "engine/engine.h"
#include "gva/layout.h"
#include "gva/segment_table.h"
#include "mem/host_segment.h"
#include "meta/coordinator_client.h"
#include "meta/metrics_server.h"
#include "transport/registry.h"

namespace weft::bm {

struct Pool::Impl {
  Config config;
  gva::Layout layout;
  MetricsRegistry metrics;
  std::unique_ptr<mem::VaReservation> window;  // unified-VA mode only
  std::unique_ptr<mem::HostSegment> own_segment;
  DeviceSlice own_device;  // this peer's device slice (config.device_size > 0)
  std::unique_ptr<gva::SegmentTable> table;
  std::unique_ptr<engine::Engine> engine;
  // The transport that reaches the peers this process does not map (transport=tcp, or any other
  // registry transport with regions), or empty: same-node peers are mapped over shm. Our slices
  // are exported through it, and its blobs are what we advertise for them.
  std::string network;
  PathSliceBlob own_path;
  // Present in the peer that hosts the coordinator (and the pool allocator).
  std::unique_ptr<PoolCoordinator> coordinator;
  // The connection to the coordinator. With an elected (etcd://) coordinator the follower thread
  // replaces it after a failover, so calls take a snapshot under client_mu (Client()) and never
  // use one being destroyed. Null between coordinators, and then client_gone says why.
  mutable std::mutex client_mu;
  std::shared_ptr<meta::CoordinatorClient> client;  // under client_mu
  Status client_gone;                               // under client_mu
  std::string coordinator_address;  // the one we joined (with the real port when we host on tcp)
  // Every address joined, for Pool::coordinator_address(): a deque keeps the references it
  // handed out valid while the follower appends the next leader's (under client_mu).
  std::deque<std::string> joined_addresses;
  uint32_t rank = 0;
  std::string peer_name;  // the name we joined under: a rejoin must use it to get our rank back
  // Bumped (under attach_mu) whenever another client takes over: the peer callbacks of an older
  // one are then ignored, and attach_mu keeps two clients' callbacks from interleaving.
  std::mutex attach_mu;
  uint64_t generation = 0;  // under attach_mu
  // Following an elected coordinator (etcd://): one thread, started after the first join.
  std::thread follower;
  std::mutex follow_mu;
  std::condition_variable follow_cv;
  bool follow_stop = false;  // under follow_mu: Leave wakes the follower and waits for it
  Counter* rejoins = nullptr;
  Counter* rejoin_failures = nullptr;
  // The engine's peer of each rank reached over `network`, so that a rank declared down can be
  // failed in the engine (its copies in flight end with PEER_DOWN) before its pins drain.
  std::mutex remote_mu;
  std::map<uint32_t, engine::PeerId> remote_ids;  // under remote_mu
  std::atomic<bool> left{false};  // read by copy calls on any thread
  std::mutex leave_mu;
  // Every API call holds it shared while it uses the engine, the table or the client; Leave
  // takes it exclusively before tearing them down, so a call on another thread either finishes
  // first or sees `left` and returns CANCELLED (never a freed engine).
  mutable std::shared_mutex api_mu;
  // Serves ScrapeText() at config.metrics_address; declared last so it stops first.
  std::unique_ptr<meta::MetricsServer> metrics_server;
  std::string metrics_address;

  // What a scrape gets: the pool's registry, with the store's and allocator's gauges when this
  // peer hosts the coordinator (whose counters go to the same registry).
  std::string ScrapeText() { return coordinator ? coordinator->MetricsText() : metrics.PrometheusText(); }
  Status ServeMetrics();

  Deadline DefaultDeadline() const { return Deadline::After(Millis(config.deadline_ms)); }
  void* FixedAddressFor(uint32_t r) const {
    return window ? reinterpret_cast<void*>(layout.SliceBase(Medium::kHost, r)) : nullptr;
  }
  // A peer that joined: its slices attached by the transports its blobs allow (the descriptors
  // that came with it are used or closed).
  void AttachPeer(meta::SegmentDescriptor desc, std::vector<net::UniqueFd> fds);
  void AttachThroughPath(const meta::SegmentDescriptor& desc, const Result<PathSliceBlob>& blob);
  void AttachRemoteSlices(const meta::SegmentDescriptor& desc, const PathSliceBlob& blob, engine::PeerId id);
  void AttachPeerHost(const meta::SegmentDescriptor& desc, const Result<ShmSliceBlob>& blob,
                      std::vector<net::UniqueFd>& fds);
  void AttachPeerDevice(const meta::SegmentDescriptor& desc, const Result<CudaSliceBlob>& blob,
                        std::vector<net::UniqueFd>& fds);
  void MarkUnreachable(const meta::SegmentDescriptor& desc, Medium medium, const std::string& why);
  std::string ShmUnusable(const Status& why) const;
  Status CreateOwnDevice();
  // Host memory mapped for the pool is registered with the GPU (cudaHostRegister) so that copies
  // between it and HBM are DMA without staging; the release unregisters before the unmap. A
  // no-op without a GPU; a failed registration is logged and copies are staged by the driver.
  std::function<void()> RegisterWithGpu(void* ptr, uint64_t len, std::function<void()> release);
  void OnPeerGone(uint32_t rank, bool clean);
  void FailCopiesTo(uint32_t rank, const std::string& peer_name);
  // The client callbacks: applied only while their client (`gen`) is the current one.
  void OnClientPeerJoined(uint64_t gen, meta::SegmentDescriptor desc, std::vector<net::UniqueFd> fds);
  void OnClientPeerGone(uint64_t gen, uint32_t rank, bool clean);
  uint64_t NextGeneration();

  // The coordinator client to call through now: UNAVAILABLE during a failover, MISMATCH once the
  // pool gave up following the elected coordinator, CANCELLED after Leave.
  Result<std::shared_ptr<meta::CoordinatorClient>> Client() const;
  void InstallClient(std::shared_ptr<meta::CoordinatorClient> fresh, const std::string& address);
  void DropClient(Status why);

  // Following an elected coordinator (see the comment above StartFollowing).
  void StartFollowing();
  void StopFollowing();
  void FollowLeader();
  bool SleepUnlessStopping(Millis how_long);
  bool Stopping();
  bool LeaderMoved();
  bool Rejoin(const Status& why_lost);
  Status RejoinOnce();
  Result<std::string> ResolveLeader(Deadline deadline) const;
  Status AddOwnSlices(meta::CoordinatorClient& to, Deadline deadline);
  void GiveUp(const Status& why);
  Deadline AttemptDeadline() const;

  // The steps of Pool::Join, in order.
  void ReserveUnifiedVa();
  Status CreateEngine(const transport::Registry& registry);
  Status ExportOwnSlices();
  Status JoinCoordinator(std::string address, JoinMode mode, bool coordinator_on_tcp, int device_fd);
  Result<std::string> HostCoordinator();
  Result<std::unique_ptr<meta::CoordinatorClient>> JoinAt(const std::string& address, bool coordinator_on_tcp,
                                                          int device_fd, uint64_t gen);
  OwnSlices OwnSlicesToAdvertise(bool coordinator_on_tcp, int device_fd) const;
  Status AttachOwnHostSlice();
  Status AttachOwnDeviceSlice();
};

}  // namespace weft::bm
