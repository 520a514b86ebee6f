#include "tools/weft/soak_worker.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "base/log.h"
#include "base/random.h"

namespace weft::tools::soak {
namespace {

constexpr uint8_t kPoison = 0xA5;    // what a destination holds before the copy
constexpr uint8_t kReadback = 0x5A;  // what the read-back buffer holds before the read

struct Buffer {
  explicit Buffer(size_t n) {
    void* p = nullptr;
    if (posix_memalign(&p, 4096, n ? n : 1) == 0) data.reset(static_cast<uint8_t*>(p));
    if (data) std::memset(data.get(), 0, n);
  }
  uint8_t* at(uint64_t off) const { return data.get() + off; }
  uint64_t addr(uint64_t off) const { return reinterpret_cast<uint64_t>(data.get() + off); }
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<uint8_t, Free> data;
};

// One end of a copy: this process's buffer, or this worker's region in a rank's slice.
struct End {
  bool local = true;
  uint32_t rank = 0;
};

// One copy of an op, with where its bytes go and the seed of its data.
struct Req {
  End src, dst;
  uint64_t off = 0, len = 0, seed = 0;
  uint64_t src_addr = 0, dst_addr = 0;
};

std::string EndName(const End& e, uint32_t me) {
  if (e.local) return "LH";
  return e.rank == me ? fmt::format("GH own (rank {})", e.rank) : fmt::format("GH rank {}", e.rank);
}

class Worker {
 public:
  Worker(bm::Pool& pool, Board& board, uint32_t slot, uint32_t thread, uint64_t seed)
      : pool_(pool),
        h_(board.header),
        rec_(board.slot[slot].workers[thread]),
        slot_(slot),
        thread_(thread),
        rng_(seed),
        src_(h_.max_op),
        dst_(h_.max_op),
        staging_(h_.max_op),
        poison_(h_.max_op),
        readback_(h_.max_op) {
    std::memset(poison_.at(0), kPoison, h_.max_op);
  }

  void Run() {
    while (h_.phase.load() == 0) {
      if (!OneOp()) std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a failed op: back off
    }
    rec_.stage.store(static_cast<uint32_t>(Stage::kIdle));
    rec_.busy_since_ns.store(0);
  }

 private:
  uint64_t Next() { return SplitMix64(rng_); }
  uint64_t Below(uint64_t n) { return n ? Next() % n : 0; }
  // Log-uniform in [1, max]: as many tiny copies as MiB ones.
  uint64_t Size(uint64_t max) {
    const double x = static_cast<double>(Next() >> 11) / static_cast<double>(1ull << 53);
    return std::clamp<uint64_t>(static_cast<uint64_t>(std::exp(x * std::log(static_cast<double>(max)))), 1, max);
  }
  Deadline OpDeadline() const { return Deadline::After(std::chrono::milliseconds(h_.deadline_ms)); }

  End PickEnd(const std::vector<uint32_t>& live) {
    // A third local, a third this peer's own slice, a third another peer's (when there is one).
    const uint64_t r = Below(3);
    if (r == 0 || live.empty()) return End{true, 0};
    if (r == 1 || live.size() == 1) return End{false, pool_.rank()};
    uint32_t other = live[Below(live.size())];
    while (other == pool_.rank()) other = live[Below(live.size())];
    return End{false, other};
  }

  // Fills in the addresses; false when a rank's slice address is unknown (counted by the caller).
  Status Place(Req& q, uint64_t off) {
    q.off = off;
    const uint64_t region = RegionOffset(h_, slot_, thread_);
    auto where = [&](const End& e, bool is_dst, uint64_t* out) -> Status {
      if (e.local) {
        *out = (is_dst ? dst_ : src_).addr(off);
        return OkStatus();
      }
      WEFT_ASSIGN_OR_RETURN(uint64_t base, pool_.SliceAddress(e.rank));
      *out = base + region + (is_dst ? h_.max_op : 0) + off;
      return OkStatus();
    };
    WEFT_RETURN_IF_ERROR(where(q.src, false, &q.src_addr));
    return where(q.dst, true, &q.dst_addr);
  }

