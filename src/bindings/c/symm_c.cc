// Symmetric memory's C API (the symm section of include/weft/weft.h) over weft::symm::Team. As in
// weft_c.cc: arguments are checked before any C++ runs, every call into the team is inside Guard
// (no exception reaches C), and a failed Status becomes a negative code plus weft_last_error().
//
// A collective's bad dtype, op or root is not refused here but passed on to the team, which
// refuses it in a round of its own: the other ranks then return MISMATCH at once instead of
// waiting for this rank until their deadline. Values that do not fit the C++ enums' uint8 are
// passed as 0xFF (equally unknown) and the message names the caller's value.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <span>

#include <weft/symm.h>

#include "base/status.h"
#include "bindings/c/c_guard.h"
#include "weft/weft.h"

using weft::Code;
using weft::Status;
using weft::symm::Cmp;
using weft::symm::DType;
using weft::symm::ReduceOp;
using weft::symm::SignalOp;
using weft::symm::Team;

struct weft_team {
  std::unique_ptr<Team> team;
};

namespace {

using namespace weft::c_api;

static_assert(WEFT_DTYPE_F32 == static_cast<int>(DType::kF32));
static_assert(WEFT_DTYPE_BF16 == static_cast<int>(DType::kBF16));
static_assert(WEFT_DTYPE_F16 == static_cast<int>(DType::kF16));
static_assert(WEFT_DTYPE_I32 == static_cast<int>(DType::kI32));
static_assert(WEFT_DTYPE_I64 == static_cast<int>(DType::kI64));
static_assert(WEFT_DTYPE_U8 == static_cast<int>(DType::kU8));
static_assert(WEFT_REDUCE_SUM == static_cast<int>(ReduceOp::kSum));
static_assert(WEFT_REDUCE_MAX == static_cast<int>(ReduceOp::kMax));
static_assert(WEFT_REDUCE_MIN == static_cast<int>(ReduceOp::kMin));
static_assert(WEFT_REDUCE_PROD == static_cast<int>(ReduceOp::kProd));
static_assert(WEFT_CMP_EQ == static_cast<int>(Cmp::kEq) && WEFT_CMP_NE == static_cast<int>(Cmp::kNe));
static_assert(WEFT_CMP_GT == static_cast<int>(Cmp::kGt) && WEFT_CMP_GE == static_cast<int>(Cmp::kGe));
static_assert(WEFT_CMP_LT == static_cast<int>(Cmp::kLt) && WEFT_CMP_LE == static_cast<int>(Cmp::kLe));
static_assert(WEFT_SIGNAL_SET == static_cast<int>(SignalOp::kSet));
static_assert(WEFT_SIGNAL_ADD == static_cast<int>(SignalOp::kAdd));

constexpr uint8_t kUnknown = 0xFF;  // no DType or ReduceOp: the team refuses it

int CheckTeam(const char* function, const weft_team* team) noexcept {
  if (team == nullptr) return NullArgument(function, "team");
  if (!team->team) return Fail(Code::kInternal, "the team handle holds no team");
  return WEFT_OK;
}

#define WEFT_C_REQUIRE_TEAM(team)                                          \
  do {                                                                     \
    if (int rc_ = CheckTeam(__func__, team); rc_ != WEFT_OK) return rc_;   \
  } while (0)

// 0 or negative: the team's default deadline (TeamOptions::timeout_ms), as weft.h documents.
weft::symm::OptDeadline DeadlineOfCall(int64_t timeout_ms) {
  if (timeout_ms <= 0) return std::nullopt;
  return weft::Deadline::After(std::chrono::milliseconds(timeout_ms));
}

bool ValidDType(int dtype) { return dtype >= WEFT_DTYPE_F32 && dtype <= WEFT_DTYPE_U8; }
bool ValidOp(int op) { return op >= WEFT_REDUCE_SUM && op <= WEFT_REDUCE_PROD; }

DType DTypeOf(int dtype) { return static_cast<DType>(ValidDType(dtype) ? dtype : kUnknown); }
ReduceOp OpOf(int op) { return static_cast<ReduceOp>(ValidOp(op) ? op : kUnknown); }

// The result of a collective the team ran: a bad dtype or op of this caller is named with the
// caller's number (the team saw 0xFF in its place).
int ReportCollective(const char* function, const Status& s, int dtype, int op) noexcept {
  if (s.ok()) return WEFT_OK;
  if (s.code() == Code::kInvalidArgument && !ValidDType(dtype)) {
    char text[256];
    std::snprintf(text, sizeof text, "%s: dtype %d is not a WEFT_DTYPE_* value (0..%d)", function, dtype,
                  WEFT_DTYPE_U8);
    return Fail(Code::kInvalidArgument, text);
  }
  if (s.code() == Code::kInvalidArgument && !ValidOp(op)) {
    char text[256];
    std::snprintf(text, sizeof text, "%s: op %d is not a WEFT_REDUCE_* value (0..%d)", function, op,
                  WEFT_REDUCE_PROD);
    return Fail(Code::kInvalidArgument, text);
  }
  return Fail(s);
}

// For the collectives that take no op: any valid op keeps ReportCollective to the dtype.
constexpr int kNoOp = WEFT_REDUCE_SUM;

int EnumOutOfRange(const char* function, const char* what, int value, const char* family, int last) noexcept {
  char text[256];
  std::snprintf(text, sizeof text, "%s: %s %d is not a %s value (0..%d)", function, what, value, family, last);
  return Fail(Code::kInvalidArgument, text);
}

weft::symm::TeamOptions OptionsOf(const weft_team_options* o) {
  weft::symm::TeamOptions options;
  if (o == nullptr) return options;
  options.heap_bytes = o->heap_bytes;
  options.slot_bytes = o->slot_bytes;
  options.one_shot_max_bytes = o->one_shot_max_bytes;
  options.timeout_ms = o->timeout_ms;
  options.device_heap_bytes = o->device_heap_bytes;
  options.device_async = o->device_async != 0;
  if (o->user_context_len > 0) {
    const auto* p = static_cast<const uint8_t*>(o->user_context);
    options.user_context.assign(p, p + o->user_context_len);
  }
  return options;
}

}  // namespace

