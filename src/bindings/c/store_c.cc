// The store's C API (the KV store section of include/weft/weft.h) over weft::store::Store. As in
// weft_c.cc: arguments are checked before any C++ runs, every call into the store is inside
// Guard (no exception reaches C), and a failed Status becomes a negative code plus
// weft_last_error().
#include <cstdint>
#include <cstdio>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <weft/config.h>
#include <weft/store.h>

#include "api/store/types.h"
#include "base/status.h"
#include "bindings/c/c_guard.h"
#include "weft/weft.h"

using weft::Code;
using weft::Status;

struct weft_store {
  std::unique_ptr<weft::store::Store> store;
};

namespace {

using namespace weft::c_api;

// Keys are checked here only for NULL: an empty or over-long key is the store's to refuse, so the
// C and C++ APIs word those errors the same.

int CheckStore(const char* function, const weft_store* store) noexcept {
  if (store == nullptr) return NullArgument(function, "store");
  if (!store->store) return Fail(Code::kInternal, "the store handle holds no store");
  return WEFT_OK;
}

#define WEFT_C_REQUIRE_STORE(store)                                          \
  do {                                                                       \
    if (int rc_ = CheckStore(__func__, store); rc_ != WEFT_OK) return rc_;   \
  } while (0)

// The wire codec refuses a replica count outside 1..kMaxReplicas as a malformed message
// (PROTOCOL); from C it is the caller's argument, so it is refused here, where it can be named.
int CheckPlace(const char* function, const weft_store_place* place) noexcept {
  if (place == nullptr || (place->replicas >= 1 && place->replicas <= weft::store::kMaxReplicas)) return WEFT_OK;
  char text[256];
  std::snprintf(text, sizeof text, "%s: place->replicas is %u: 1..%u are allowed", function, place->replicas,
                weft::store::kMaxReplicas);
  return Fail(Code::kInvalidArgument, text);
}

weft::store::PlaceOptions PlaceOf(const weft_store_place* place) {
  weft::store::PlaceOptions options;
  if (place == nullptr) return options;
  options.replicas = place->replicas;
  options.soft_pin = place->soft_pin != 0;
  options.hard_pin = place->hard_pin != 0;
  options.preferred_rank = place->preferred_rank;
  return options;
}

int CodeOf(const Status& s) { return s.ok() ? WEFT_OK : -static_cast<int>(s.code()); }

// The first failure of a batch, with its index in the message; WEFT_OK when there is none.
int FirstFailure(const char* function, std::span<const Status> statuses) {
  for (size_t i = 0; i < statuses.size(); ++i) {
    if (statuses[i].ok()) continue;
    return Fail(statuses[i].Annotate(std::string(function) + ": key " + std::to_string(i) + " of " +
                                     std::to_string(statuses.size())));
  }
  return WEFT_OK;
}

// A batch refused before it ran: every result gets the same code.
template <typename T>
int RefuseBatch(int rc, T* results, size_t n) noexcept {
  if (results)
    for (size_t i = 0; i < n; ++i) results[i] = rc;
  return rc;
}

// The keys of a batch as the C++ API takes them; INVALID_ARGUMENT naming the first NULL key.
int CopyKeys(const char* function, const char* const* keys, size_t n, std::vector<std::string>* out) {
  out->reserve(n);
  for (size_t i = 0; i < n; ++i) {
    if (keys[i] == nullptr) {
      char text[256];
      std::snprintf(text, sizeof text, "%s: keys[%zu] is NULL", function, i);
      return Fail(Code::kInvalidArgument, text);
    }
    out->emplace_back(keys[i]);
  }
  return WEFT_OK;
}

int PutOne(const char* function, weft_store* store, const char* key, const void* value, uint64_t size,
           const weft_store_place* place, bool upsert) noexcept {
  // The checks name the public function (the macros would say PutOne).
  if (int rc = CheckStore(function, store); rc != WEFT_OK) return rc;
  if (key == nullptr) return NullArgument(function, "key");
  if (value == nullptr) return NullArgument(function, "value");
  if (int rc = CheckPlace(function, place); rc != WEFT_OK) return rc;
  return Guard(function, [&]() -> int {
    const std::span bytes(static_cast<const uint8_t*>(value), size);
    weft::store::Store& s = *store->store;
    return Report(upsert ? s.Upsert(key, bytes, PlaceOf(place)) : s.Put(key, bytes, PlaceOf(place)));
  });
}

// How many objects a remove took, into an optional out parameter.
int ReportCount(const weft::Result<uint64_t>& r, uint64_t* out) noexcept {
  if (!r.ok()) return Fail(r.status());
  if (out) *out = *r;
  return WEFT_OK;
}

}  // namespace

