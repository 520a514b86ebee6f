// The peer processes of a `weft soak` run (slots 1..N-1; slot 0 is the driver itself): start,
// SIGKILL and restart, SIGSTOP/SIGCONT, and noticing one that ended by itself. Each peer maps the
// board through a descriptor it inherits, and writes its stderr to a log file of its slot.
#pragma once

#include <sys/types.h>

#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "tools/weft/soak_board.h"

namespace weft::tools::soak {

// The descriptor number a peer finds the board at.
inline constexpr int kBoardFd = 100;

// Every pid a run started, for the signal thread to kill wherever the run is.
struct ChildRegistry {
  std::mutex mu;
  std::vector<pid_t> pids;
  void Add(pid_t p);
  void Remove(pid_t p);
  void KillAll();
};

class PeerSet {
 public:
  // command(slot): the full argv of slot's peer (e.g. under `ip netns exec`); env(slot): its
  // environment. Logs go to <log_dir>/peer<slot>.log, appended over restarts.
  PeerSet(Board& board, int board_fd, std::string log_dir,
          std::function<std::vector<std::string>(uint32_t)> command,
          std::function<std::vector<std::string>(uint32_t)> env, ChildRegistry& registry);
  ~PeerSet();  // kills what is still running

  // A new incarnation of the slot's peer: bumps the slot's incarnation and its rank's epoch.
  Status Start(uint32_t slot);
  // SIGKILL (a SIGSTOPped one too) and reap; the rank's epoch is bumped first.
  void Kill(uint32_t slot);
  Status Freeze(uint32_t slot);
  Status Thaw(uint32_t slot);
  // How the slot's peer ended if it ended by itself since the last check (reaped now);
  // nullopt while it runs or after Kill.
  std::optional<std::string> EndedBySelf(uint32_t slot);
  bool Running(uint32_t slot) const;
  // Waits up to `ms` for every peer to exit; kills the rest. Returns the slots that were killed
  // or exited with a status other than 0, each with how.
  std::vector<std::string> WaitAll(int ms);
  std::string LogPath(uint32_t slot) const;

 private:
  void BumpEpoch(uint32_t slot);

  Board& board_;
  int board_fd_;
  std::string log_dir_;
  std::function<std::vector<std::string>(uint32_t)> command_, env_;
  ChildRegistry& registry_;
  std::vector<pid_t> pids_;  // -1: not running
};

// "exited with status 3", "was killed by signal 9 (Killed)".
std::string HowItEnded(int wait_status);

}  // namespace weft::tools::soak
