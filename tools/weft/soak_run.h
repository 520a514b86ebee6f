// One phase of `weft soak`: a pool over one transport, hosted here (slot 0: coordinator and a
// peer with workers of its own), N-1 peer processes, chaos and watchdog, for a set time; then
// the work stops, the peers leave, and what the board counted is the phase's result.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tools/weft/netns_topology.h"
#include "tools/weft/soak_board.h"
#include "tools/weft/soak_chaos.h"
#include "tools/weft/soak_peers.h"

namespace weft::tools::soak {

struct SoakSettings {
  double seconds = 60;  // per phase
  uint32_t peers = 4;   // processes, this one included
  uint32_t threads = 2;
  bool netns = false;   // tcp/ucx peers in network namespaces (root + ip netns)
  uint32_t chaos_interval_ms = 5000;
  uint64_t seed = 0;
  uint64_t max_op = 1 << 20;
  uint32_t deadline_ms = 5000;
  uint32_t hang_margin_ms = 10000;
  uint32_t recovery_ms = 30000;
  uint32_t peer_timeout_ms = 2000;
  double progress_s = 10;
  std::string log_dir;  // peers' logs
  uint32_t defect = 0;  // hidden --inject-defect: 1 mismatch, 2 hang (BoardHeader::defect)
};

struct PhaseResult {
  std::string transport;
  std::string where;  // "this host", "4 network namespaces ...", "loopback (why)"
  double seconds = 0;
  Totals totals;
  ChaosReport chaos;
  std::vector<std::string> hangs;
  std::vector<std::string> mismatch_notes;
  std::vector<std::string> end_problems;  // peers that did not leave cleanly at the end
  std::string setup_error;                // the phase could not run
  bool driver_stuck = false;              // a worker of the driver never returned (a hang)
  bool ok() const;
};

// The shared state of the signal thread: the pids to kill and the namespaces to remove.
struct SoakLeftovers {
  ChildRegistry children;
  std::mutex mu;
  NetnsTopology* topology = nullptr;
  std::string socket_path;
  void Remove();
};

// Runs one phase on the calling thread (which it may move into a network namespace: give it a
// thread of its own). `progress` gets a line every progress_s.
PhaseResult RunPhase(const SoakSettings& s, const std::string& transport, SoakLeftovers& leftovers,
                     const std::function<void(const std::string&)>& progress);

// Entry of the hidden `weft soak-peer`: joins (config from the environment the driver set),
// runs `threads` workers for `slot` until told to stop, leaves. Exit status 0 when it left.
int RunSoakPeer(uint32_t slot, uint64_t seed);

}  // namespace weft::tools::soak
