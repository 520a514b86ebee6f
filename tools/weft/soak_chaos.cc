#include "tools/weft/soak_chaos.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <numeric>
#include <thread>

#include <fmt/format.h>

#include "base/random.h"

namespace weft::tools::soak {
namespace {

constexpr uint64_t kProbeBytes = 64 << 10;

uint64_t MsSince(uint64_t ns) { return (MonotonicNs() - ns) / 1'000'000; }

std::string LogTail(const std::string& path, size_t max = 1500) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  const off_t size = lseek(fd, 0, SEEK_END);
  const off_t from = size > static_cast<off_t>(max) ? size - static_cast<off_t>(max) : 0;
  std::string out(static_cast<size_t>(std::max<off_t>(size - from, 0)), '\0');
  const ssize_t n = pread(fd, out.data(), out.size(), from);
  close(fd);
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return out;
}

}  // namespace

const char* FaultName(Fault f) {
  switch (f) {
    case Fault::kKill: return "kill+restart";
    case Fault::kFreeze: return "freeze";
    case Fault::kLinkDown: return "link-down";
    default: return "?";
  }
}

uint64_t ChaosReport::all_injected() const { return std::accumulate(std::begin(injected), std::end(injected), uint64_t{0}); }
uint64_t ChaosReport::all_answered() const { return std::accumulate(std::begin(answered), std::end(answered), uint64_t{0}); }

Chaos::Chaos(bm::Pool& pool, Board& board, PeerSet& peers, const NetnsTopology* topology, ChaosOptions options)
    : pool_(pool), board_(board), peers_(peers), topology_(topology), o_(options), rng_(options.seed) {}

uint64_t Chaos::Next() { return SplitMix64(rng_); }

ChaosReport Chaos::report() const {
  std::lock_guard lock(mu_);
  return report_;
}

void Chaos::SleepFor(uint64_t ms, const std::atomic<bool>& stop) {
  const uint64_t until = MonotonicNs() + ms * 1'000'000;
  while (!stop && MonotonicNs() < until) {
    CheckCrashes();
    CheckAbsent();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

void Chaos::Run(const std::atomic<bool>& stop) {
  if (o_.interval_ms == 0 || board_.header.slots < 2) {
    SleepFor(UINT64_MAX / 2'000'000, stop);
    return;
  }
  const uint32_t kinds = topology_ ? 3 : 2;  // a link of its own only in a namespace
  uint32_t turn = 0;
  while (!stop) {
    SleepFor(o_.interval_ms / 2 + Next() % (o_.interval_ms + 1), stop);
    if (stop) break;
    // Each kind in turn, so that even a short run injects every kind; the victim is random.
    const auto fault = static_cast<Fault>(turn++ % kinds);
    const auto slot = static_cast<uint32_t>(1 + Next() % (board_.header.slots - 1));
    Inject(fault, slot);
  }
}

void Chaos::Inject(Fault fault, uint32_t slot) {
  {
    std::lock_guard lock(mu_);
    report_.injected[static_cast<uint32_t>(fault)]++;
  }
  // Some freezes and cuts outlast the pool's peer timeout, so that the peer is declared down
  // while it lives; the others end before it.
  const uint64_t hold_ms = 200 + Next() % (o_.peer_timeout_ms * 3 / 2 + 1);
  switch (fault) {
    case Fault::kKill:
      Restart(slot);
      break;
    case Fault::kFreeze:
      if (peers_.Freeze(slot).ok()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(hold_ms));
        (void)peers_.Thaw(slot);
      }
      break;
    case Fault::kLinkDown:
      if (topology_->SetLink(static_cast<int>(slot) + 1, false).ok()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(hold_ms));
        if (Status up = topology_->SetLink(static_cast<int>(slot) + 1, true); !up.ok()) {
          std::lock_guard lock(mu_);
          report_.notes.push_back(fmt::format("cannot bring peer {}'s link back up: {}", slot, up.ToString()));
        }
      }
      break;
    default:
      break;
  }
  Await(fault, slot, MonotonicNs());
}

void Chaos::Restart(uint32_t slot) {
  peers_.Kill(slot);
  if (Status s = peers_.Start(slot); !s.ok()) {
    std::lock_guard lock(mu_);
    report_.notes.push_back(s.ToString());
  }
}

void Chaos::CheckCrashes() {
  for (uint32_t s = 1; s < board_.header.slots; ++s) {
    auto how = peers_.EndedBySelf(s);
    if (!how) continue;
    {
      std::lock_guard lock(mu_);
      report_.crashes++;
      report_.notes.push_back(fmt::format("peer {} {} by itself; the end of {}:\n{}", s, *how, peers_.LogPath(s),
                                          LogTail(peers_.LogPath(s))));
    }
    Restart(s);
  }
}

void Chaos::CheckAbsent() {
  absent_since_ns_.resize(board_.header.slots, 0);
  const auto live = pool_.LiveRanks();
  for (uint32_t s = 1; s < board_.header.slots; ++s) {
    const int32_t rank = board_.slot[s].rank.load();
    const bool joined = board_.slot[s].state.load() == static_cast<uint32_t>(SlotState::kJoined);
    const bool in = rank >= 0 && std::find(live.begin(), live.end(), static_cast<uint32_t>(rank)) != live.end();
    if (!joined || in) {
      absent_since_ns_[s] = 0;
      continue;
    }
    if (absent_since_ns_[s] == 0) absent_since_ns_[s] = MonotonicNs();
    if (MsSince(absent_since_ns_[s]) < 2ull * o_.peer_timeout_ms + 1000) continue;
    absent_since_ns_[s] = 0;
    Restart(s);
    std::lock_guard lock(mu_);
    report_.expelled_restarts++;
  }
}

