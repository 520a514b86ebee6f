// The C API (include/weft/weft.h) over bm::Pool. Every entry point catches every exception
// (Guard) and turns a Status into a negative code plus the thread-local weft_last_error().
#include "weft/weft.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <weft/config.h>
#include <weft/pool.h>

#include "engine/engine.h"
#include "bindings/c/c_guard.h"
#include "base/status.h"

using weft::Code;
using weft::Status;

struct weft_copy_handle {
  weft::CopyHandle handle;
};

namespace {

using namespace weft::c_api;

// The codes are weft::Code negated; the header spells them out, so check they agree.
#define WEFT_C_CODE(c_name, cpp_name) static_assert(c_name == -static_cast<int>(Code::cpp_name), #c_name);
WEFT_C_CODE(WEFT_OK, kOk)
WEFT_C_CODE(WEFT_E_INVALID_ARGUMENT, kInvalidArgument)
WEFT_C_CODE(WEFT_E_OUT_OF_RANGE, kOutOfRange)
WEFT_C_CODE(WEFT_E_INVALID_ADDRESS, kInvalidAddress)
WEFT_C_CODE(WEFT_E_DOUBLE_FREE, kDoubleFree)
WEFT_C_CODE(WEFT_E_POOL_FULL, kPoolFull)
WEFT_C_CODE(WEFT_E_PEER_DOWN, kPeerDown)
WEFT_C_CODE(WEFT_E_TIMEOUT, kTimeout)
WEFT_C_CODE(WEFT_E_MISMATCH, kMismatch)
WEFT_C_CODE(WEFT_E_PROTOCOL, kProtocol)
WEFT_C_CODE(WEFT_E_IO, kIo)
WEFT_C_CODE(WEFT_E_UNAVAILABLE, kUnavailable)
WEFT_C_CODE(WEFT_E_NOT_SUPPORTED, kNotSupported)
WEFT_C_CODE(WEFT_E_PERMISSION_DENIED, kPermissionDenied)
WEFT_C_CODE(WEFT_E_UNAUTHENTICATED, kUnauthenticated)
WEFT_C_CODE(WEFT_E_NOT_FOUND, kNotFound)
WEFT_C_CODE(WEFT_E_ALREADY_EXISTS, kAlreadyExists)
WEFT_C_CODE(WEFT_E_CANCELLED, kCancelled)
WEFT_C_CODE(WEFT_E_NOT_REGISTERED, kNotRegistered)
WEFT_C_CODE(WEFT_E_CUDA, kCuda)
WEFT_C_CODE(WEFT_E_INTERNAL, kInternal)
WEFT_C_CODE(WEFT_E_BUSY, kBusy)
#undef WEFT_C_CODE
constexpr int kLastCode = static_cast<int>(weft::kLastCode);
using weft::Direction;

#define WEFT_C_DIR(c_name, cpp_name) static_assert(c_name == static_cast<int>(Direction::cpp_name), #c_name);
WEFT_C_DIR(WEFT_DIR_AUTO, kAuto)
WEFT_C_DIR(WEFT_DIR_LH2LH, kLH2LH)
WEFT_C_DIR(WEFT_DIR_LH2GH, kLH2GH)
WEFT_C_DIR(WEFT_DIR_GH2LH, kGH2LH)
WEFT_C_DIR(WEFT_DIR_GH2GH, kGH2GH)
WEFT_C_DIR(WEFT_DIR_LH2GD, kLH2GD)
WEFT_C_DIR(WEFT_DIR_LD2GH, kLD2GH)
WEFT_C_DIR(WEFT_DIR_LD2GD, kLD2GD)
WEFT_C_DIR(WEFT_DIR_GH2GD, kGH2GD)
WEFT_C_DIR(WEFT_DIR_GH2LD, kGH2LD)
WEFT_C_DIR(WEFT_DIR_GD2GH, kGD2GH)
WEFT_C_DIR(WEFT_DIR_GD2GD, kGD2GD)
WEFT_C_DIR(WEFT_DIR_GD2LH, kGD2LH)
WEFT_C_DIR(WEFT_DIR_GD2LD, kGD2LD)
WEFT_C_DIR(WEFT_DIR_LH2LD, kLH2LD)
WEFT_C_DIR(WEFT_DIR_LD2LH, kLD2LH)
WEFT_C_DIR(WEFT_DIR_LD2LD, kLD2LD)
#undef WEFT_C_DIR
static_assert(WEFT_DIR_LD2LD + 1 == weft::engine::kDirectionCount, "a direction was added to the engine: add it to weft.h");

static_assert(WEFT_PLACE_LOCAL == static_cast<int>(weft::Placement::Kind::kLocal));
static_assert(WEFT_PLACE_RANK == static_cast<int>(weft::Placement::Kind::kRank));
static_assert(WEFT_PLACE_SPREAD == static_cast<int>(weft::Placement::Kind::kSpread));
static_assert(WEFT_JOIN_AUTO == static_cast<int>(weft::bm::JoinMode::kAuto));
static_assert(WEFT_JOIN_HOST == static_cast<int>(weft::bm::JoinMode::kHost));
static_assert(WEFT_JOIN_JOIN == static_cast<int>(weft::bm::JoinMode::kJoin));

int CheckPool(const char* function, const weft_pool* pool) noexcept {
  if (pool == nullptr) return NullArgument(function, "pool");
  if (!pool->pool) return Fail(Code::kInternal, "the pool handle holds no pool");
  return WEFT_OK;
}

#define WEFT_C_REQUIRE_POOL(pool)                                 \
  do {                                                            \
    if (int rc_ = CheckPool(__func__, pool); rc_ != WEFT_OK) return rc_; \
  } while (0)

int ParseDirection(const char* function, int direction, Direction* out) noexcept {
  if (direction < 0 || direction >= weft::engine::kDirectionCount) {
    char text[256];
    std::snprintf(text, sizeof text, "%s: direction %d is not a WEFT_DIR_* value (0..%d)", function, direction,
                  weft::engine::kDirectionCount - 1);
    return Fail(Code::kInvalidArgument, text);
  }
  *out = static_cast<Direction>(direction);
  return WEFT_OK;
}

#define WEFT_C_DIRECTION(direction, out)                                              \
  Direction out;                                                                      \
  do {                                                                                \
    if (int rc_ = ParseDirection(__func__, direction, &out); rc_ != WEFT_OK) return rc_; \
  } while (0)


}  // namespace