  // Fresh random bytes at the source, poison at the destination.
  Status Prepare(const Req& q) {
    if (q.src.local) {
      FillRandom(src_.at(q.off), q.len, q.seed);
    } else {
      FillRandom(staging_.at(q.off), q.len, q.seed);
      WEFT_RETURN_IF_ERROR(pool_.Copy(q.src_addr, staging_.addr(q.off), q.len, Direction::kAuto, OpDeadline()));
    }
    if (q.dst.local) {
      std::memset(dst_.at(q.off), kPoison, q.len);
      return OkStatus();
    }
    return pool_.Copy(q.dst_addr, poison_.addr(q.off), q.len, Direction::kAuto, OpDeadline());
  }

  // The destination's bytes, read back when remote; nullptr (with the status) when that fails.
  Result<const uint8_t*> Destination(const Req& q) {
    if (q.dst.local) return static_cast<const uint8_t*>(dst_.at(q.off));
    std::memset(readback_.at(q.off), kReadback, q.len);
    WEFT_RETURN_IF_ERROR(pool_.Copy(readback_.addr(q.off), q.dst_addr, q.len, Direction::kAuto, OpDeadline()));
    return static_cast<const uint8_t*>(readback_.at(q.off));
  }

  // The epoch of every rank an op touches, summed: it changes if any of them was restarted.
  uint64_t Epochs(const std::vector<Req>& reqs) const {
    uint64_t sum = 0;
    for (const Req& q : reqs) {
      for (const End* e : {&q.src, &q.dst})
        if (!e->local && e->rank < kMaxRanks) sum += h_.rank_epoch[e->rank].load();
    }
    return sum;
  }

  std::vector<Req> Plan(OpKind kind, const std::vector<uint32_t>& live) {
    const uint32_t count = kind == OpKind::kBatch ? static_cast<uint32_t>(2 + Below(31)) : 1;
    const uint64_t span = h_.max_op / count;  // each request of a batch has a span of its own
    std::vector<Req> reqs(count);
    for (uint32_t i = 0; i < count; ++i) {
      Req& q = reqs[i];
      q.src = PickEnd(live);
      q.dst = PickEnd(live);
      q.len = Size(kind == OpKind::kBatch ? std::min<uint64_t>(span, 256 << 10) : span);
      q.off = i * span + Below(span - q.len + 1);
      q.seed = Next();
    }
    return reqs;
  }

  void Publish(OpKind kind, const std::vector<Req>& reqs) {
    rec_.kind.store(static_cast<uint32_t>(kind));
    rec_.stage.store(static_cast<uint32_t>(Stage::kPrepare));
    rec_.dst.store(reqs[0].dst_addr);
    rec_.src.store(reqs[0].src_addr);
    rec_.len.store(reqs[0].len);
    rec_.requests.store(static_cast<uint32_t>(reqs.size()));
    rec_.op_seq.fetch_add(1);
    rec_.busy_since_ns.store(MonotonicNs());
  }
  void SetStage(Stage s) { rec_.stage.store(static_cast<uint32_t>(s)); }

  Status Execute(OpKind kind, const std::vector<Req>& reqs) {
    if (kind == OpKind::kCopy) {
      const Req& q = reqs[0];
      return pool_.Copy(q.dst_addr, q.src_addr, q.len, Direction::kAuto, OpDeadline());
    }
    std::vector<CopyRequest> batch;
    for (const Req& q : reqs) batch.push_back({q.dst_addr, q.src_addr, q.len});
    if (kind == OpKind::kAsync) {
      // Bounded by the pool's deadline_ms (the driver sets it to the op deadline); a wait that
      // never returns is the watchdog's to catch.
      return pool_.Wait(pool_.CopyBatchAsync(batch), Deadline::Never());
    }
    for (const Status& s : pool_.CopyBatch(batch))
      if (!s.ok()) return s;
    return OkStatus();
  }

  void CountError(const Status& s) { rec_.errors[static_cast<uint32_t>(s.code())].fetch_add(1); }