extern "C" {

size_t weft_dtype_size(int dtype) { return ValidDType(dtype) ? weft::symm::DTypeSize(static_cast<DType>(dtype)) : 0; }

int weft_team_create(weft_pool* pool, const weft_team_options* options, weft_team** out) {
  WEFT_C_REQUIRE(pool);
  WEFT_C_REQUIRE(out);
  if (!pool->pool) return Fail(Code::kInternal, "the pool handle holds no pool");
  if (options && options->user_context == nullptr && options->user_context_len > 0)
    return NullArgument(__func__, "options->user_context");
  return Guard(__func__, [&]() -> int {
    auto team = Team::Create(*pool->pool, OptionsOf(options));
    if (!team.ok()) return Fail(team.status());
    auto handle = std::make_unique<weft_team>();
    handle->team = std::move(*team);
    *out = handle.release();
    return WEFT_OK;
  });
}

void weft_team_free(weft_team* team) {
  if (team == nullptr) return;
  Guard(__func__, [&]() -> int {
    team->team.reset();
    return WEFT_OK;
  });
  delete team;
}

uint32_t weft_team_rank(const weft_team* team) {
  return CheckTeam(__func__, team) == WEFT_OK ? team->team->rank() : UINT32_MAX;
}

uint32_t weft_team_size(const weft_team* team) { return CheckTeam(__func__, team) == WEFT_OK ? team->team->size() : 0; }

uint64_t weft_team_heap_bytes(const weft_team* team) {
  return CheckTeam(__func__, team) == WEFT_OK ? team->team->heap_bytes() : 0;
}

int weft_team_pool_rank(const weft_team* team, uint32_t team_rank, uint32_t* out) {
  WEFT_C_REQUIRE_TEAM(team);
  WEFT_C_REQUIRE(out);
  if (team_rank >= team->team->size()) {
    char text[128];
    std::snprintf(text, sizeof text, "%s: rank %u is not in this team of %u", __func__, team_rank, team->team->size());
    return Fail(Code::kInvalidArgument, text);
  }
  *out = team->team->pool_rank(team_rank);
  return WEFT_OK;
}

int weft_team_user_context(const weft_team* team, uint32_t team_rank, const void** out, size_t* out_len) {
  WEFT_C_REQUIRE_TEAM(team);
  WEFT_C_REQUIRE(out);
  WEFT_C_REQUIRE(out_len);
  const auto& contexts = team->team->user_contexts();
  if (team_rank >= contexts.size()) {
    char text[128];
    std::snprintf(text, sizeof text, "%s: rank %u is not in this team of %zu", __func__, team_rank, contexts.size());
    return Fail(Code::kInvalidArgument, text);
  }
  *out = contexts[team_rank].data();
  *out_len = contexts[team_rank].size();
  return WEFT_OK;
}

int weft_team_split(weft_team* team, const uint32_t* ranks, size_t n, int64_t timeout_ms, weft_team** out) {
  WEFT_C_REQUIRE_TEAM(team);
  WEFT_C_REQUIRE(out);
  // A NULL list is passed on as an empty one, which the team refuses in a round of its own.
  if (ranks == nullptr) n = 0;
  return Guard(__func__, [&]() -> int {
    auto sub = team->team->Split(std::span<const uint32_t>(ranks, n), DeadlineOfCall(timeout_ms));
    if (!sub.ok()) return Fail(sub.status());
    *out = nullptr;
    if (*sub == nullptr) return WEFT_OK;  // not a member
    auto handle = std::make_unique<weft_team>();
    handle->team = std::move(*sub);
    *out = handle.release();
    return WEFT_OK;
  });
}

int weft_symm_malloc(weft_team* team, uint64_t bytes, int64_t timeout_ms, uint64_t* out_offset) {
  WEFT_C_REQUIRE_TEAM(team);
  WEFT_C_REQUIRE(out_offset);
  return Guard(__func__, [&]() -> int {
    auto r = team->team->Malloc(bytes, DeadlineOfCall(timeout_ms));
    if (!r.ok()) return Fail(r.status());
    *out_offset = *r;
    return WEFT_OK;
  });
}

int weft_symm_free(weft_team* team, uint64_t offset, int64_t timeout_ms) {
  WEFT_C_REQUIRE_TEAM(team);
  return Guard(__func__, [&]() -> int { return Report(team->team->Free(offset, DeadlineOfCall(timeout_ms))); });
}

int weft_symm_local(const weft_team* team, uint64_t offset, void** out) {
  WEFT_C_REQUIRE_TEAM(team);
  WEFT_C_REQUIRE(out);
  void* p = team->team->Local(offset);
  if (p == nullptr) {
    char text[160];
    std::snprintf(text, sizeof text, "%s: offset %llu is past the heap of %llu bytes", __func__,
                  static_cast<unsigned long long>(offset), static_cast<unsigned long long>(team->team->heap_bytes()));
    return Fail(Code::kOutOfRange, text);
  }
  *out = p;
  return WEFT_OK;
}

int weft_symm_device_malloc(weft_team* team, uint64_t bytes, int64_t timeout_ms, uint64_t* out_offset) {
  WEFT_C_REQUIRE_TEAM(team);
  WEFT_C_REQUIRE(out_offset);
  return Guard(__func__, [&]() -> int {
    auto r = team->team->DeviceMalloc(bytes, DeadlineOfCall(timeout_ms));
    if (!r.ok()) return Fail(r.status());
    *out_offset = *r;
    return WEFT_OK;
  });
}

int weft_symm_device_free(weft_team* team, uint64_t offset, int64_t timeout_ms) {
  WEFT_C_REQUIRE_TEAM(team);
  return Guard(__func__, [&]() -> int { return Report(team->team->DeviceFree(offset, DeadlineOfCall(timeout_ms))); });
}

int weft_symm_device_local(const weft_team* team, uint64_t offset, void** out) {
  WEFT_C_REQUIRE_TEAM(team);
  WEFT_C_REQUIRE(out);
  return Guard(__func__, [&]() -> int {
    auto r = team->team->DevicePeerAddress(team->team->rank(), offset);
    if (!r.ok()) return Fail(r.status());
    *out = *r;
    return WEFT_OK;
  });
}

int weft_symm_device_peer_address(const weft_team* team, uint32_t team_rank, uint64_t offset, void** out) {
  WEFT_C_REQUIRE_TEAM(team);
  WEFT_C_REQUIRE(out);
  return Guard(__func__, [&]() -> int {
    auto r = team->team->DevicePeerAddress(team_rank, offset);
    if (!r.ok()) return Fail(r.status());
    *out = *r;
    return WEFT_OK;
  });
}

void weft_team_set_stream(weft_team* team, void* cuda_stream) {
  if (CheckTeam(__func__, team) == WEFT_OK) team->team->SetStream(cuda_stream);
}

int weft_team_device_synchronize(weft_team* team, int64_t timeout_ms) {
  WEFT_C_REQUIRE_TEAM(team);
  return Guard(__func__, [&]() -> int { return Report(team->team->DeviceSynchronize(DeadlineOfCall(timeout_ms))); });
}

int weft_symm_peer_address(const weft_team* team, uint32_t team_rank, uint64_t offset, void** out) {
  WEFT_C_REQUIRE_TEAM(team);
  WEFT_C_REQUIRE(out);
  return Guard(__func__, [&]() -> int {
    auto r = team->team->PeerAddress(team_rank, offset);
    if (!r.ok()) return Fail(r.status());
    *out = *r;
    return WEFT_OK;
  });
}

int weft_symm_put(weft_team* team, uint32_t team_rank, uint64_t dst_offset, const void* src, uint64_t len) {
  WEFT_C_REQUIRE_TEAM(team);
  if (len > 0) WEFT_C_REQUIRE(src);
  return Guard(__func__, [&]() -> int { return Report(team->team->Put(team_rank, dst_offset, src, len)); });
}

int weft_symm_get(weft_team* team, void* dst, uint32_t team_rank, uint64_t src_offset, uint64_t len) {
  WEFT_C_REQUIRE_TEAM(team);
  if (len > 0) WEFT_C_REQUIRE(dst);
  return Guard(__func__, [&]() -> int { return Report(team->team->Get(dst, team_rank, src_offset, len)); });
}

int weft_symm_put_signal(weft_team* team, uint32_t team_rank, uint64_t dst_offset, const void* src, uint64_t len,
                         uint64_t sig_offset, uint64_t value, int signal_op) {
  WEFT_C_REQUIRE_TEAM(team);
  if (len > 0) WEFT_C_REQUIRE(src);
  if (signal_op != WEFT_SIGNAL_SET && signal_op != WEFT_SIGNAL_ADD)
    return EnumOutOfRange(__func__, "signal_op", signal_op, "WEFT_SIGNAL_*", WEFT_SIGNAL_ADD);
  return Guard(__func__, [&]() -> int {
    return Report(team->team->PutSignal(team_rank, dst_offset, src, len, sig_offset, value,
                                        static_cast<SignalOp>(signal_op)));
  });
}

int weft_symm_wait_until(weft_team* team, uint64_t sig_offset, int cmp, uint64_t value, int64_t timeout_ms) {
  WEFT_C_REQUIRE_TEAM(team);
  if (cmp < WEFT_CMP_EQ || cmp > WEFT_CMP_LE) return EnumOutOfRange(__func__, "cmp", cmp, "WEFT_CMP_*", WEFT_CMP_LE);
  return Guard(__func__, [&]() -> int {
    return Report(team->team->WaitUntil(sig_offset, static_cast<Cmp>(cmp), value, DeadlineOfCall(timeout_ms)));
  });
}

int weft_symm_signal_value(const weft_team* team, uint64_t sig_offset, uint64_t* out) {
  WEFT_C_REQUIRE_TEAM(team);
  WEFT_C_REQUIRE(out);
  // Team::SignalValue reads 0 for a bad offset; from C that is the caller's error, so say so.
  const uint64_t heap = team->team->heap_bytes();
  if (sig_offset % 8 != 0 || sig_offset > heap || heap - sig_offset < 8) {
    char text[160];
    std::snprintf(text, sizeof text, "%s: signal offset %llu is not an aligned word of the heap of %llu bytes",
                  __func__, static_cast<unsigned long long>(sig_offset), static_cast<unsigned long long>(heap));
    return Fail(Code::kInvalidArgument, text);
  }
  *out = team->team->SignalValue(sig_offset);
  return WEFT_OK;
}

int weft_symm_fence(weft_team* team) {
  WEFT_C_REQUIRE_TEAM(team);
  team->team->Fence();
  return WEFT_OK;
}

int weft_symm_quiet(weft_team* team) {
  WEFT_C_REQUIRE_TEAM(team);
  team->team->Quiet();
  return WEFT_OK;
}

int weft_team_barrier(weft_team* team, int64_t timeout_ms) {
  WEFT_C_REQUIRE_TEAM(team);
  return Guard(__func__, [&]() -> int { return Report(team->team->Barrier(DeadlineOfCall(timeout_ms))); });
}

// ---- the eight collectives: NULL buffers go on to the team, which refuses them in a round ----

int weft_team_broadcast(weft_team* team, void* buf, uint64_t count, int dtype, uint32_t root, int64_t timeout_ms) {
  WEFT_C_REQUIRE_TEAM(team);
  return Guard(__func__, [&]() -> int {
    Status s = team->team->Broadcast(buf, count, DTypeOf(dtype), root, DeadlineOfCall(timeout_ms));
    return ReportCollective(__func__, s, dtype, kNoOp);
  });
}

int weft_team_scatter(weft_team* team, const void* send, void* recv, uint64_t count, int dtype, uint32_t root,
                      int64_t timeout_ms) {
  WEFT_C_REQUIRE_TEAM(team);
  return Guard(__func__, [&]() -> int {
    Status s = team->team->Scatter(send, recv, count, DTypeOf(dtype), root, DeadlineOfCall(timeout_ms));
    return ReportCollective(__func__, s, dtype, kNoOp);
  });
}

int weft_team_gather(weft_team* team, const void* send, void* recv, uint64_t count, int dtype, uint32_t root,
                     int64_t timeout_ms) {
  WEFT_C_REQUIRE_TEAM(team);
  return Guard(__func__, [&]() -> int {
    Status s = team->team->Gather(send, recv, count, DTypeOf(dtype), root, DeadlineOfCall(timeout_ms));
    return ReportCollective(__func__, s, dtype, kNoOp);
  });
}

int weft_team_allgather(weft_team* team, const void* send, void* recv, uint64_t count, int dtype,
                        int64_t timeout_ms) {
  WEFT_C_REQUIRE_TEAM(team);
  return Guard(__func__, [&]() -> int {
    Status s = team->team->AllGather(send, recv, count, DTypeOf(dtype), DeadlineOfCall(timeout_ms));
    return ReportCollective(__func__, s, dtype, kNoOp);
  });
}

int weft_team_reduce(weft_team* team, const void* send, void* recv, uint64_t count, int dtype, int op,
                     uint32_t root, int64_t timeout_ms) {
  WEFT_C_REQUIRE_TEAM(team);
  return Guard(__func__, [&]() -> int {
    Status s = team->team->Reduce(send, recv, count, DTypeOf(dtype), OpOf(op), root, DeadlineOfCall(timeout_ms));
    return ReportCollective(__func__, s, dtype, op);
  });
}

int weft_team_reduce_scatter(weft_team* team, const void* send, void* recv, uint64_t count, int dtype, int op,
                             int64_t timeout_ms) {
  WEFT_C_REQUIRE_TEAM(team);
  return Guard(__func__, [&]() -> int {
    Status s = team->team->ReduceScatter(send, recv, count, DTypeOf(dtype), OpOf(op), DeadlineOfCall(timeout_ms));
    return ReportCollective(__func__, s, dtype, op);
  });
}

int weft_team_allreduce(weft_team* team, const void* send, void* recv, uint64_t count, int dtype, int op,
                        int64_t timeout_ms) {
  WEFT_C_REQUIRE_TEAM(team);
  return Guard(__func__, [&]() -> int {
    Status s = team->team->AllReduce(send, recv, count, DTypeOf(dtype), OpOf(op), DeadlineOfCall(timeout_ms));
    return ReportCollective(__func__, s, dtype, op);
  });
}

int weft_team_alltoall(weft_team* team, const void* send, void* recv, uint64_t count, int dtype,
                       int64_t timeout_ms) {
  WEFT_C_REQUIRE_TEAM(team);
  return Guard(__func__, [&]() -> int {
    Status s = team->team->AllToAll(send, recv, count, DTypeOf(dtype), DeadlineOfCall(timeout_ms));
    return ReportCollective(__func__, s, dtype, kNoOp);
  });
}

}  // extern "C"
