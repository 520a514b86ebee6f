// weft._weft: the native module behind the `weft` package (python/weft/__init__.py wraps it).
//
// It binds bm::Pool directly (nanobind), turns every non-OK Status into the typed exception
// that __init__.py registers for its code (weft.PoolFull, ...), accepts memory as ints
// (addresses, GVAs) or as objects that expose their memory (buffer protocol, torch-like
// data_ptr(), __cuda_array_interface__, __array_interface__, DLPack), and releases the GIL in
// every call that can block.
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

#include "api/bm/pool.h"
#include "base/config.h"
#include "base/status.h"
#include "engine/engine.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using weft::Code;
using weft::Status;
using weft::bm::Pool;

constexpr int kLastCode = static_cast<int>(weft::kLastCode);

// Exception classes by code, registered once by __init__.py. Owned references that are never
// released: they live as long as the interpreter and must not be decref'd after it ends.
PyObject* g_error_base = nullptr;
PyObject* g_errors[kLastCode + 1] = {};

// An exception instance for a failed Status: cls(message, code).
nb::object MakeError(const Status& s) {
  const int code = static_cast<int>(s.code());
  PyObject* cls = (code >= 0 && code <= kLastCode && g_errors[code]) ? g_errors[code] : g_error_base;
  if (!cls) return nb::borrow(PyExc_RuntimeError)(s.ToString());
  return nb::borrow(cls)(s.message(), code);
}

[[noreturn]] void Raise(const Status& s) {
  nb::object exc = MakeError(s);
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
  throw nb::python_error();
}

void Check(const Status& s) {
  if (!s.ok()) Raise(s);
}

template <typename... Args>
[[noreturn]] void RaiseCode(Code code, fmt::format_string<Args...> format, Args&&... args) {
  Raise(Status(code, fmt::format(format, std::forward<Args>(args)...)));
}

// The text of the pending Python exception, which is cleared.
std::string TakePythonError() {
  nb::python_error err;
  nb::str text = nb::str(err.value());
  return text.c_str();
}

weft::Deadline DeadlineOf(std::optional<double> timeout_s) {
  if (!timeout_s || *timeout_s < 0 || std::isinf(*timeout_s)) return weft::Deadline::Never();
  return weft::Deadline::After(std::chrono::duration_cast<weft::Clock::duration>(std::chrono::duration<double>(*timeout_s)));
}

weft::engine::Direction DirectionOf(nb::handle direction) {
  if (nb::isinstance<nb::str>(direction)) {
    auto d = weft::engine::ParseDirection(nb::cast<std::string>(direction));
    if (!d.ok()) Raise(d.status());
    return *d;
  }
  if (PyLong_Check(direction.ptr()) && !PyBool_Check(direction.ptr())) {
    const long v = PyLong_AsLong(direction.ptr());
    if (v >= 0 && v < weft::engine::kDirectionCount) return static_cast<weft::engine::Direction>(v);
    if (PyErr_Occurred()) PyErr_Clear();
    RaiseCode(Code::kInvalidArgument, "direction {} is out of range (0..{})", v, weft::engine::kDirectionCount - 1);
  }
  throw nb::type_error("direction must be a str such as 'auto' or 'LH2GH' (or its number)");
}

// One end of a copy: an address, and the size of the memory behind it when an object gave it.
// Holds what keeps the memory alive and exported (buffer views, the object) until destroyed,
// which happens with the GIL held.
struct Mem {
  uint64_t addr = 0;
  std::optional<uint64_t> size;
  Py_buffer view{};
  bool has_view = false;
  nb::object keep;
  std::optional<nb::ndarray<nb::c_contig>> tensor;

  Mem() = default;
  Mem(const Mem&) = delete;
  Mem& operator=(const Mem&) = delete;
  ~Mem() {
    if (has_view) PyBuffer_Release(&view);
  }
};
using MemPtr = std::unique_ptr<Mem>;

uint64_t ToU64(nb::handle value, const char* what) {
  const unsigned long long v = PyLong_AsUnsignedLongLong(value.ptr());
  if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
    const std::string reason = TakePythonError();
    RaiseCode(Code::kInvalidArgument, "{}: {} is not an address or size (uint64): {}", what,
              nb::str(value).c_str(), reason);
  }
  return v;
}