extern "C" {

const char* weft_error_string(int code) {
  if (code > 0 || code < -kLastCode) return "UNKNOWN";
  return weft::CodeName(static_cast<Code>(-code)).data();  // the names are string literals
}

const char* weft_last_error(void) { return t_last_error; }

weft_config* weft_config_new(void) {
  try {
    return new weft_config();
  } catch (...) {
    Fail(Code::kInternal, "weft_config_new: out of memory");
    return nullptr;
  }
}

int weft_config_set(weft_config* config, const char* key, const char* value) {
  WEFT_C_REQUIRE(config);
  WEFT_C_REQUIRE(key);
  WEFT_C_REQUIRE(value);
  return Guard(__func__, [&]() -> int {
    weft::Config scratch;  // checks the key and the value now, where the caller can tell which
    if (int rc = Report(weft::SetConfigValue(scratch, key, value)); rc != WEFT_OK) return rc;
    config->overrides[key] = value;
    return WEFT_OK;
  });
}

void weft_config_free(weft_config* config) { delete config; }

int weft_pool_join(const weft_config* config, int mode, weft_pool** out) {
  WEFT_C_REQUIRE(config);
  WEFT_C_REQUIRE(out);
  if (mode < WEFT_JOIN_AUTO || mode > WEFT_JOIN_JOIN) {
    char text[128];
    std::snprintf(text, sizeof text, "weft_pool_join: mode %d is not a WEFT_JOIN_* value", mode);
    return Fail(Code::kInvalidArgument, text);
  }
  return Guard(__func__, [&]() -> int {
    auto loaded = weft::LoadConfig("", config->overrides);
    if (!loaded.ok()) return Fail(loaded.status());
    auto pool = weft::bm::Pool::Join(*loaded, static_cast<weft::bm::JoinMode>(mode));
    if (!pool.ok()) return Fail(pool.status());
    auto handle = std::make_unique<weft_pool>();
    handle->pool = std::move(*pool);
    *out = handle.release();
    return WEFT_OK;
  });
}

int weft_pool_leave(weft_pool* pool) {
  WEFT_C_REQUIRE_POOL(pool);
  return Guard(__func__, [&]() -> int {
    pool->left = true;
    return Report(pool->pool->Leave());
  });
}

void weft_pool_free(weft_pool* pool) {
  if (pool == nullptr) return;
  Guard(__func__, [&]() -> int {
    pool->pool.reset();  // ~Pool leaves
    return WEFT_OK;
  });
  delete pool;
}

uint32_t weft_pool_rank(const weft_pool* pool) {
  if (CheckPool(__func__, pool) != WEFT_OK) return UINT32_MAX;
  return pool->pool->rank();
}

uint64_t weft_pool_local_size(const weft_pool* pool) {
  if (CheckPool(__func__, pool) != WEFT_OK) return 0;
  return pool->pool->local_size();
}

int weft_pool_slice_address(const weft_pool* pool, uint32_t rank, uint64_t* out) {
  WEFT_C_REQUIRE_POOL(pool);
  WEFT_C_REQUIRE(out);
  return Guard(__func__, [&]() -> int {
    auto r = pool->pool->SliceAddress(rank);
    if (!r.ok()) return Fail(r.status());
    *out = *r;
    return WEFT_OK;
  });
}

int weft_pool_device_slice_address(const weft_pool* pool, uint32_t rank, uint64_t* out) {
  WEFT_C_REQUIRE_POOL(pool);
  WEFT_C_REQUIRE(out);
  return Guard(__func__, [&]() -> int {
    auto r = pool->pool->SliceAddress(rank, weft::Medium::kDevice);
    if (!r.ok()) return Fail(r.status());
    *out = *r;
    return WEFT_OK;
  });
}

uint64_t weft_pool_device_size(const weft_pool* pool) { return pool && pool->pool ? pool->pool->device_size() : 0; }

int weft_pool_rank_of(const weft_pool* pool, uint64_t gva, uint32_t* out) {
  WEFT_C_REQUIRE_POOL(pool);
  WEFT_C_REQUIRE(out);
  return Guard(__func__, [&]() -> int {
    auto r = pool->pool->RankOf(gva);
    if (!r.ok()) return Fail(r.status());
    *out = *r;
    return WEFT_OK;
  });
}

int weft_pool_local_address(const weft_pool* pool, uint64_t gva, uint64_t len, void** out) {
  WEFT_C_REQUIRE_POOL(pool);
  WEFT_C_REQUIRE(out);
  return Guard(__func__, [&]() -> int {
    auto r = pool->pool->LocalAddress(gva, len);
    if (!r.ok()) return Fail(r.status());
    *out = *r;
    return WEFT_OK;
  });
}

int weft_pool_wait_for_peers(weft_pool* pool, uint32_t count, int64_t timeout_ms) {
  WEFT_C_REQUIRE_POOL(pool);
  return Guard(__func__, [&]() -> int {
    auto r = pool->pool->WaitForPeers(count, DeadlineOf(timeout_ms));
    return r.ok() ? WEFT_OK : Fail(r.status());
  });
}

int weft_pool_barrier(weft_pool* pool, int64_t timeout_ms) {
  WEFT_C_REQUIRE_POOL(pool);
  return Guard(__func__, [&]() -> int { return Report(pool->pool->Barrier(DeadlineOf(timeout_ms))); });
}

int weft_alloc(weft_pool* pool, uint64_t size, int placement, uint32_t rank, uint64_t* out_gva) {
  WEFT_C_REQUIRE_POOL(pool);
  WEFT_C_REQUIRE(out_gva);
  weft::Placement where;
  const auto medium = (placement & WEFT_PLACE_DEVICE) ? weft::Medium::kDevice : weft::Medium::kHost;
  switch (placement & ~WEFT_PLACE_DEVICE) {
    case WEFT_PLACE_LOCAL: where = weft::Placement::Local(medium); break;
    case WEFT_PLACE_RANK: where = weft::Placement::OnRank(rank, medium); break;
    case WEFT_PLACE_SPREAD: where = weft::Placement::Spread(medium); break;
    default: {
      char text[128];
      std::snprintf(text, sizeof text, "weft_alloc: placement %d is not a WEFT_PLACE_* value", placement);
      return Fail(Code::kInvalidArgument, text);
    }
  }
  return Guard(__func__, [&]() -> int {
    auto r = pool->pool->Alloc(size, where);
    if (!r.ok()) return Fail(r.status());
    *out_gva = *r;
    return WEFT_OK;
  });
}

int weft_free(weft_pool* pool, uint64_t gva) {
  WEFT_C_REQUIRE_POOL(pool);
  return Guard(__func__, [&]() -> int { return Report(pool->pool->Free(gva)); });
}

int weft_copy(weft_pool* pool, uint64_t dst, uint64_t src, uint64_t len, int direction) {
  WEFT_C_REQUIRE_POOL(pool);
  WEFT_C_DIRECTION(direction, dir);
  return Guard(__func__, [&]() -> int { return Report(pool->pool->Copy(dst, src, len, dir)); });
}

int weft_copy_pages(weft_pool* pool, uint64_t dst_base, uint64_t src_base, uint64_t page_bytes,
                    const uint32_t* dst_pages, const uint32_t* src_pages, size_t count, int direction,
                    void* cuda_stream) {
  WEFT_C_REQUIRE_POOL(pool);
  if (count > 0) {
    WEFT_C_REQUIRE(dst_pages);
    WEFT_C_REQUIRE(src_pages);
  }
  WEFT_C_DIRECTION(direction, dir);
  return Guard(__func__, [&]() -> int {
    return Report(pool->pool->CopyPages(dst_base, src_base, page_bytes, {dst_pages, count}, {src_pages, count}, dir,
                                        cuda_stream));
  });
}

int weft_copy_pages_device_indexed(weft_pool* pool, uint64_t dst_base, uint64_t src_base, uint64_t page_bytes,
                                   const uint32_t* device_pairs, size_t count, uint32_t max_dst_index,
                                   uint32_t max_src_index, int direction) {
  WEFT_C_REQUIRE_POOL(pool);
  if (count > 0) WEFT_C_REQUIRE(device_pairs);
  WEFT_C_DIRECTION(direction, dir);
  return Guard(__func__, [&]() -> int {
    return Report(pool->pool->CopyPagesDeviceIndexed(dst_base, src_base, page_bytes, device_pairs, count,
                                                     max_dst_index, max_src_index, dir));
  });
}

int weft_copy_batch(weft_pool* pool, const weft_copy_request* requests, size_t n, int direction, int* results) {
  auto fill = [&](int rc) {
    if (results)
      for (size_t i = 0; i < n; ++i) results[i] = rc;
    return rc;
  };
  if (int rc = CheckPool(__func__, pool); rc != WEFT_OK) return fill(rc);
  if (requests == nullptr && n > 0) return fill(NullArgument(__func__, "requests"));
  Direction dir;
  if (int rc = ParseDirection(__func__, direction, &dir); rc != WEFT_OK) return fill(rc);
  if (n == 0) return WEFT_OK;
  return Guard(__func__, [&]() -> int {
    std::vector<weft::CopyRequest> batch(n);
    for (size_t i = 0; i < n; ++i) batch[i] = {requests[i].dst, requests[i].src, requests[i].len};
    std::vector<Status> statuses = pool->pool->CopyBatch(batch, dir);
    if (statuses.size() != n) return fill(Fail(Code::kInternal, "weft_copy_batch: the engine lost results"));
    int first = WEFT_OK;
    for (size_t i = 0; i < n; ++i) {
      const int rc = statuses[i].ok() ? WEFT_OK : -static_cast<int>(statuses[i].code());
      if (results) results[i] = rc;
      if (rc != WEFT_OK && first == WEFT_OK)
        first = Fail(statuses[i].Annotate("request " + std::to_string(i) + " of " + std::to_string(n)));
    }
    return first;
  });
}

int weft_copy_async(weft_pool* pool, uint64_t dst, uint64_t src, uint64_t len, int direction,
                    weft_copy_handle** out) {
  WEFT_C_REQUIRE_POOL(pool);
  WEFT_C_REQUIRE(out);
  WEFT_C_DIRECTION(direction, dir);
  return Guard(__func__, [&]() -> int {
    if (pool->left) return Fail(Code::kCancelled, "weft_copy_async: this peer has left the pool");
    auto handle = std::make_unique<weft_copy_handle>();
    handle->handle = pool->pool->CopyAsync(dst, src, len, dir);
    if (!handle->handle.valid()) return Fail(Code::kCancelled, "weft_copy_async: this peer has left the pool");
    *out = handle.release();
    return WEFT_OK;
  });
}

int weft_copy_wait(weft_copy_handle* copy, int64_t timeout_ms) {
  WEFT_C_REQUIRE(copy);
  return Guard(__func__, [&]() -> int { return Report(copy->handle.Wait(DeadlineOf(timeout_ms))); });
}

int weft_copy_poll(weft_copy_handle* copy) {
  WEFT_C_REQUIRE(copy);
  return Guard(__func__, [&]() -> int {
    std::optional<Status> s = copy->handle.Poll();
    if (!s) return 1;
    return Report(*s);
  });
}

void weft_copy_free(weft_copy_handle* copy) { delete copy; }

int weft_pool_route(weft_pool* pool, uint64_t dst, uint64_t src, uint64_t len, int direction, char* buf,
                    size_t buf_size) {
  WEFT_C_REQUIRE_POOL(pool);
  if (buf == nullptr && buf_size > 0) return NullArgument(__func__, "buf");
  WEFT_C_DIRECTION(direction, dir);
  return Guard(__func__, [&]() -> int {
    auto r = pool->pool->Route(dst, src, len, dir);
    if (!r.ok()) return Fail(r.status());
    const std::string text = r->ToString();
    if (buf_size > 0) {
      const size_t n = text.size() < buf_size - 1 ? text.size() : buf_size - 1;
      std::memcpy(buf, text.data(), n);
      buf[n] = '\0';
    }
    return static_cast<int>(text.size());
  });
}

}  // extern "C"