bool Chaos::Probe(uint32_t rank) {
  auto base = pool_.SliceAddress(rank);
  if (!base.ok()) return false;
  const uint64_t gva = *base + ProbeOffset(board_.header);
  const uint32_t epoch = board_.header.rank_epoch[rank].load();
  std::vector<uint8_t> out(kProbeBytes), back(kProbeBytes, 0x5A);
  const uint64_t seed = Next();
  FillRandom(out.data(), out.size(), seed);
  auto deadline = [&] { return Deadline::After(std::chrono::milliseconds(board_.header.deadline_ms)); };
  if (!pool_.Copy(gva, reinterpret_cast<uint64_t>(out.data()), out.size(), Direction::kAuto, deadline()).ok())
    return false;
  if (!pool_.Copy(reinterpret_cast<uint64_t>(back.data()), gva, back.size(), Direction::kAuto, deadline()).ok())
    return false;
  auto bad = FirstMismatch(back.data(), back.size(), seed);
  if (bad && board_.header.rank_epoch[rank].load() == epoch) {
    std::lock_guard lock(mu_);
    report_.probe_mismatches++;
    report_.notes.push_back(fmt::format("probe of rank {}: byte {} differs after a successful copy and read", rank, *bad));
  }
  return !bad;
}

bool Chaos::Answered(uint32_t slot) {
  const SlotRecord& rec = board_.slot[slot];
  if (rec.state.load() != static_cast<uint32_t>(SlotState::kJoined)) return false;
  const int32_t rank = rec.rank.load();
  if (rank < 0) return false;
  const auto live = pool_.LiveRanks();
  if (std::find(live.begin(), live.end(), static_cast<uint32_t>(rank)) == live.end()) return false;
  return Probe(static_cast<uint32_t>(rank));
}

void Chaos::Await(Fault fault, uint32_t slot, uint64_t fault_end_ns) {
  bool restarted = fault == Fault::kKill;
  for (;;) {
    CheckCrashes();
    if (Answered(slot)) {
      const double ms = static_cast<double>(MsSince(fault_end_ns));
      std::lock_guard lock(mu_);
      report_.answered[static_cast<uint32_t>(fault)]++;
      report_.recovery_ms_sum += ms;
      report_.recovery_ms_max = std::max(report_.recovery_ms_max, ms);
      return;
    }
    const uint64_t waited = MsSince(fault_end_ns);
    // Out of the pool for longer than the coordinator takes to notice and tell everyone, yet
    // running: it was declared down while frozen or cut off, and nothing brings it back but a
    // restart (a declared-down peer does not rejoin by itself).
    const bool joined = board_.slot[slot].state.load() == static_cast<uint32_t>(SlotState::kJoined);
    if (!restarted && joined && waited > 2ull * o_.peer_timeout_ms + 1000) {
      restarted = true;
      Restart(slot);
      std::lock_guard lock(mu_);
      report_.expelled_restarts++;
    }
    if (waited > o_.recovery_ms) {
      {
        std::lock_guard lock(mu_);
        report_.unanswered++;
        report_.notes.push_back(fmt::format("{} of peer {} not answered within {} ms (state {}, rank {}); restarted; "
                                            "the end of {}:\n{}",
                                            FaultName(fault), slot, o_.recovery_ms, board_.slot[slot].state.load(),
                                            board_.slot[slot].rank.load(), peers_.LogPath(slot),
                                            LogTail(peers_.LogPath(slot))));
      }
      Restart(slot);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

void Watchdog::Run(const std::atomic<bool>& stop) {
  while (!stop) {
    Scan();
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

void Watchdog::Scan() {
  const BoardHeader& h = board_.header;
  const uint64_t limit_ns = (static_cast<uint64_t>(h.deadline_ms) + margin_ms_) * 1'000'000;
  const uint64_t now = MonotonicNs();
  for (uint32_t s = 0; s < h.slots; ++s) {
    SlotRecord& slot = board_.slot[s];
    if (slot.state.load() == static_cast<uint32_t>(SlotState::kDown)) continue;  // killed: its ops ended with it
    for (uint32_t t = 0; t < h.threads; ++t) {
      WorkerRecord& w = slot.workers[t];
      const uint64_t since = w.busy_since_ns.load();
      if (since == 0 || now < since || now - since < limit_ns) continue;
      const uint64_t seq = w.op_seq.load();
      if (w.hang_seq.exchange(seq) == seq) continue;  // counted already
      std::lock_guard lock(mu_);
      hangs_.push_back(fmt::format(
          "peer {} (rank {}) thread {}: {} #{} of {} request(s) has been {} for {:.1f} s (deadline {} ms): first "
          "request {} bytes from {:#x} to {:#x}",
          s, slot.rank.load(), t, OpKindName(static_cast<OpKind>(w.kind.load())), seq, w.requests.load(),
          StageName(static_cast<Stage>(w.stage.load())), static_cast<double>(now - since) / 1e9, h.deadline_ms,
          w.len.load(), w.src.load(), w.dst.load()));
    }
  }
}

std::vector<std::string> Watchdog::hangs() const {
  std::lock_guard lock(mu_);
  return hangs_;
}

}  // namespace weft::tools::soak
