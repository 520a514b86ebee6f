// `weft soak`'s chaos loop and watchdog, both in the driver (the peer that hosts the
// coordinator, never itself a victim: coordinator failover is separate work).
//
// Chaos: one fault at a time on a random peer (slot 1..N-1), then it waits for the fault to be
// answered: the peer is in the pool again (its rank live in the driver's view, its current
// incarnation joined) and a probe copy to its slice and back, every byte compared, succeeds,
// within `recovery_ms`. A peer that stays out of the pool while its process lives (declared down
// while frozen or cut off) is restarted, as an operator would; that restart is part of the answer.
// A fault not answered in time is counted unanswered and the peer restarted by force.
//
// Watchdog: an op on the board busy for longer than deadline + margin is a hang, counted once,
// with what it was doing.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include <weft/pool.h>

#include "tools/weft/netns_topology.h"
#include "tools/weft/soak_board.h"
#include "tools/weft/soak_peers.h"

namespace weft::tools::soak {

enum class Fault : uint32_t { kKill = 0, kFreeze = 1, kLinkDown = 2, kCount = 3 };
const char* FaultName(Fault f);

struct ChaosOptions {
  uint32_t interval_ms = 5000;    // mean time between faults (0: no chaos)
  uint32_t recovery_ms = 30000;   // a fault not answered within this after it ended is unanswered
  uint32_t peer_timeout_ms = 2000;  // the pool's: how long silence takes to be declared down
  uint64_t seed = 0;
};

struct ChaosReport {
  uint64_t injected[static_cast<uint32_t>(Fault::kCount)]{};
  uint64_t answered[static_cast<uint32_t>(Fault::kCount)]{};
  uint64_t unanswered = 0;
  uint64_t expelled_restarts = 0;  // peers restarted because they were out of the pool while alive
  uint64_t crashes = 0;            // peers that ended by themselves
  uint64_t probe_mismatches = 0;   // a probe copy succeeded with the wrong bytes
  double recovery_ms_max = 0;
  double recovery_ms_sum = 0;
  std::vector<std::string> notes;  // unanswered faults and crashes, with details
  uint64_t all_injected() const;
  uint64_t all_answered() const;
};

class Chaos {
 public:
  // topology: null when the peers are not in network namespaces (no link faults then).
  Chaos(bm::Pool& pool, Board& board, PeerSet& peers, const NetnsTopology* topology, ChaosOptions options);
  // Injects faults until `stop`; returns after the last one was answered (or timed out).
  void Run(const std::atomic<bool>& stop);
  // Watches for peers that end by themselves, and for joined ones out of the pool for longer
  // than it takes to be declared down and told (restarted, counted as expelled): between faults.
  void CheckCrashes();
  void CheckAbsent();
  ChaosReport report() const;

 private:
  void Inject(Fault fault, uint32_t slot);
  void Await(Fault fault, uint32_t slot, uint64_t fault_end_ns);
  bool Answered(uint32_t slot);
  bool Probe(uint32_t rank);
  void Restart(uint32_t slot);
  void SleepFor(uint64_t ms, const std::atomic<bool>& stop);
  uint64_t Next();

  bm::Pool& pool_;
  Board& board_;
  PeerSet& peers_;
  const NetnsTopology* topology_;
  ChaosOptions o_;
  uint64_t rng_;
  mutable std::mutex mu_;  // guards report_
  ChaosReport report_;
  std::vector<uint64_t> absent_since_ns_;  // per slot; 0: live (or not joined)
};

// Scans the board every 250 ms until `stop`: a busy op older than deadline + margin is a hang.
class Watchdog {
 public:
  Watchdog(Board& board, uint32_t margin_ms) : board_(board), margin_ms_(margin_ms) {}
  void Run(const std::atomic<bool>& stop);
  // One scan (also after the work stopped).
  void Scan();
  std::vector<std::string> hangs() const;

 private:
  Board& board_;
  uint32_t margin_ms_;
  mutable std::mutex mu_;
  std::vector<std::string> hangs_;
};

}  // namespace weft::tools::soak
