// weft._weft: the native module behind the `weft` package (python/weft/__init__.py wraps it).
//
// This file binds bm::Pool; trans_ext.cc binds the transfer engine, store_ext.cc the KV store;
// ext_common.h holds what they share. It binds bm::Pool directly (nanobind), turns every non-OK
// Status into the typed exception that __init__.py registers for its code (weft.PoolFull, ...),
// accepts memory as ints (addresses, GVAs) or as objects that expose their memory (buffer
// protocol, torch-like data_ptr(), __cuda_array_interface__, __array_interface__, DLPack), and
// releases the GIL in every call that can block.
#include <algorithm>
#include <Python.h>
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <weft/config.h>
#include <weft/pool.h>

#include "base/status.h"
#include "engine/engine.h"
#include "ext_common.h"

namespace nb = nanobind;
using namespace nb::literals;

void BindTrans(nb::module_& m);  // trans_ext.cc: TransferEngine, MetadataServer
void BindCuda(nb::module_& m);   // cuda_ext.cc: cuda_available, cuda_status
void BindStore(nb::module_& m);  // store_ext.cc: Store
void BindSymm(nb::module_& m);   // symm_ext.cc: Team, SymmBuffer

namespace {

using namespace weft::pyext;
using weft::bm::Pool;

class PyCopy;

class PyPool {
 public:
  explicit PyPool(const std::map<std::string, std::string>& overrides) {
    auto config = weft::LoadConfig("", overrides);
    if (!config.ok()) Raise(config.status());
    config_ = *config;
  }
  ~PyPool() = default;  // ~Pool leaves

  void Join(int mode) {
    if (pool_ && !left_) RaiseCode(Code::kAlreadyExists, "this Pool has already joined '{}'", config_.pool_name);
    if (mode < 0 || mode > 2) RaiseCode(Code::kInvalidArgument, "join mode {} is not 0 (auto), 1 (host) or 2 (join)", mode);
    weft::Result<std::unique_ptr<Pool>> joined = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      pool_.reset();
      joined = Pool::Join(config_, static_cast<weft::bm::JoinMode>(mode));
    }
    if (!joined.ok()) Raise(joined.status());
    pool_ = std::move(*joined);
    left_ = false;
  }

  void Leave() {
    if (!pool_) return;
    // Leaving unmaps this peer's slice, where the symmetric heaps of its teams live: while a
    // Team (or a SymmBuffer, which holds one) is alive, its views would read unmapped memory.
    // A team that is only garbage (held by the cycle of an exception's traceback, say) is
    // collected first.
    if (pool_.use_count() > 1) nb::module_::import_("gc").attr("collect")();
    if (pool_.use_count() > 1)
      RaiseCode(Code::kBusy, "a weft.symm Team made on this pool (or a SymmBuffer of one) is still alive: drop it "
                "before leaving (the pool then leaves when the last one goes)");
    left_ = true;
    Status s;
    {
      nb::gil_scoped_release release;
      s = pool_->Leave();
    }
    Check(s);
  }

  bool joined() const { return pool_ && !left_; }
  uint32_t rank() { return P().rank(); }
  uint64_t local_size() const { return config_.rank_size; }
  const weft::Config& config() const { return config_; }
  std::vector<uint32_t> live_ranks() { return P().LiveRanks(); }
  bool hosts_coordinator() { return P().hosts_coordinator(); }

  uint64_t SliceAddress(uint32_t rank, bool device) {
    return Value(P().SliceAddress(rank, device ? weft::Medium::kDevice : weft::Medium::kHost));
  }
  uint64_t DeviceSize() { return P().device_size(); }
  uint32_t RankOf(uint64_t gva) { return Value(P().RankOf(gva)); }