// __array_interface__ / __cuda_array_interface__: {'data': (ptr, read_only), 'shape', 'typestr',
// 'strides' (None when C-contiguous)}.
void FromArrayInterface(Mem& m, nb::handle iface, bool writable, const char* what) {
  if (!nb::isinstance<nb::dict>(iface)) RaiseCode(Code::kInvalidArgument, "{}: the array interface is not a dict", what);
  nb::dict d = nb::borrow<nb::dict>(iface);
  nb::tuple data = nb::borrow<nb::tuple>(d["data"]);
  m.addr = ToU64(data[0], what);
  if (writable && nb::cast<bool>(data[1])) RaiseCode(Code::kInvalidArgument, "{}: the array is read-only", what);
  if (d.contains("strides") && !d["strides"].is_none()) {
    // Strides may be given even for a contiguous array; accept them when they are C order.
    nb::tuple shape = nb::borrow<nb::tuple>(d["shape"]);
    nb::tuple strides = nb::borrow<nb::tuple>(d["strides"]);
    std::string typestr = nb::cast<std::string>(d["typestr"]);
    int64_t expect = std::stoll(typestr.substr(2));
    for (size_t i = shape.size(); i-- > 0;) {
      if (nb::cast<int64_t>(shape[i]) > 1 && nb::cast<int64_t>(strides[i]) != expect)
        RaiseCode(Code::kInvalidArgument, "{}: the array is not contiguous", what);
      expect *= nb::cast<int64_t>(shape[i]);
    }
  }
  uint64_t n = std::stoull(nb::cast<std::string>(d["typestr"]).substr(2));
  for (nb::handle dim : nb::borrow<nb::tuple>(d["shape"])) n *= nb::cast<uint64_t>(dim);
  m.size = n;
}

// `what` names the argument in messages ("dst"); a destination must be writable.
MemPtr Resolve(nb::handle obj, bool writable, const char* what) {
  auto m = std::make_unique<Mem>();
  PyObject* o = obj.ptr();
  if (PyBool_Check(o)) throw nb::type_error(fmt::format("{}: a bool is not an address", what).c_str());
  if (PyLong_Check(o)) {
    m->addr = ToU64(obj, what);
    return m;
  }
  if (PyObject_CheckBuffer(o)) {
    const int flags = PyBUF_ANY_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(o, &m->view, flags) != 0) {
      const std::string reason = TakePythonError();
      RaiseCode(Code::kInvalidArgument, "{}: {}{}", what, reason,
                writable ? " (a destination must be a writable, contiguous buffer)" : " (a contiguous buffer is needed)");
    }
    m->has_view = true;
    m->addr = reinterpret_cast<uint64_t>(m->view.buf);
    m->size = static_cast<uint64_t>(m->view.len);
    return m;
  }
  // torch.Tensor and look-alikes, without importing torch.
  if (nb::hasattr(obj, "data_ptr") && nb::hasattr(obj, "element_size") && nb::hasattr(obj, "numel")) {
    if (nb::hasattr(obj, "is_contiguous") && !nb::cast<bool>(obj.attr("is_contiguous")()))
      RaiseCode(Code::kInvalidArgument, "{}: the tensor is not contiguous (call .contiguous() first)", what);
    m->addr = ToU64(obj.attr("data_ptr")(), what);
    m->size = nb::cast<uint64_t>(obj.attr("numel")()) * nb::cast<uint64_t>(obj.attr("element_size")());
    m->keep = nb::borrow(obj);
    return m;
  }
  for (const char* name : {"__cuda_array_interface__", "__array_interface__"}) {
    if (nb::hasattr(obj, name)) {
      FromArrayInterface(*m, obj.attr(name), writable, what);
      m->keep = nb::borrow(obj);
      return m;
    }
  }
  if (nb::hasattr(obj, "__dlpack__")) {
    nb::ndarray<nb::c_contig> t;
    if (!nb::try_cast(obj, t, /*convert=*/false))
      RaiseCode(Code::kInvalidArgument, "{}: the DLPack tensor cannot be used (it must be C-contiguous)", what);
    m->addr = reinterpret_cast<uint64_t>(t.data());
    m->size = t.nbytes();
    m->tensor = std::move(t);
    m->keep = nb::borrow(obj);
    return m;
  }
  throw nb::type_error(fmt::format("{}: expected an int address/GVA or an object exposing its memory (bytearray, "
                                   "memoryview, numpy array, torch tensor, ...), not {}",
                                   what, nb::type_name(obj.type()).c_str())
                           .c_str());
}

