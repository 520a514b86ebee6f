// `weft soak`'s board: one shared-memory block (a memfd the driver makes and every peer process
// maps) where each worker thread of each peer publishes its counters and the op it is in. It
// lives in shared memory, not in the peers, so that what a peer counted survives its SIGKILL,
// and so that the driver's watchdog sees an op in a frozen or stuck process without asking it.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include <weft/status.h>

#include "base/result.h"

namespace weft::tools::soak {

inline constexpr uint32_t kMaxSlots = 16;     // peer processes, the driver's included
inline constexpr uint32_t kMaxThreads = 8;    // worker threads per peer
inline constexpr uint32_t kMaxRanks = 64;     // the pool's max_ranks
inline constexpr uint32_t kCodes = static_cast<uint32_t>(kLastCode) + 1;

// What a worker's current op is (WorkerRecord::kind), also the keys of the per-kind counts.
enum class OpKind : uint32_t { kCopy = 0, kBatch = 1, kAsync = 2, kCount = 3 };
const char* OpKindName(OpKind kind);
// The step of an op the worker is in (WorkerRecord::stage), for a hang's description.
enum class Stage : uint32_t { kIdle = 0, kPrepare = 1, kCopy = 2, kVerify = 3 };
const char* StageName(Stage stage);

// One worker thread. Written by that thread only (relaxed atomics: a counter read a little late
// is fine); `hang_seq` is the driver's, so that one hang is counted once.
struct WorkerRecord {
  std::atomic<uint64_t> busy_since_ns{0};  // CLOCK_MONOTONIC when the op began; 0: idle
  std::atomic<uint64_t> op_seq{0};
  std::atomic<uint32_t> kind{0};
  std::atomic<uint32_t> stage{0};
  std::atomic<uint64_t> dst{0}, src{0}, len{0};
  std::atomic<uint32_t> requests{0};  // copies in the op (a batch has several)
  std::atomic<uint64_t> ops[static_cast<uint32_t>(OpKind::kCount)]{};  // succeeded and verified
  std::atomic<uint64_t> bytes{0};                                     // bytes of those
  std::atomic<uint64_t> errors[kCodes]{};                             // failed ops by code
  std::atomic<uint64_t> mismatches{0};    // succeeded but the bytes differ
  std::atomic<uint64_t> inconclusive{0};  // succeeded, but an end's peer was restarted meanwhile
  std::atomic<uint64_t> hang_seq{0};      // driver: the op_seq last counted as a hang
  std::atomic<uint32_t> note_seq{0};      // bumped after `note` is written
  char note[240]{};                       // the last mismatch, for the report
};

enum class SlotState : uint32_t { kDown = 0, kStarting = 1, kJoined = 2, kDone = 3 };

struct SlotRecord {
  std::atomic<int32_t> rank{-1};       // the peer's rank once joined
  std::atomic<uint32_t> state{0};      // SlotState
  std::atomic<uint32_t> incarnation{0};  // bumped by the driver before each (re)start
  std::atomic<uint64_t> joins{0};      // successful joins, all incarnations
  WorkerRecord workers[kMaxThreads];
};

struct BoardHeader {
  uint64_t magic = 0;
  uint32_t slots = 0;
  uint32_t threads = 0;
  uint64_t region_bytes = 0;  // each worker's region in every slice (two halves: src, dst)
  uint64_t max_op = 0;        // largest single copy
  uint32_t deadline_ms = 0;   // every op's deadline
  std::atomic<uint32_t> phase{0};  // 0 run, 1 stop working (finish the op, go idle), 2 leave
  // The soak's own check of itself (hidden --inject-defect): the driver's first worker corrupts
  // one destination byte after a successful copy, or sleeps defect_sleep_ms inside one op, once.
  uint32_t defect = 0;  // 0 none, 1 mismatch, 2 hang
  uint32_t defect_sleep_ms = 0;
  // Bumped by the driver before it kills or restarts the peer holding a rank: a worker whose op
  // saw the epoch of an end change cannot tell old bytes from new ones (its peer's memory is
  // fresh), and counts the op inconclusive rather than mismatched.
  std::atomic<uint32_t> rank_epoch[kMaxRanks]{};
};

struct Board {
  BoardHeader header;
  SlotRecord slot[kMaxSlots];
};

// The board, mapped. The driver creates it; a peer maps the descriptor it inherited.
class BoardMapping {
 public:
  static Result<BoardMapping> Create(uint32_t slots, uint32_t threads, uint64_t max_op, uint32_t deadline_ms);
  static Result<BoardMapping> Map(int fd);
  BoardMapping(BoardMapping&& o) noexcept;
  BoardMapping& operator=(BoardMapping&&) = delete;
  ~BoardMapping();

  Board& board() const { return *board_; }
  int fd() const { return fd_; }

 private:
  BoardMapping(Board* board, int fd) : board_(board), fd_(fd) {}
  Board* board_ = nullptr;
  int fd_ = -1;
};

uint64_t MonotonicNs();

// The offset of worker (slot, thread)'s region in every peer's slice; the driver's probe region
// comes after all of them (ProbeOffset).
uint64_t RegionOffset(const BoardHeader& h, uint32_t slot, uint32_t thread);
uint64_t ProbeOffset(const BoardHeader& h);
// Bytes each peer must pool: every worker's region and the probe region.
uint64_t SliceBytes(const BoardHeader& h);

// Sums over every worker of every slot.
struct Totals {
  uint64_t ops[static_cast<uint32_t>(OpKind::kCount)]{};
  uint64_t bytes = 0;
  uint64_t errors[kCodes]{};
  uint64_t mismatches = 0;
  uint64_t inconclusive = 0;
  uint64_t all_ops() const;
  uint64_t all_errors() const;
};
Totals Sum(const Board& board);

}  // namespace weft::tools::soak