  uint64_t Alloc(uint64_t size, int placement, uint32_t rank, bool device) {
    weft::Placement where;
    const auto medium = device ? weft::Medium::kDevice : weft::Medium::kHost;
    switch (placement) {
      case 0: where = weft::Placement::Local(medium); break;
      case 1: where = weft::Placement::OnRank(rank, medium); break;
      case 2: where = weft::Placement::Spread(medium); break;
      default: RaiseCode(Code::kInvalidArgument, "placement {} is not 0 (local), 1 (rank) or 2 (spread)", placement);
    }
    Pool& pool = P();
    weft::Result<uint64_t> r = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      r = pool.Alloc(size, where);
    }
    return Value(std::move(r));
  }

  void Free(uint64_t gva) {
    Pool& pool = P();
    Status s;
    {
      nb::gil_scoped_release release;
      s = pool.Free(gva);
    }
    Check(s);
  }

  void Copy(nb::handle dst, nb::handle src, std::optional<uint64_t> length, nb::handle direction) {
    Pool& pool = P();
    const auto dir = DirectionOf(direction);
    MemPtr d = Resolve(dst, /*writable=*/true, "dst");
    MemPtr s = Resolve(src, /*writable=*/false, "src");
    const uint64_t len = LengthOf(P(), *d, *s, length);
    Status st;
    {
      nb::gil_scoped_release release;
      st = pool.Copy(d->addr, s->addr, len, dir);
    }
    Check(st);
  }

  // The bytes from a page batch's base to the end of its last page (what an int base must map).
  static uint64_t PagesExtent(const std::vector<uint32_t>& pages, uint64_t page_bytes) {
    const uint64_t last = pages.empty() ? 0 : *std::max_element(pages.begin(), pages.end());
    uint64_t extent = 0;
    return __builtin_mul_overflow(last + 1, page_bytes, &extent) ? UINT64_MAX : extent;
  }

  void CopyPages(nb::handle dst_base, nb::handle src_base, uint64_t page_bytes, nb::iterable dst_pages,
                 nb::iterable src_pages, nb::handle direction, std::optional<uintptr_t> stream) {
    Pool& pool = P();
    const auto dir = DirectionOf(direction);
    MemPtr d = Resolve(dst_base, /*writable=*/true, "dst_base");
    MemPtr s = Resolve(src_base, /*writable=*/false, "src_base");
    auto indices = [](nb::iterable items, const char* what) {
      std::vector<uint32_t> out;
      for (nb::handle item : items) {
        long long v = -1;
        if (!nb::try_cast<long long>(item, v) || v < 0 || v > static_cast<long long>(UINT32_MAX))
          RaiseCode(Code::kInvalidArgument, "{}[{}] is not a page index in 0..2^32-1", what, out.size());
        out.push_back(static_cast<uint32_t>(v));
      }
      return out;
    };
    const std::vector<uint32_t> dst_idx = indices(dst_pages, "dst_pages");
    const std::vector<uint32_t> src_idx = indices(src_pages, "src_pages");
    CheckLocalInt(pool, *d, PagesExtent(dst_idx, page_bytes), "dst_base");
    CheckLocalInt(pool, *s, PagesExtent(src_idx, page_bytes), "src_base");
    Status st;
    {
      nb::gil_scoped_release release;
      st = pool.CopyPages(d->addr, s->addr, page_bytes, dst_idx, src_idx, dir,
                          reinterpret_cast<void*>(stream.value_or(0)));
    }
    Check(st);
  }

  // The pairs are already in device memory (a tensor of uint32 (dst, src) pairs): no host list
  // to upload, so the launch is all that runs on the caller's thread.
  void CopyPagesDeviceIndexed(nb::handle dst_base, nb::handle src_base, uint64_t page_bytes, nb::handle pairs,
                              uint32_t max_dst_index, uint32_t max_src_index, nb::handle direction) {
    Pool& pool = P();
    const auto dir = DirectionOf(direction);
    MemPtr d = Resolve(dst_base, /*writable=*/true, "dst_base");
    MemPtr s = Resolve(src_base, /*writable=*/false, "src_base");
    MemPtr p = Resolve(pairs, /*writable=*/false, "pairs");
    if (!p->size)
      RaiseCode(Code::kInvalidArgument, "pairs: give a device tensor (or an object with a size) of uint32 (dst, src) "
                "pairs, not a bare address");
    if (*p->size % (2 * sizeof(uint32_t)) != 0)
      RaiseCode(Code::kInvalidArgument, "pairs: {} bytes is not a whole number of uint32 (dst, src) pairs", *p->size);
    const size_t count = *p->size / (2 * sizeof(uint32_t));
    CheckLocalInt(pool, *d, PagesExtent({max_dst_index}, page_bytes), "dst_base");
    CheckLocalInt(pool, *s, PagesExtent({max_src_index}, page_bytes), "src_base");
    Status st;
    {
      nb::gil_scoped_release release;
      st = pool.CopyPagesDeviceIndexed(d->addr, s->addr, page_bytes, reinterpret_cast<const uint32_t*>(p->addr), count,
                                       max_dst_index, max_src_index, dir);
    }
    Check(st);
  }

  nb::list CopyBatch(nb::iterable requests, nb::handle direction, bool check) {
    Pool& pool = P();
    const auto dir = DirectionOf(direction);
    std::vector<MemPtr> keep;
    std::vector<weft::engine::CopyRequest> batch;
    size_t index = 0;
    for (nb::handle item : requests) {
      nb::object seq = nb::steal(PySequence_Tuple(item.ptr()));
      if (!seq.is_valid()) {
        const std::string reason = TakePythonError();
        RaiseCode(Code::kInvalidArgument, "request {}: expected (dst, src) or (dst, src, length): {}", index, reason);
      }
      nb::tuple t = nb::borrow<nb::tuple>(seq);
      if (t.size() != 2 && t.size() != 3)
        RaiseCode(Code::kInvalidArgument, "request {}: expected (dst, src) or (dst, src, length)", index);
      MemPtr d = Resolve(t[0], true, "dst");
      MemPtr s = Resolve(t[1], false, "src");
      std::optional<uint64_t> length;
      if (t.size() == 3 && !t[2].is_none()) length = ToU64(t[2], "length");
      const uint64_t len = LengthOf(P(), *d, *s, length);
      batch.push_back({d->addr, s->addr, len});
      keep.push_back(std::move(d));
      keep.push_back(std::move(s));
      ++index;
    }
    std::vector<Status> statuses;
    {
      nb::gil_scoped_release release;
      statuses = pool.CopyBatch(batch, dir);
    }
    return ResultList(statuses, check);
  }

  std::unique_ptr<PyCopy> CopyAsync(nb::handle self, nb::handle dst, nb::handle src, std::optional<uint64_t> length,
                                    nb::handle direction);

  std::string Route(nb::handle dst, nb::handle src, std::optional<uint64_t> length, nb::handle direction) {
    Pool& pool = P();
    const auto dir = DirectionOf(direction);
    MemPtr d = Resolve(dst, false, "dst");
    MemPtr s = Resolve(src, false, "src");
    const uint64_t len = LengthOf(P(), *d, *s, length);
    return Value(pool.Route(d->addr, s->addr, len, dir)).ToString();
  }

  void Barrier(std::optional<double> timeout) {
    Pool& pool = P();
    Status s;
    {
      nb::gil_scoped_release release;
      s = pool.Barrier(DeadlineOf(timeout));
    }
    Check(s);
  }

  std::vector<uint32_t> WaitForPeers(uint32_t count, std::optional<double> timeout) {
    Pool& pool = P();
    weft::Result<std::vector<uint32_t>> r = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      r = pool.WaitForPeers(count, DeadlineOf(timeout));
    }
    return Value(std::move(r));
  }

  Pool& P() {
    if (!pool_) RaiseCode(Code::kInvalidArgument, "the pool '{}' is not joined: call join() or use it in a with block",
                          config_.pool_name);
    return *pool_;
  }

  // Shared with the symm Teams made on it (symm_ext.cc), which must not outlive it: a Team keeps
  // the Pool it was made on even after a rejoin replaced it here.
  std::shared_ptr<Pool> SharedPool() {
    P();
    return pool_;
  }

 private:
  template <typename T>
  static T Value(weft::Result<T> r) {
    if (!r.ok()) Raise(r.status());
    return std::move(r).value();
  }

  weft::Config config_;
  std::shared_ptr<Pool> pool_;
  bool left_ = false;
};