// The length of a copy: the given one (checked against the sizes that are known), else the
// size of the end(s) that have one.
uint64_t LengthOf(const Mem& dst, const Mem& src, std::optional<uint64_t> length) {
  if (length) {
    if (dst.size && *length > *dst.size)
      RaiseCode(Code::kOutOfRange, "length {} is larger than the destination ({} bytes)", *length, *dst.size);
    if (src.size && *length > *src.size)
      RaiseCode(Code::kOutOfRange, "length {} is larger than the source ({} bytes)", *length, *src.size);
    return *length;
  }
  if (dst.size && src.size && *dst.size != *src.size)
    RaiseCode(Code::kInvalidArgument, "the destination has {} bytes and the source {}: give length", *dst.size,
              *src.size);
  if (dst.size) return *dst.size;
  if (src.size) return *src.size;
  RaiseCode(Code::kInvalidArgument, "length is needed when both ends are addresses");
}

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

  uint64_t SliceAddress(uint32_t rank) { return Value(P().SliceAddress(rank)); }
  uint32_t RankOf(uint64_t gva) { return Value(P().RankOf(gva)); }

  uint64_t Alloc(uint64_t size, int placement, uint32_t rank) {
    weft::gva::Placement where;
    switch (placement) {
      case 0: where = weft::gva::Placement::Local(); break;
      case 1: where = weft::gva::Placement::OnRank(rank); break;
      case 2: where = weft::gva::Placement::Spread(); break;
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
    const uint64_t len = LengthOf(*d, *s, length);
    Status st;
    {
      nb::gil_scoped_release release;
      st = pool.Copy(d->addr, s->addr, len, dir);
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
      const uint64_t len = LengthOf(*d, *s, length);
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
    nb::list results;
    nb::object first;
    for (size_t i = 0; i < statuses.size(); ++i) {
      if (statuses[i].ok()) {
        results.append(nb::none());
      } else {
        nb::object e = MakeError(statuses[i].Annotate(fmt::format("request {} of {}", i, statuses.size())));
        if (!first.is_valid()) first = e;
        results.append(e);
      }
    }
    if (check && first.is_valid()) {
      nb::setattr(first, "results", results);
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(first.ptr())), first.ptr());
      throw nb::python_error();
    }
    return results;
  }

  std::unique_ptr<PyCopy> CopyAsync(nb::handle self, nb::handle dst, nb::handle src, std::optional<uint64_t> length,
                                    nb::handle direction);

  std::string Route(nb::handle dst, nb::handle src, std::optional<uint64_t> length, nb::handle direction) {
    Pool& pool = P();
    const auto dir = DirectionOf(direction);
    MemPtr d = Resolve(dst, false, "dst");
    MemPtr s = Resolve(src, false, "src");
    const uint64_t len = LengthOf(*d, *s, length);
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

 private:
  template <typename T>
  static T Value(weft::Result<T> r) {
    if (!r.ok()) Raise(r.status());
    return std::move(r).value();
  }

  weft::Config config_;
  std::unique_ptr<Pool> pool_;
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
  const uint64_t len = LengthOf(*d, *s, length);
  weft::engine::CopyHandle handle = pool.CopyAsync(d->addr, s->addr, len, dir);
  if (!handle.valid()) RaiseCode(Code::kCancelled, "this peer has left the pool");
  return std::make_unique<PyCopy>(std::move(handle), std::move(d), std::move(s), nb::borrow(self));
}

}  // namespace

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
      .def("slice_address", &PyPool::SliceAddress, "rank"_a)
      .def("rank_of", &PyPool::RankOf, "gva"_a)
      .def("alloc", &PyPool::Alloc, "size"_a, "placement"_a, "rank"_a)
      .def("free", &PyPool::Free, "gva"_a)
      .def("copy", &PyPool::Copy, "dst"_a, "src"_a, "length"_a.none(), "direction"_a)
      .def("copy_batch", &PyPool::CopyBatch, "requests"_a, "direction"_a, "check"_a)
      .def(
          "copy_async",
          [](nb::pointer_and_handle<PyPool> self, nb::handle dst, nb::handle src, std::optional<uint64_t> length,
             nb::handle direction) { return self.p->CopyAsync(self.h, dst, src, length, direction); },
          "dst"_a, "src"_a, "length"_a.none(), "direction"_a)
      .def("route", &PyPool::Route, "dst"_a, "src"_a, "length"_a.none(), "direction"_a)
      .def("barrier", &PyPool::Barrier, "timeout"_a.none())
      .def("wait_for_peers", &PyPool::WaitForPeers, "count"_a, "timeout"_a.none());
}
