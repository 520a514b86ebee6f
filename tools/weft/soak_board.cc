#include "tools/weft/soak_board.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <new>
#include <numeric>

namespace weft::tools::soak {
namespace {

constexpr uint64_t kMagic = 0x6b616f7374666577ull;  // "weftsoak"

}  // namespace

const char* OpKindName(OpKind kind) {
  switch (kind) {
    case OpKind::kCopy: return "copy";
    case OpKind::kBatch: return "batch";
    case OpKind::kAsync: return "async";
    default: return "?";
  }
}

const char* StageName(Stage stage) {
  switch (stage) {
    case Stage::kIdle: return "idle";
    case Stage::kPrepare: return "preparing (writing the source, poisoning the destination)";
    case Stage::kCopy: return "copying";
    case Stage::kVerify: return "reading the destination back";
    default: return "?";
  }
}

Result<BoardMapping> BoardMapping::Create(uint32_t slots, uint32_t threads, uint64_t max_op, uint32_t deadline_ms) {
  if (slots == 0 || slots > kMaxSlots || threads == 0 || threads > kMaxThreads)
    return Error(Code::kInvalidArgument, "soak board: {} slots x {} threads (at most {} x {})", slots, threads,
                 kMaxSlots, kMaxThreads);
  const int fd = memfd_create("weft-soak-board", MFD_CLOEXEC);
  if (fd < 0) return ErrnoStatus("memfd_create", errno);
  if (ftruncate(fd, sizeof(Board)) != 0) {
    const int err = errno;
    close(fd);
    return ErrnoStatus("ftruncate", err);
  }
  void* p = mmap(nullptr, sizeof(Board), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    const int err = errno;
    close(fd);
    return ErrnoStatus("mmap", err);
  }
  Board* b = new (p) Board();
  b->header.slots = slots;
  b->header.threads = threads;
  b->header.max_op = max_op;
  b->header.region_bytes = 2 * max_op;
  b->header.deadline_ms = deadline_ms;
  b->header.magic = kMagic;
  return BoardMapping(b, fd);
}

Result<BoardMapping> BoardMapping::Map(int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return ErrnoStatus("fstat of the soak board", errno);
  if (static_cast<uint64_t>(st.st_size) != sizeof(Board))
    return Error(Code::kMismatch, "the soak board has {} bytes, this build expects {}", st.st_size, sizeof(Board));
  void* p = mmap(nullptr, sizeof(Board), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return ErrnoStatus("mmap of the soak board", errno);
  auto* b = static_cast<Board*>(p);  // constructed by the driver
  if (b->header.magic != kMagic) {
    munmap(p, sizeof(Board));
    return Error(Code::kMismatch, "fd {} is not a soak board", fd);
  }
  return BoardMapping(b, fd);
}

BoardMapping::BoardMapping(BoardMapping&& o) noexcept : board_(o.board_), fd_(o.fd_) {
  o.board_ = nullptr;
  o.fd_ = -1;
}

BoardMapping::~BoardMapping() {
  if (board_) munmap(board_, sizeof(Board));
  if (fd_ >= 0) close(fd_);
}

uint64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);  // one clock for every process and network namespace
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t RegionOffset(const BoardHeader& h, uint32_t slot, uint32_t thread) {
  return (static_cast<uint64_t>(slot) * h.threads + thread) * h.region_bytes;
}
uint64_t ProbeOffset(const BoardHeader& h) { return static_cast<uint64_t>(h.slots) * h.threads * h.region_bytes; }
uint64_t SliceBytes(const BoardHeader& h) { return ProbeOffset(h) + h.region_bytes; }

uint64_t Totals::all_ops() const { return std::accumulate(std::begin(ops), std::end(ops), uint64_t{0}); }
uint64_t Totals::all_errors() const { return std::accumulate(std::begin(errors), std::end(errors), uint64_t{0}); }

Totals Sum(const Board& board) {
  Totals t;
  for (uint32_t s = 0; s < board.header.slots; ++s) {
    for (uint32_t w = 0; w < board.header.threads; ++w) {
      const WorkerRecord& r = board.slot[s].workers[w];
      for (uint32_t k = 0; k < static_cast<uint32_t>(OpKind::kCount); ++k) t.ops[k] += r.ops[k].load();
      for (uint32_t c = 0; c < kCodes; ++c) t.errors[c] += r.errors[c].load();
      t.bytes += r.bytes.load();
      t.mismatches += r.mismatches.load();
      t.inconclusive += r.inconclusive.load();
    }
  }
  return t;
}

}  // namespace weft::tools::soak