// An asynchronous copy. Holds the buffers of both ends (and the pool) until it is destroyed;
// destroying it while the copy runs waits for the copy, so the memory outlives it.
class PyCopy {
 public:
  PyCopy(weft::engine::CopyHandle handle, MemPtr dst, MemPtr src, nb::object pool)
      : handle_(std::move(handle)), dst_(std::move(dst)), src_(std::move(src)), pool_(std::move(pool)) {}
  ~PyCopy() {
    if (handle_.valid() && !handle_.Poll()) {
      nb::gil_scoped_release release;
      (void)handle_.Wait(weft::Deadline::Never());
    }
  }

  void Wait(std::optional<double> timeout) {
    Status s;
    {
      nb::gil_scoped_release release;
      s = handle_.Wait(DeadlineOf(timeout));
    }
    Check(s);
  }

  bool Poll() {
    std::optional<Status> s = handle_.Poll();
    if (!s) return false;
    Check(*s);
    return true;
  }

 private:
  weft::engine::CopyHandle handle_;
  MemPtr dst_, src_;
  nb::object pool_;
};

std::unique_ptr<PyCopy> PyPool::CopyAsync(nb::handle self, nb::handle dst, nb::handle src,
                                          std::optional<uint64_t> length, nb::handle direction) {
  Pool& pool = P();
  if (left_) RaiseCode(Code::kCancelled, "this peer has left the pool");
  const auto dir = DirectionOf(direction);
  MemPtr d = Resolve(dst, true, "dst");
  MemPtr s = Resolve(src, false, "src");
  const uint64_t len = LengthOf(P(), *d, *s, length);
  weft::engine::CopyHandle handle = pool.CopyAsync(d->addr, s->addr, len, dir);
  if (!handle.valid()) RaiseCode(Code::kCancelled, "this peer has left the pool");
  return std::make_unique<PyCopy>(std::move(handle), std::move(d), std::move(s), nb::borrow(self));
}

}  // namespace

