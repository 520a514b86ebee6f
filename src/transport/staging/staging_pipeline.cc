#include "transport/staging/staging_pipeline.h"

#include <algorithm>
#include <new>

namespace weft::transport {

namespace {

constexpr std::align_val_t kPlainAlign{4096};
// Threads that run the device copies of every pass of one pipeline. A pass's copies run one at a
// time and never wait on the network, so concurrent passes share these threads without one
// holding a thread while it waits for its own next round.
constexpr unsigned kCopyThreads = 2;

// Waits on cv until pred holds or the deadline passes (false). A deadline of Never must not go
// through wait_until(time_point::max()), which overflows in some standard libraries.
template <class Pred>
bool WaitFor(std::condition_variable& cv, std::unique_lock<std::mutex>& lk, Deadline deadline, Pred pred) {
  if (deadline.never()) {
    cv.wait(lk, pred);
    return true;
  }
  return cv.wait_until(lk, deadline.at(), pred);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// BouncePool

BouncePool::BouncePool(uint64_t buffer_bytes, size_t max_buffers, HostBufferAllocator alloc)
    : buffer_bytes_(buffer_bytes), max_buffers_(max_buffers), alloc_(std::move(alloc)) {}

BouncePool::~BouncePool() {
  for (uint8_t* p : all_) {
    if (alloc_.free) alloc_.free(p, buffer_bytes_);
    else if (!alloc_.alloc) ::operator delete(p, kPlainAlign);
  }
}

bool BouncePool::Ensure(size_t count, Status* error) {
  while (free_.size() < count) {
    void* p = nullptr;
    if (alloc_.alloc) {
      auto got = alloc_.alloc(buffer_bytes_);
      if (!got.ok()) {
        *error = got.status().Annotate(fmt::format("allocating a {}-byte staging buffer", buffer_bytes_));
        return false;
      }
      p = *got;
    } else {
      p = ::operator new(buffer_bytes_, kPlainAlign, std::nothrow);
      if (!p) {
        *error = Error(Code::kPoolFull, "cannot allocate a {}-byte staging buffer: host memory exhausted",
                       buffer_bytes_);
        return false;
      }
    }
    all_.push_back(static_cast<uint8_t*>(p));
    free_.push_back(static_cast<uint8_t*>(p));
  }
  return true;
}

Result<std::vector<uint8_t*>> BouncePool::Acquire(size_t count, Deadline deadline) {
  if (count == 0 || count > max_buffers_)
    return Error(Code::kInvalidArgument, "{} staging buffers asked for; the pool holds 1 to {}", count, max_buffers_);
  std::unique_lock lk(mu_);
  // Enough when the free ones plus those not yet allocated cover the request.
  auto enough = [&] { return free_.size() + (max_buffers_ - all_.size()) >= count; };
  if (!WaitFor(freed_, lk, deadline, enough))
    return Error(Code::kTimeout, "waited until the deadline for {} staging buffers ({} of {} in use by other "
                 "transfers)", count, all_.size() - free_.size(), max_buffers_);
  Status error;
  if (!Ensure(count, &error)) return error;
  std::vector<uint8_t*> out(free_.end() - static_cast<ptrdiff_t>(count), free_.end());
  free_.resize(free_.size() - count);
  acquired_ += count;
  return out;
}

uint8_t* BouncePool::TryAcquire() {
  std::lock_guard lk(mu_);
  if (free_.empty() && all_.size() >= max_buffers_) return nullptr;
  Status error;
  if (!Ensure(1, &error)) return nullptr;
  uint8_t* p = free_.back();
  free_.pop_back();
  ++acquired_;
  return p;
}

void BouncePool::Release(std::span<uint8_t* const> buffers) {
  {
    std::lock_guard lk(mu_);
    free_.insert(free_.end(), buffers.begin(), buffers.end());
  }
  freed_.notify_all();
}

BouncePool::Stats BouncePool::stats() const {
  std::lock_guard lk(mu_);
  return Stats{all_.size(), all_.size() - free_.size(), acquired_};
}

// ---------------------------------------------------------------------------------------------
// StagingPipeline

namespace {

Status CheckOptions(const StagingOptions& o) {
  if (o.slice_bytes < 4096 || o.slice_bytes > (64ull << 20))
    return Error(Code::kInvalidArgument, "staging slice_bytes {} is outside 4 KiB .. 64 MiB", o.slice_bytes);
  if (o.buffers < 1 || o.buffers > o.max_buffers)
    return Error(Code::kInvalidArgument, "staging buffers {} must be 1 .. max_buffers ({})", o.buffers,
                 o.max_buffers);
  return OkStatus();
}

}  // namespace

StagingPipeline::StagingPipeline(StagingOptions options, DeviceStagingOps ops)
    : options_(options),
      ops_(std::move(ops)),
      invalid_(CheckOptions(options_)),
      pool_(options_.slice_bytes, std::max<size_t>(options_.max_buffers, 1), ops_.host) {}

StagingPipeline::~StagingPipeline() = default;

WorkerPool& StagingPipeline::copiers() {
  // Created on first use: a pipeline that never stages more than one buffer's worth (every
  // process without a GPU) starts no threads.
  std::call_once(copiers_once_, [this] { copiers_ = std::make_unique<WorkerPool>(kCopyThreads); });
  return *copiers_;
}

StagingStats StagingPipeline::stats() const {
  std::lock_guard lk(stats_mu_);
  return stats_;
}

std::vector<Status> StagingPipeline::Run(std::span<const StagedRequest> requests, const NetworkRound& net,
                                         Deadline deadline, StagingStats* stats) {
  std::vector<Status> results(requests.size());
  Status refuse = !invalid_.ok() ? invalid_
                  : !ops_ ? Error(Code::kNotSupported, "a local end is device memory and this tcp path was given "
                                                      "no device copy (DeviceStagingOps; there is none without a "
                                                      "usable GPU): copy it to host memory first")
                          : OkStatus();
  for (size_t i = 0; i < requests.size(); ++i) {
    if (!refuse.ok() && requests[i].len > 0) results[i] = refuse;
    else if (requests[i].len > 0 && !requests[i].device)
      results[i] = Error(Code::kInvalidArgument, "staged request {} has no device pointer", i);
  }
  StagingStats local;
  local.runs = 1;
  if (refuse.ok()) {
    RunPass(requests, /*to_network=*/true, net, deadline, results, local);
    RunPass(requests, /*to_network=*/false, net, deadline, results, local);
  }
  auto add = [](StagingStats& to, const StagingStats& from) {
    to.runs += from.runs;
    to.rounds += from.rounds;
    to.overlapped_rounds += from.overlapped_rounds;
    to.pieces += from.pieces;
    to.bytes += from.bytes;
  };
  if (stats) add(*stats, local);
  std::lock_guard lk(stats_mu_);
  add(stats_, local);
  return results;
}

// One pass (the WRITEs or the READs of a Run) over its bounce buffers. The network side runs on
// the caller's thread; the device copies run in order, one at a time, as tasks on the pipeline's
// copy threads. A copy task never waits: when the next fill may not be copied yet it ends, and
// the network side posts it again once a round has made room (Kick).
struct StagingPipeline::Pass {
  Pass(std::span<const StagedRequest> requests_in, bool to_network_in, const NetworkRound& net_in,
       Deadline deadline_in, StagingPipeline& pipeline_in, std::vector<Status>& results_in, StagingStats& local_in)
      : requests(requests_in),
        to_network(to_network_in),
        net(net_in),
        deadline(deadline_in),
        pipeline(pipeline_in),
        results(results_in),
        local(local_in) {}

  std::span<const StagedRequest> requests;
  bool to_network;
  const NetworkRound& net;
  Deadline deadline;
  StagingPipeline& pipeline;  // its device copy, and its copy threads (made on first use)
  std::vector<Status>& results;
  StagingStats& local;
  // Fill j: the pieces in buffer j % nbuf; `host` holds the offset in the buffer until buffers
  // are known.
  std::vector<std::vector<StagedPiece>> fills;
  size_t nbuf = 0;
  size_t round_cap = 0;

  std::mutex mu;  // guards results and the counters below while a copy task runs
  std::condition_variable cv;
  size_t started = 0;  // fills whose device copy has begun
  size_t copied = 0;   // fills whose device copy is done (or skipped)
  size_t netted = 0;   // fills whose network round is done
  bool stop = false;
  bool copy_posted = false;  // a copy task is queued or running

  // The pass's bytes packed into fills of at most cap bytes, in request order.
  void Plan(uint64_t cap) {
    uint64_t used = cap;
    for (size_t i = 0; i < requests.size(); ++i) {
      const StagedRequest& r = requests[i];
      if (r.to_network != to_network || r.len == 0 || !results[i].ok()) continue;
      for (uint64_t off = 0; off < r.len;) {
        if (used == cap) {
          fills.emplace_back();
          used = 0;
        }
        uint64_t take = std::min(cap - used, r.len - off);
        fills.back().push_back(StagedPiece{i, off, take, reinterpret_cast<uint8_t*>(used)});
        used += take;
        off += take;
      }
    }
  }

  void PlaceIn(const std::vector<uint8_t*>& bufs) {
    nbuf = bufs.size();
    for (size_t j = 0; j < fills.size(); ++j)
      for (auto& p : fills[j]) p.host = bufs[j % nbuf] + reinterpret_cast<uintptr_t>(p.host);
    // A round carries up to half the buffers, so the copy always has the other half to work in.
    round_cap = std::max<size_t>(1, nbuf / 2);
  }

  bool Failed(size_t request) {
    std::lock_guard lk(mu);
    return !results[request].ok();
  }
  void Fail(size_t request, const Status& s) {
    std::lock_guard lk(mu);
    if (results[request].ok()) results[request] = s;
  }

  Status CopyPiece(const StagedPiece& p, uint64_t len) {
    uint8_t* dev = requests[p.request].device + p.offset;
    const auto& copy = pipeline.ops_.copy;
    return to_network ? copy(p.host, dev, len) : copy(dev, p.host, len);
  }

  // Pieces adjacent both on the device and in the buffer (pages of a KV block, say) go in one
  // copy: one call per page would cost more than the bytes on a GPU.
  bool Adjacent(const StagedPiece& a, const StagedPiece& b) const {
    return requests[b.request].device + b.offset == requests[a.request].device + a.offset + a.len &&
           b.host == a.host + a.len;
  }

  void CopyFill(size_t j) {
    const auto& f = fills[j];
    for (size_t i = 0; i < f.size();) {
      if (Failed(f[i].request)) {  // an earlier piece failed: the rest is not worth moving
        ++i;
        continue;
      }
      size_t k = i + 1;
      uint64_t len = f[i].len;
      while (k < f.size() && !Failed(f[k].request) && Adjacent(f[k - 1], f[k])) len += f[k++].len;
      Status s = CopyPiece(f[i], len);
      if (!s.ok() && k - i == 1) Fail(f[i].request, s);
      if (!s.ok() && k - i > 1) {
        // Which of them? Piece by piece, so that only the request whose bytes fail is failed.
        for (size_t m = i; m < k; ++m)
          if (Status one = CopyPiece(f[m], f[m].len); !one.ok()) Fail(f[m].request, one);
      }
      i = k;
    }
  }

  // Moves fills [first, first + count) over the network, but for pieces of failed requests.
  void Round(size_t first, size_t count) {
    std::vector<StagedPiece> pieces;
    for (size_t j = first; j < first + count; ++j)
      for (const StagedPiece& p : fills[j])
        if (!Failed(p.request)) pieces.push_back(p);
    if (pieces.empty()) return;
    auto st = net(pieces);
    for (size_t k = 0; k < pieces.size(); ++k) {
      const Status& s = k < st.size() ? st[k] : Error(Code::kInternal, "the network round gave no result");
      if (!s.ok()) Fail(pieces[k].request, s);
    }
    local.pieces += pieces.size();
    for (const auto& p : pieces) local.bytes += p.len;
  }

  void TimeOut(size_t from) {
    std::lock_guard lk(mu);
    for (size_t j = from; j < fills.size(); ++j)
      for (const auto& p : fills[j])
        if (results[p.request].ok())
          results[p.request] = Error(Code::kTimeout, "the deadline passed while staging device memory");
  }

  // One buffer's worth: nothing to overlap, so no copy task.
  void RunSingle() {
    if (to_network) CopyFill(0);
    Round(0, 1);
    if (!to_network) CopyFill(0);
    ++local.rounds;
  }

  // A network round, counted as overlapped when a device copy of other fills ran during it (one
  // was running when it started, or one began meanwhile).
  void NetRound(size_t next, size_t k) {
    size_t s0;
    bool running;
    {
      std::lock_guard lk(mu);
      s0 = started;
      running = started > copied;
    }
    Round(next, k);
    {
      std::lock_guard lk(mu);
      ++local.rounds;
      if (running || started > s0) ++local.overlapped_rounds;
      netted = next + k;
      Kick();
    }
    cv.notify_all();
  }

  // mu held. WRITE: fill j may be copied out once fill j - nbuf (the same buffer) has been
  // sent, and not after a stop. READ: once its round was received (also after a stop: what
  // arrived is delivered).
  bool MayCopy(size_t j) const { return to_network ? !stop && j < netted + nbuf : netted > j; }

  // mu held: posts the copy task unless it is queued or running already, or has nothing to do.
  void Kick() {
    if (copy_posted || started == fills.size() || !MayCopy(started)) return;
    // The task takes mu first, so it cannot see copy_posted before it is set below.
    pipeline.copiers().Submit([this] { CopyWhileAllowed(); });
    copy_posted = true;  // after Submit: if that throws, no task is awaited
  }

  void CopyWhileAllowed() {
    for (;;) {
      size_t j;
      {
        std::lock_guard lk(mu);
        if (started == fills.size() || !MayCopy(started)) {
          copy_posted = false;
          cv.notify_all();  // under mu: the pass may end (and free this) as soon as mu is released
          return;
        }
        j = started++;
      }
      CopyFill(j);
      {
        std::lock_guard lk(mu);
        copied = j + 1;
      }
      cv.notify_all();
    }
  }

  // Rounds as buffers allow. WRITE: a round sends fills whose copy is done. READ: a round
  // receives into buffers whose previous fill was copied in.
  void RunOverlapped() {
    const size_t F = fills.size();
    {
      std::lock_guard lk(mu);
      Kick();
    }
    for (size_t next = 0; next < F;) {
      size_t k;
      {
        std::unique_lock lk(mu);
        auto ready = [&] { return to_network ? copied > next : next < copied + nbuf; };
        if (!WaitFor(cv, lk, deadline, ready)) {
          lk.unlock();
          TimeOut(next);
          break;
        }
        k = to_network ? std::min(copied - next, round_cap) : std::min({copied + nbuf - next, round_cap, F - next});
      }
      NetRound(next, k);
      next += k;
    }
    // Like a join: a READ's copies first deliver every fill that was received.
    std::unique_lock lk(mu);
    stop = true;
    Kick();
    cv.wait(lk, [&] { return !copy_posted; });
  }
};

void StagingPipeline::RunPass(std::span<const StagedRequest> requests, bool to_network, const NetworkRound& net,
                              Deadline deadline, std::vector<Status>& results, StagingStats& local) {
  Pass pass(requests, to_network, net, deadline, *this, results, local);
  pass.Plan(options_.slice_bytes);
  if (pass.fills.empty()) return;
  auto bufs = pool_.Acquire(std::min(options_.buffers, pass.fills.size()), deadline);
  if (!bufs.ok()) {
    for (auto& f : pass.fills)
      for (auto& p : f) results[p.request] = bufs.status();
    return;
  }
  pass.PlaceIn(*bufs);
  if (pass.fills.size() == 1) pass.RunSingle();
  else pass.RunOverlapped();
  pool_.Release(*bufs);
}

}  // namespace weft::transport
