// Helpers shared by the native module's parts (weft_ext.cc: Pool; trans_ext.cc: TransferEngine):
// Status -> typed Python exception, and memory given as ints or as objects exposing their memory.
// Everything is inline (one definition across the module's translation units); the exception
// classes are registered once by weft/__init__.py through _register_errors.
#pragma once

#include <Python.h>
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "base/clock.h"
#include "base/status.h"
#include "engine/engine.h"
#include "weft/pool.h"
#include "bindings/python/local_memory.h"

namespace weft::pyext {

namespace nb = nanobind;
using weft::Code;
using weft::Status;
using weft::bm::Pool;

inline constexpr int kLastCode = static_cast<int>(weft::kLastCode);

// Exception classes by code, registered once by __init__.py. Owned references that are never
// released: they live as long as the interpreter and must not be decref'd after it ends.
inline PyObject* g_error_base = nullptr;
inline PyObject* g_errors[kLastCode + 1] = {};

// An exception instance for a failed Status: cls(message, code).
inline nb::object MakeError(const Status& s) {
  const int code = static_cast<int>(s.code());
  PyObject* cls = (code >= 0 && code <= kLastCode && g_errors[code]) ? g_errors[code] : g_error_base;
  if (!cls) return nb::borrow(PyExc_RuntimeError)(s.ToString());
  return nb::borrow(cls)(s.message(), code);
}

[[noreturn]] inline void Raise(const Status& s) {
  nb::object exc = MakeError(s);
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
  throw nb::python_error();
}

inline void Check(const Status& s) {
  if (!s.ok()) Raise(s);
}

template <typename... Args>
[[noreturn]] inline void RaiseCode(Code code, fmt::format_string<Args...> format, Args&&... args) {
  Raise(Status(code, fmt::format(format, std::forward<Args>(args)...)));
}

// The text of the pending Python exception, which is cleared.
inline std::string TakePythonError() {
  nb::python_error err;
  nb::str text = nb::str(err.value());
  return text.c_str();
}

inline weft::Deadline DeadlineOf(std::optional<double> timeout_s) {
  if (!timeout_s || *timeout_s < 0 || std::isinf(*timeout_s)) return weft::Deadline::Never();
  return weft::Deadline::After(std::chrono::duration_cast<weft::Clock::duration>(std::chrono::duration<double>(*timeout_s)));
}

inline weft::engine::Direction DirectionOf(nb::handle direction) {
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
  bool local_int = false;  // an int that is no GVA: a local pointer, proven mapped before use

  Mem() = default;
  Mem(const Mem&) = delete;
  Mem& operator=(const Mem&) = delete;
  ~Mem() {
    if (has_view) PyBuffer_Release(&view);
  }
};
using MemPtr = std::unique_ptr<Mem>;

inline uint64_t ToU64(nb::handle value, const char* what) {
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
inline void FromArrayInterface(Mem& m, nb::handle iface, bool writable, const char* what) {
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

// An int that is not a GVA is used as a local pointer only when [addr, addr + len) is mapped
// in this process; otherwise INVALID_ADDRESS, never a dereference of a wild pointer.
inline void CheckLocalInt(const Pool& pool, const Mem& m, uint64_t len, const char* what) {
  if (!m.local_int || pool.InWindow(m.addr) || RangeIsMapped(m.addr, len)) return;
  RaiseCode(Code::kInvalidAddress,
            "{}: the int {:#x} (+{} bytes) is neither inside this pool's window (a GVA) nor mapped local memory; "
            "pass the buffer or tensor itself instead of an address",
            what, m.addr, len);
}

// `what` names the argument in messages ("dst"); a destination must be writable.
inline MemPtr Resolve(nb::handle obj, bool writable, const char* what) {
  auto m = std::make_unique<Mem>();
  PyObject* o = obj.ptr();
  if (PyBool_Check(o)) throw nb::type_error(fmt::format("{}: a bool is not an address", what).c_str());
  if (PyLong_Check(o)) {
    m->addr = ToU64(obj, what);
    // An int is a GVA or a local pointer. One outside the pool's window is a local pointer,
    // which the Pool's copies (LengthOf) prove mapped once the length is known. The transfer
    // engine checks its ints against registered memory instead. 0 is left to the engine (null).
    m->local_int = m->addr != 0;
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

// The length of a Pool copy: the given one (checked against the sizes that are known), else the
// size of the end(s) that have one. An end given as an int that is no GVA must be mapped local
// memory for that length (INVALID_ADDRESS otherwise).
inline uint64_t LengthOfEnds(const Mem& dst, const Mem& src, std::optional<uint64_t> length);
inline uint64_t LengthOf(const Pool& pool, const Mem& dst, const Mem& src, std::optional<uint64_t> length) {
  const uint64_t len = LengthOfEnds(dst, src, length);
  CheckLocalInt(pool, dst, len, "dst");
  CheckLocalInt(pool, src, len, "src");
  return len;
}
inline uint64_t LengthOfEnds(const Mem& dst, const Mem& src, std::optional<uint64_t> length) {
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

// Results of a synchronous batch: None per OK request, the exception otherwise. With check, the
// first failure is raised with the whole list as its `results`.
inline nb::list ResultList(const std::vector<Status>& statuses, bool check) {
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

// The joined bm::Pool behind a native weft._weft.Pool (weft_ext.cc); INVALID_ARGUMENT when it
// has not joined, TypeError for another object.
std::shared_ptr<Pool> JoinedPool(nb::handle native_pool);

}  // namespace weft::pyext