  void Note(OpKind kind, const Req& q, size_t at, uint8_t got, const std::vector<Req>& reqs) {
    std::string text = fmt::format(
        "slot {} thread {} {} #{}: {} bytes {} -> {} at offset {} (request {} of {}): byte {} is {:#04x}{}",
        slot_, thread_, OpKindName(kind), rec_.op_seq.load(), q.len, EndName(q.src, pool_.rank()),
        EndName(q.dst, pool_.rank()), q.off, &q - reqs.data() + 1, reqs.size(), at, got,
        got == kPoison ? " (the poison: never written)" : got == kReadback ? " (never read back)" : "");
    // Logged at once as well (peer logs are kept after a failing run): a process that aborts
    // takes the board, and the report's copy of this note, with it.
    WEFT_LOG_ERROR("soak: MISMATCH: {}", text);
    const size_t n = std::min(text.size(), sizeof rec_.note - 1);
    std::memcpy(rec_.note, text.data(), n);
    rec_.note[n] = '\0';
    rec_.note_seq.fetch_add(1);
  }

  // The soak checking itself: a byte the fabric did not write, or an op that does not return.
  void InjectDefect(const std::vector<Req>& reqs) {
    if (h_.defect == 2) {
      std::this_thread::sleep_for(std::chrono::milliseconds(h_.defect_sleep_ms));
      defect_done_ = true;
      return;
    }
    for (const Req& q : reqs) {
      if (!q.dst.local) continue;
      dst_.at(q.off)[q.len / 2] ^= 0xFF;
      defect_done_ = true;
      return;
    }
  }

  // One op, start to end; false if it failed (the caller backs off).
  bool OneOp() {
    std::vector<uint32_t> live = pool_.LiveRanks();
    const auto kind = static_cast<OpKind>(Below(static_cast<uint32_t>(OpKind::kCount)));
    std::vector<Req> reqs = Plan(kind, live);
    const uint64_t epochs = Epochs(reqs);
    Status s;
    for (Req& q : reqs)
      if (s.ok()) s = Place(q, q.off);
    Publish(kind, reqs);
    for (const Req& q : reqs)
      if (s.ok()) s = Prepare(q);
    if (s.ok()) {
      SetStage(Stage::kCopy);
      s = Execute(kind, reqs);
    }
    if (s.ok() && h_.defect != 0 && !defect_done_ && slot_ == 0 && thread_ == 0) InjectDefect(reqs);
    SetStage(Stage::kVerify);
    uint64_t bytes = 0;
    bool differs = false;
    for (const Req& q : reqs) {
      if (!s.ok()) break;
      auto got = Destination(q);
      if (!got.ok()) {
        s = got.status();
        break;
      }
      if (auto bad = FirstMismatch(*got, q.len, q.seed); bad && !differs) {
        differs = true;
        if (Epochs(reqs) == epochs) Note(kind, q, *bad, (*got)[*bad], reqs);
      }
      bytes += q.len;
    }
    rec_.busy_since_ns.store(0);
    SetStage(Stage::kIdle);
    if (differs) {
      // Counted even when a later request's read-back failed: this one's copy succeeded. A
      // restarted peer's memory is fresh: its bytes are neither ours nor a fault of the copy.
      (Epochs(reqs) == epochs ? rec_.mismatches : rec_.inconclusive).fetch_add(1);
      return true;
    }
    if (!s.ok()) {
      CountError(s);
      return false;
    }
    rec_.ops[static_cast<uint32_t>(kind)].fetch_add(1);
    rec_.bytes.fetch_add(bytes);
    return true;
  }

  bm::Pool& pool_;
  BoardHeader& h_;
  WorkerRecord& rec_;
  const uint32_t slot_, thread_;
  uint64_t rng_;
  bool defect_done_ = false;
  Buffer src_, dst_, staging_, poison_, readback_;
};

}  // namespace

void RunWorker(bm::Pool& pool, Board& board, uint32_t slot, uint32_t thread, uint64_t seed) {
  Worker(pool, board, slot, thread, seed).Run();
}

}  // namespace weft::tools::soak