std::shared_ptr<weft::bm::Pool> weft::pyext::JoinedPool(nb::handle native_pool) {
  PyPool* pool = nullptr;
  if (!nb::try_cast<PyPool*>(native_pool, pool) || pool == nullptr)
    throw nb::type_error("expected a weft.Pool");
  return pool->SharedPool();
}

NB_MODULE(_weft, m) {
  m.doc() = "weft native module; use the `weft` package";

  nb::dict codes;
  for (int c = 0; c <= kLastCode; ++c)
    codes[nb::str(std::string(weft::CodeName(static_cast<Code>(c))).c_str())] = c;
  m.attr("codes") = codes;
  m.attr("direction_count") = weft::engine::kDirectionCount;

  m.def(
      "_register_errors",
      [](nb::handle base, nb::dict by_code) {
        Py_XINCREF(base.ptr());
        g_error_base = base.ptr();
        for (auto [key, value] : by_code) {
          const int code = nb::cast<int>(key);
          if (code < 0 || code > kLastCode) continue;
          Py_XINCREF(value.ptr());
          g_errors[code] = value.ptr();
        }
      },
      "base"_a, "by_code"_a);

  m.def("code_name", [](int code) {
    if (code < 0 || code > kLastCode) return std::string("UNKNOWN");
    return std::string(weft::CodeName(static_cast<Code>(code)));
  });
  m.def("direction_name", [](nb::handle d) { return std::string(weft::engine::DirectionName(DirectionOf(d))); });
  m.def("config_keys", [] {
    std::vector<std::string> keys;
    for (const auto& k : weft::ConfigKeys()) keys.push_back(k.name);
    return keys;
  });
  m.def("parse_bytes", [](const std::string& text) {
    auto r = weft::ParseBytes(text);
    if (!r.ok()) Raise(r.status());
    return *r;
  });

  nb::class_<PyCopy>(m, "Copy")
      .def("wait", &PyCopy::Wait, "timeout"_a = nb::none())
      .def("poll", &PyCopy::Poll);

  nb::class_<PyPool>(m, "Pool")
      .def(nb::init<const std::map<std::string, std::string>&>(), "overrides"_a)
      .def("join", &PyPool::Join, "mode"_a)
      .def("leave", &PyPool::Leave)
      .def_prop_ro("joined", &PyPool::joined)
      .def_prop_ro("rank", &PyPool::rank)
      .def_prop_ro("local_size", &PyPool::local_size)
      .def_prop_ro("pool_name", [](PyPool& p) { return p.config().pool_name; })
      .def_prop_ro("coordinator", [](PyPool& p) { return p.config().CoordinatorPath(); })
      .def_prop_ro("live_ranks", &PyPool::live_ranks)
      .def_prop_ro("hosts_coordinator", &PyPool::hosts_coordinator)
      .def("slice_address", &PyPool::SliceAddress, "rank"_a, "device"_a)
      .def("device_size", &PyPool::DeviceSize)
      .def("rank_of", &PyPool::RankOf, "gva"_a)
      .def("alloc", &PyPool::Alloc, "size"_a, "placement"_a, "rank"_a, "device"_a)
      .def("free", &PyPool::Free, "gva"_a)
      .def("copy", &PyPool::Copy, "dst"_a, "src"_a, "length"_a.none(), "direction"_a)
      .def("copy_batch", &PyPool::CopyBatch, "requests"_a, "direction"_a, "check"_a)
      .def("copy_pages", &PyPool::CopyPages, "dst_base"_a, "src_base"_a, "page_bytes"_a, "dst_pages"_a,
           "src_pages"_a, "direction"_a, "stream"_a.none())
      .def("copy_pages_device_indexed", &PyPool::CopyPagesDeviceIndexed, "dst_base"_a, "src_base"_a, "page_bytes"_a,
           "pairs"_a, "max_dst_index"_a, "max_src_index"_a, "direction"_a)
      .def(
          "copy_async",
          [](nb::pointer_and_handle<PyPool> self, nb::handle dst, nb::handle src, std::optional<uint64_t> length,
             nb::handle direction) { return self.p->CopyAsync(self.h, dst, src, length, direction); },
          "dst"_a, "src"_a, "length"_a.none(), "direction"_a)
      .def("route", &PyPool::Route, "dst"_a, "src"_a, "length"_a.none(), "direction"_a)
      .def("barrier", &PyPool::Barrier, "timeout"_a.none())
      .def("wait_for_peers", &PyPool::WaitForPeers, "count"_a, "timeout"_a.none());

  BindTrans(m);
  BindCuda(m);
  BindStore(m);
  BindSymm(m);
}