extern "C" {

int weft_store_open(const weft_config* config, int mode, weft_store** out) {
  WEFT_C_REQUIRE(config);
  WEFT_C_REQUIRE(out);
  if (mode < WEFT_JOIN_AUTO || mode > WEFT_JOIN_JOIN) {
    char text[128];
    std::snprintf(text, sizeof text, "weft_store_open: mode %d is not a WEFT_JOIN_* value", mode);
    return Fail(Code::kInvalidArgument, text);
  }
  return Guard(__func__, [&]() -> int {
    auto loaded = weft::LoadConfig("", config->overrides);
    if (!loaded.ok()) return Fail(loaded.status());
    auto opened = weft::store::Store::Open(*loaded, static_cast<weft::bm::JoinMode>(mode));
    if (!opened.ok()) return Fail(opened.status());
    auto handle = std::make_unique<weft_store>();
    handle->store = std::move(*opened);
    *out = handle.release();
    return WEFT_OK;
  });
}

int weft_store_close(weft_store* store) {
  if (store == nullptr) return WEFT_OK;
  const int rc = Guard(__func__, [&]() -> int {
    const int closed = store->store ? Report(store->store->Close()) : WEFT_OK;
    store->store.reset();  // ~Store closes again, which is a no-op after Close
    return closed;
  });
  delete store;
  return rc;
}

int weft_store_put(weft_store* store, const char* key, const void* value, uint64_t size,
                   const weft_store_place* place) {
  return PutOne(__func__, store, key, value, size, place, false);
}

int weft_store_upsert(weft_store* store, const char* key, const void* value, uint64_t size,
                      const weft_store_place* place) {
  return PutOne(__func__, store, key, value, size, place, true);
}

int weft_store_put_from(weft_store* store, const char* key, const void* buffer, uint64_t size,
                        const weft_store_place* place, int upsert) {
  WEFT_C_REQUIRE_STORE(store);
  WEFT_C_REQUIRE(key);
  WEFT_C_REQUIRE(buffer);
  if (int rc = CheckPlace(__func__, place); rc != WEFT_OK) return rc;
  return Guard(__func__, [&]() -> int {
    return Report(store->store->PutFrom(key, buffer, size, PlaceOf(place), upsert != 0));
  });
}

int64_t weft_store_get_into(weft_store* store, const char* key, void* buffer, uint64_t size) {
  WEFT_C_REQUIRE_STORE(store);
  WEFT_C_REQUIRE(key);
  WEFT_C_REQUIRE(buffer);
  int64_t bytes = 0;
  const int rc = Guard(__func__, [&]() -> int {
    auto r = store->store->GetInto(key, buffer, size);
    if (!r.ok()) return Fail(r.status());
    bytes = static_cast<int64_t>(*r);
    return WEFT_OK;
  });
  return rc != WEFT_OK ? rc : bytes;
}

int weft_store_get_size(weft_store* store, const char* key, uint64_t* out_size) {
  WEFT_C_REQUIRE_STORE(store);
  WEFT_C_REQUIRE(key);
  WEFT_C_REQUIRE(out_size);
  return Guard(__func__, [&]() -> int {
    auto r = store->store->Size(key);
    if (!r.ok()) return Fail(r.status());
    *out_size = *r;
    return WEFT_OK;
  });
}

int weft_store_exists(weft_store* store, const char* key) {
  WEFT_C_REQUIRE_STORE(store);
  WEFT_C_REQUIRE(key);
  return Guard(__func__, [&]() -> int {
    auto r = store->store->Exists(key);
    if (!r.ok()) return Fail(r.status());
    return *r ? 1 : 0;
  });
}

int weft_store_remove(weft_store* store, const char* key, int force) {
  WEFT_C_REQUIRE_STORE(store);
  WEFT_C_REQUIRE(key);
  return Guard(__func__, [&]() -> int { return Report(store->store->Remove(key, force != 0)); });
}

int weft_store_remove_by_regex(weft_store* store, const char* pattern, int force, uint64_t* out_removed) {
  WEFT_C_REQUIRE_STORE(store);
  WEFT_C_REQUIRE(pattern);
  return Guard(__func__, [&]() -> int { return ReportCount(store->store->RemoveByRegex(pattern, force != 0), out_removed); });
}

int weft_store_remove_all(weft_store* store, int force, uint64_t* out_removed) {
  WEFT_C_REQUIRE_STORE(store);
  return Guard(__func__, [&]() -> int { return ReportCount(store->store->RemoveAll(force != 0), out_removed); });
}

int weft_store_register_buffer(weft_store* store, void* buffer, uint64_t size) {
  WEFT_C_REQUIRE_STORE(store);
  WEFT_C_REQUIRE(buffer);
  return Guard(__func__, [&]() -> int { return Report(store->store->RegisterBuffer(buffer, size)); });
}

int weft_store_unregister_buffer(weft_store* store, void* buffer) {
  WEFT_C_REQUIRE_STORE(store);
  WEFT_C_REQUIRE(buffer);
  return Guard(__func__, [&]() -> int { return Report(store->store->UnregisterBuffer(buffer)); });
}

int weft_store_put_batch(weft_store* store, const char* const* keys, const void* const* values,
                         const uint64_t* sizes, size_t n, const weft_store_place* place, int upsert,
                         int* results) {
  if (int rc = CheckStore(__func__, store); rc != WEFT_OK) return RefuseBatch(rc, results, n);
  if (n == 0) return WEFT_OK;
  if (keys == nullptr) return RefuseBatch(NullArgument(__func__, "keys"), results, n);
  if (values == nullptr) return RefuseBatch(NullArgument(__func__, "values"), results, n);
  if (sizes == nullptr) return RefuseBatch(NullArgument(__func__, "sizes"), results, n);
  if (int rc = CheckPlace(__func__, place); rc != WEFT_OK) return RefuseBatch(rc, results, n);
  for (size_t i = 0; i < n; ++i) {
    if (values[i] != nullptr || sizes[i] == 0) continue;
    char text[256];
    std::snprintf(text, sizeof text, "%s: values[%zu] is NULL with a size of %llu", __func__, i,
                  static_cast<unsigned long long>(sizes[i]));
    return RefuseBatch(Fail(Code::kInvalidArgument, text), results, n);
  }
  bool filled = false;  // whether the store answered: results then hold its codes
  const int rc = Guard(__func__, [&]() -> int {
    std::vector<std::string> k;
    if (int bad = CopyKeys(__func__, keys, n, &k); bad != WEFT_OK) return bad;
    std::vector<weft::store::Span> spans(n);
    for (size_t i = 0; i < n; ++i) spans[i] = {values[i], sizes[i]};
    const std::vector<Status> statuses = store->store->PutBatch(k, spans, PlaceOf(place), upsert != 0);
    if (statuses.size() != n) return Fail(Code::kInternal, "weft_store_put_batch: the store lost results");
    if (results)
      for (size_t i = 0; i < n; ++i) results[i] = CodeOf(statuses[i]);
    filled = true;
    return FirstFailure(__func__, statuses);
  });
  return filled ? rc : RefuseBatch(rc, results, n);
}

int weft_store_get_into_batch(weft_store* store, const char* const* keys, void* const* buffers,
                              const uint64_t* sizes, size_t n, int64_t* results) {
  if (n == 0) return CheckStore(__func__, store);
  // Without results the caller could not learn the sizes read: refuse rather than read blind.
  if (results == nullptr) return NullArgument(__func__, "results");
  if (int rc = CheckStore(__func__, store); rc != WEFT_OK) return RefuseBatch<int64_t>(rc, results, n);
  if (keys == nullptr) return RefuseBatch<int64_t>(NullArgument(__func__, "keys"), results, n);
  if (buffers == nullptr) return RefuseBatch<int64_t>(NullArgument(__func__, "buffers"), results, n);
  if (sizes == nullptr) return RefuseBatch<int64_t>(NullArgument(__func__, "sizes"), results, n);
  bool filled = false;
  const int rc = Guard(__func__, [&]() -> int {
    std::vector<std::string> k;
    if (int bad = CopyKeys(__func__, keys, n, &k); bad != WEFT_OK) return bad;
    std::vector<weft::store::Buffer> into(n);
    for (size_t i = 0; i < n; ++i) into[i] = {buffers[i], sizes[i]};
    const std::vector<weft::Result<uint64_t>> got = store->store->GetIntoBatch(k, into);
    if (got.size() != n) return Fail(Code::kInternal, "weft_store_get_into_batch: the store lost results");
    std::vector<Status> statuses(n);
    for (size_t i = 0; i < n; ++i) {
      statuses[i] = got[i].status();
      results[i] = got[i].ok() ? static_cast<int64_t>(*got[i]) : CodeOf(statuses[i]);
    }
    filled = true;
    return FirstFailure(__func__, statuses);
  });
  return filled ? rc : RefuseBatch<int64_t>(rc, results, n);
}

int weft_store_describe(weft_store* store, const char* key, uint64_t* out_size, weft_store_replica* replicas,
                        size_t capacity, size_t* out_count, int32_t* out_disk_rank) {
  WEFT_C_REQUIRE_STORE(store);
  WEFT_C_REQUIRE(key);
  WEFT_C_REQUIRE(out_size);
  WEFT_C_REQUIRE(out_count);
  if (capacity > 0 && replicas == nullptr) return NullArgument(__func__, "replicas");
  return Guard(__func__, [&]() -> int {
    auto r = store->store->Describe(key);
    if (!r.ok()) return Fail(r.status());
    *out_size = r->size;
    *out_count = r->replicas.size();
    for (size_t i = 0; i < r->replicas.size() && i < capacity; ++i) replicas[i] = {r->replicas[i].rank, r->replicas[i].gva};
    if (out_disk_rank) *out_disk_rank = r->disk_rank;
    return WEFT_OK;
  });
}

}  // extern "C"
