// weft._weft.Team and SymmBuffer: symmetric memory (include/weft/symm.h) for Python.
//
// weft/symm.py wraps Team as weft.symm.Team. A SymmBuffer is a block of the symmetric heap
// (Team.malloc) that exposes this rank's bytes through the buffer protocol, so memoryview() and
// numpy.frombuffer() read and write the heap in place; it keeps its team alive, and the team
// keeps its pool alive, so no view outlives the memory behind it.
//
// Collectives take objects with the buffer protocol; the dtype is inferred from their format
// unless given. A rank whose own arguments are bad (a wrong object, size or dtype) still takes
// part in the call as a refusal, as the C++ team does for a null buffer: the other ranks raise
// Mismatch at once instead of waiting for it until their deadline. Every call that can block
// releases the GIL.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <weft/symm.h>

#include "ext_common.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using namespace weft::pyext;
using weft::symm::Cmp;
using weft::symm::DType;
using weft::symm::OptDeadline;
using weft::symm::ReduceOp;
using weft::symm::SignalOp;
using weft::symm::Team;

constexpr auto kUnknownDType = static_cast<DType>(0xFF);  // the team refuses it in a round

// None or <= 0: the team's default deadline (TeamOptions::timeout_ms).
OptDeadline DeadlineOfCall(std::optional<double> timeout_s) {
  if (!timeout_s || *timeout_s <= 0) return std::nullopt;
  return DeadlineOf(timeout_s);
}

// ---- the team -------------------------------------------------------------------------------

// The native team and the pool it was made on; destroyed without the GIL (freeing the heap, and
// the pool's leave when this held its last reference, talk to the coordinator).
class PyTeam {
 public:
  PyTeam(std::shared_ptr<Pool> pool, std::unique_ptr<Team> team) : pool_(std::move(pool)), team_(std::move(team)) {}
  PyTeam(const PyTeam&) = delete;
  PyTeam& operator=(const PyTeam&) = delete;
  ~PyTeam() {
    nb::gil_scoped_release release;
    team_.reset();
    pool_.reset();
  }
  Team& T() { return *team_; }
  const std::shared_ptr<Pool>& pool() const { return pool_; }

 private:
  std::shared_ptr<Pool> pool_;  // declared first: destroyed after the team
  std::unique_ptr<Team> team_;
};

// ---- heap blocks ----------------------------------------------------------------------------

// A block of the heap from Team.malloc. Holds its team (a Python reference), so the memory it
// exposes stays mapped while any view of it exists.
struct SymmBuffer {
  nb::object team;  // the PyTeam
  uint64_t offset = 0;
  uint64_t nbytes = 0;
  uint8_t* data = nullptr;
  bool freed = false;
};

int SymmBufferGetBuffer(PyObject* self, Py_buffer* view, int flags) {
  SymmBuffer* b = nb::inst_ptr<SymmBuffer>(self);
  if (b->freed) {
    PyErr_SetString(PyExc_BufferError, "this symmetric buffer was freed (Team.free)");
    view->obj = nullptr;
    return -1;
  }
  return PyBuffer_FillInfo(view, self, b->data, static_cast<Py_ssize_t>(b->nbytes), /*readonly=*/0, flags);
}

PyType_Slot kSymmBufferSlots[] = {{Py_bf_getbuffer, reinterpret_cast<void*>(SymmBufferGetBuffer)}, {0, nullptr}};

// A block of the device heap from Team.device_malloc: this rank's device address, exposed as a
// __cuda_array_interface__ of bytes (torch.as_tensor(block, device="cuda") views it in place).
// Holds its team, as SymmBuffer does.
struct DeviceSymmBuffer {
  nb::object team;
  uint64_t offset = 0;
  uint64_t nbytes = 0;
  uint64_t ptr = 0;
  bool freed = false;
};

nb::dict CudaArrayInterface(const DeviceSymmBuffer& b) {
  if (b.freed) RaiseCode(Code::kInvalidArgument, "this device buffer was freed (Team.device_free)");
  nb::dict d;
  d["shape"] = nb::make_tuple(b.nbytes);
  d["typestr"] = "|u1";
  d["data"] = nb::make_tuple(b.ptr, false);
  d["strides"] = nb::none();
  d["version"] = 3;
  return d;
}

// A heap offset given as a SymmBuffer (its offset) or an int, plus `offset` bytes into it. For a
// SymmBuffer, `len` bytes from there must lie inside it (OUT_OF_RANGE otherwise).
uint64_t HeapOffset(nb::handle where, uint64_t offset, uint64_t len, const char* what) {
  SymmBuffer* b = nullptr;
  if (nb::try_cast<SymmBuffer*>(where, b) && b != nullptr) {
    if (b->freed) RaiseCode(Code::kInvalidArgument, "{}: the symmetric buffer was freed", what);
    if (offset > b->nbytes || b->nbytes - offset < len)
      RaiseCode(Code::kOutOfRange, "{}: {} bytes at offset {} run past the buffer of {} bytes", what, len, offset,
                b->nbytes);
    return b->offset + offset;
  }
  if (PyLong_Check(where.ptr()) && !PyBool_Check(where.ptr())) return ToU64(where, what) + offset;
  throw nb::type_error(
      fmt::format("{}: expected a SymmBuffer (Team.malloc) or a heap offset (int), not {}", what,
                  nb::type_name(where.type()).c_str())
          .c_str());
}

// ---- collective operands ----------------------------------------------------------------------

// A C-contiguous buffer-protocol view with its format, released on destruction (GIL held); or
// device memory (a torch CUDA tensor, a __cuda_array_interface__ or DLPack object, a
// DeviceSymmBuffer), with the dtype its object names where it names one.
struct View {
  Py_buffer view{};
  bool held = false;
  MemPtr device;                     // device memory: address and size
  std::optional<DType> device_dtype;
  View() = default;
  View(const View&) = delete;
  View& operator=(const View&) = delete;
  ~View() {
    if (held) PyBuffer_Release(&view);
  }
  bool present() const { return held || device; }
  uint64_t bytes() const { return held ? static_cast<uint64_t>(view.len) : device ? device->size.value_or(0) : 0; }
  void* data() const {
    return held ? view.buf : device ? reinterpret_cast<void*>(static_cast<uintptr_t>(device->addr)) : nullptr;
  }
};

std::optional<DType> DTypeOfTypeName(std::string name);

// The dtype a device object names: torch's dtype attribute, or the array interface's typestr.
std::optional<DType> DeviceDTypeOf(nb::handle obj) {
  if (nb::hasattr(obj, "dtype") && nb::hasattr(obj, "data_ptr")) {
    PyObject* text = PyObject_Str(obj.attr("dtype").ptr());  // torch.dtype: "torch.bfloat16"
    if (text == nullptr) {
      PyErr_Clear();
      return std::nullopt;
    }
    std::string name = nb::steal<nb::str>(text).c_str();
    if (auto dot = name.rfind('.'); dot != std::string::npos) name = name.substr(dot + 1);
    return DTypeOfTypeName(name);
  }
  if (nb::hasattr(obj, "__cuda_array_interface__")) {
    nb::dict d = nb::borrow<nb::dict>(obj.attr("__cuda_array_interface__"));
    std::string t = nb::cast<std::string>(d["typestr"]);
    static const std::pair<const char*, DType> kTypestrs[] = {
        {"<f4", DType::kF32}, {"<f2", DType::kF16}, {"<i4", DType::kI32}, {"<i8", DType::kI64}, {"|u1", DType::kU8}};
    for (const auto& [text, dtype] : kTypestrs)
      if (t == text) return dtype;
  }
  return std::nullopt;
}

std::unique_ptr<View> ViewOf(nb::handle obj, bool writable, const char* what) {
  auto v = std::make_unique<View>();
  if (obj.is_none()) return v;
  if (!PyObject_CheckBuffer(obj.ptr())) {
    if (PyLong_Check(obj.ptr()))
      throw nb::type_error(fmt::format("{}: expected a buffer or a device tensor, not an int", what).c_str());
    v->device = Resolve(obj, writable, what);  // raises for objects that expose no memory
    v->device_dtype = DeviceDTypeOf(obj);
    return v;
  }
  const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
  if (PyObject_GetBuffer(obj.ptr(), &v->view, flags) != 0) {
    const std::string reason = TakePythonError();
    RaiseCode(Code::kInvalidArgument, "{}: {}{}", what, reason,
              writable ? " (a destination must be a writable, C-contiguous buffer)" : " (a C-contiguous buffer is needed)");
  }
  v->held = true;
  return v;
}

// The dtype of a buffer's elements: float32, float16, int32, int64 and uint8 have one; others
// (float64, int16, ...) need dtype= (bf16 always does: numpy has no such type).
std::optional<DType> DTypeOfFormat(const Py_buffer& view) {
  std::string_view f = view.format ? view.format : "B";
  if (!f.empty() && (f[0] == '@' || f[0] == '=' || f[0] == '<')) f.remove_prefix(1);
  if (f.size() != 1) return std::nullopt;
  switch (f[0]) {
    case 'f': return DType::kF32;
    case 'e': return DType::kF16;
    case 'B': return DType::kU8;
    case 'i': case 'l': case 'q':
      if (view.itemsize == 4) return DType::kI32;
      if (view.itemsize == 8) return DType::kI64;
      return std::nullopt;
    default: return std::nullopt;
  }
}

std::optional<DType> DTypeOfTypeName(std::string name) {
  static const std::pair<const char*, DType> kNames[] = {
      {"f32", DType::kF32},  {"float32", DType::kF32}, {"bf16", DType::kBF16}, {"bfloat16", DType::kBF16},
      {"f16", DType::kF16},  {"float16", DType::kF16}, {"i32", DType::kI32},   {"int32", DType::kI32},
      {"i64", DType::kI64},  {"int64", DType::kI64},   {"u8", DType::kU8},     {"uint8", DType::kU8}};
  for (const auto& [text, dtype] : kNames)
    if (name == text) return dtype;
  return std::nullopt;
}

DType DTypeOfName(const std::string& name) {
  if (auto d = DTypeOfTypeName(name)) return *d;
  RaiseCode(Code::kInvalidArgument, "dtype '{}' is not one of f32, bf16, f16, i32, i64, u8 (or float32, bfloat16, "
            "float16, int32, int64, uint8)", name);
}

ReduceOp OpOfName(const std::string& name) {
  if (name == "sum") return ReduceOp::kSum;
  if (name == "max") return ReduceOp::kMax;
  if (name == "min") return ReduceOp::kMin;
  if (name == "prod") return ReduceOp::kProd;
  RaiseCode(Code::kInvalidArgument, "op '{}' is not one of sum, max, min, prod", name);
}

// The dtype of a call: the given name, else the format of the buffers that are there (which must
// agree).
DType DTypeOfCall(const std::optional<std::string>& dtype, const View& a, const View& b) {
  if (dtype) return DTypeOfName(*dtype);
  std::optional<DType> found;
  for (const View* v : {&a, &b}) {
    if (!v->present()) continue;
    if (v->device && !v->device_dtype)
      throw nb::type_error("a device buffer of no weft dtype (f32, bf16, f16, i32, i64, u8), or one whose object "
                           "names none: pass dtype=");
    std::optional<DType> d = v->device ? v->device_dtype : DTypeOfFormat(v->view);
    if (!d)
      throw nb::type_error(fmt::format("an array of format '{}' has no weft dtype (float32, float16, int32, int64, "
                                       "uint8): convert it, or pass dtype= (e.g. dtype='bf16' for bfloat16 bits in "
                                       "uint16)", v->view.format ? v->view.format : "B")
                               .c_str());
    if (found && *found != *d)
      RaiseCode(Code::kInvalidArgument, "send is {} and recv is {}: pass dtype= to reinterpret",
                weft::symm::DTypeName(*found), weft::symm::DTypeName(*d));
    found = d;
  }
  if (!found) RaiseCode(Code::kInvalidArgument, "no buffer to infer the dtype from: pass dtype=");
  return *found;
}

// Elements of `bytes` in `dtype`: a whole number of them (INVALID_ARGUMENT otherwise).
uint64_t Elements(uint64_t bytes, DType dtype, uint64_t parts, const char* what) {
  const uint64_t unit = weft::symm::DTypeSize(dtype) * parts;
  if (bytes % unit != 0)
    RaiseCode(Code::kInvalidArgument, "{} has {} bytes: not a whole number of {} × {} elements", what, bytes, parts,
              weft::symm::DTypeName(dtype));
  return bytes / unit;
}

void ExpectBytes(uint64_t got, uint64_t want, const char* what, const char* why) {
  if (got != want) RaiseCode(Code::kInvalidArgument, "{} has {} bytes; {} needs {}", what, got, why, want);
}

// What one collective call runs with, resolved from its Python arguments.
struct Operands {
  std::unique_ptr<View> send, recv;
  DType dtype = kUnknownDType;
  ReduceOp op = ReduceOp::kSum;
  uint64_t count = 0;
  uint32_t root = 0;
};

// Runs a collective: `resolve` fills the operands (it may raise: a bad object, size, dtype);
// `run` calls the team without the GIL. A rank whose resolve raised still runs the call with an
// unknown dtype and no buffers, which the team refuses in a round (the others get MISMATCH), and
// then raises its own error.
template <typename Resolve, typename Run>
void RunCollective(Resolve&& resolve, Run&& run) {
  Operands o;
  std::exception_ptr local;
  try {
    resolve(o);
  } catch (...) {
    local = std::current_exception();
    o.send.reset();
    o.recv.reset();
    o.dtype = kUnknownDType;
    o.count = 0;
  }
  Status s;
  {
    nb::gil_scoped_release release;
    s = run(o);
  }
  if (local) std::rethrow_exception(local);
  Check(s);
}

void* Data(const std::unique_ptr<View>& v) { return v ? v->data() : nullptr; }

// ---- the Python-facing team -------------------------------------------------------------------

class Symm {
 public:
  static std::unique_ptr<PyTeam> Create(nb::handle native_pool, uint64_t heap_bytes, uint64_t slot_bytes,
                                        uint64_t one_shot_max_bytes, double timeout_s, nb::bytes user_context,
                                        uint64_t device_heap_bytes, bool device_async) {
    std::shared_ptr<Pool> pool = JoinedPool(native_pool);
    weft::symm::TeamOptions o;
    o.heap_bytes = heap_bytes;
    o.device_heap_bytes = device_heap_bytes;
    o.device_async = device_async;
    o.slot_bytes = slot_bytes;
    o.one_shot_max_bytes = one_shot_max_bytes;
    if (!(timeout_s > 0) || timeout_s > 4e6) RaiseCode(Code::kInvalidArgument, "timeout {} s is not in (0, 4e6]", timeout_s);
    o.timeout_ms = static_cast<uint32_t>(timeout_s * 1000 + 0.5);
    const auto* ctx = static_cast<const uint8_t*>(user_context.data());
    o.user_context.assign(ctx, ctx + user_context.size());
    weft::Result<std::unique_ptr<Team>> team = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      team = Team::Create(*pool, o);
    }
    if (!team.ok()) Raise(team.status());
    return std::make_unique<PyTeam>(std::move(pool), std::move(*team));
  }

  static std::unique_ptr<PyTeam> Split(PyTeam& t, std::vector<uint32_t> ranks, std::optional<double> timeout) {
    weft::Result<std::unique_ptr<Team>> sub = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      sub = t.T().Split(ranks, DeadlineOfCall(timeout));
    }
    if (!sub.ok()) Raise(sub.status());
    if (*sub == nullptr) return nullptr;
    return std::make_unique<PyTeam>(t.pool(), std::move(*sub));
  }

  static nb::list UserContexts(PyTeam& t) {
    nb::list out;
    for (const auto& c : t.T().user_contexts())
      out.append(nb::bytes(reinterpret_cast<const char*>(c.data()), c.size()));
    return out;
  }

  static SymmBuffer Malloc(nb::handle self, uint64_t nbytes, std::optional<double> timeout) {
    PyTeam& t = nb::cast<PyTeam&>(self);
    weft::Result<uint64_t> r = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      r = t.T().Malloc(nbytes, DeadlineOfCall(timeout));
    }
    if (!r.ok()) Raise(r.status());
    return SymmBuffer{nb::borrow(self), *r, nbytes, static_cast<uint8_t*>(t.T().Local(*r)), false};
  }

  static DeviceSymmBuffer DeviceMalloc(nb::handle self, uint64_t nbytes, std::optional<double> timeout) {
    PyTeam& t = nb::cast<PyTeam&>(self);
    weft::Result<uint64_t> r = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      r = t.T().DeviceMalloc(nbytes, DeadlineOfCall(timeout));
    }
    if (!r.ok()) Raise(r.status());
    return DeviceSymmBuffer{nb::borrow(self), *r, nbytes, reinterpret_cast<uint64_t>(t.T().DeviceLocal(*r)), false};
  }

  static void DeviceFree(PyTeam& t, DeviceSymmBuffer& block, std::optional<double> timeout) {
    if (block.freed) RaiseCode(Code::kInvalidArgument, "block: the device buffer was freed already");
    Status s;
    {
      nb::gil_scoped_release release;
      s = t.T().DeviceFree(block.offset, DeadlineOfCall(timeout));
    }
    Check(s);
    block.freed = true;
  }

  static void Free(PyTeam& t, nb::handle block, std::optional<double> timeout) {
    const uint64_t offset = HeapOffset(block, 0, 0, "block");
    Status s;
    {
      nb::gil_scoped_release release;
      s = t.T().Free(offset, DeadlineOfCall(timeout));
    }
    Check(s);
    SymmBuffer* b = nullptr;
    if (nb::try_cast<SymmBuffer*>(block, b) && b != nullptr) b->freed = true;
  }

  static void Put(PyTeam& t, uint32_t rank, nb::handle dst, nb::handle src, uint64_t offset) {
    MemPtr m = Resolve(src, /*writable=*/false, "src");
    if (!m->size) RaiseCode(Code::kInvalidArgument, "src: give a buffer, not an address");
    const uint64_t at = HeapOffset(dst, offset, *m->size, "dst");
    Status s;
    {
      nb::gil_scoped_release release;
      s = t.T().Put(rank, at, reinterpret_cast<const void*>(m->addr), *m->size);
    }
    Check(s);
  }

  static void Get(PyTeam& t, nb::handle dst, uint32_t rank, nb::handle src, uint64_t offset) {
    MemPtr m = Resolve(dst, /*writable=*/true, "dst");
    if (!m->size) RaiseCode(Code::kInvalidArgument, "dst: give a buffer, not an address");
    const uint64_t at = HeapOffset(src, offset, *m->size, "src");
    Status s;
    {
      nb::gil_scoped_release release;
      s = t.T().Get(reinterpret_cast<void*>(m->addr), rank, at, *m->size);
    }
    Check(s);
  }

  static void PutSignal(PyTeam& t, uint32_t rank, nb::handle dst, nb::handle src, nb::handle signal, uint64_t value,
                        const std::string& op, uint64_t offset) {
    if (op != "set" && op != "add") RaiseCode(Code::kInvalidArgument, "op '{}' is not 'set' or 'add'", op);
    MemPtr m = Resolve(src, /*writable=*/false, "src");
    if (!m->size) RaiseCode(Code::kInvalidArgument, "src: give a buffer, not an address");
    const uint64_t at = HeapOffset(dst, offset, *m->size, "dst");
    const uint64_t sig = HeapOffset(signal, 0, 8, "signal");
    Status s;
    {
      nb::gil_scoped_release release;
      s = t.T().PutSignal(rank, at, reinterpret_cast<const void*>(m->addr), *m->size, sig, value,
                          op == "add" ? SignalOp::kAdd : SignalOp::kSet);
    }
    Check(s);
  }

  static void WaitUntil(PyTeam& t, nb::handle signal, int cmp, uint64_t value, std::optional<double> timeout) {
    if (cmp < 0 || cmp > static_cast<int>(Cmp::kLe)) RaiseCode(Code::kInvalidArgument, "comparison {} is out of range", cmp);
    const uint64_t sig = HeapOffset(signal, 0, 8, "signal");
    Status s;
    {
      nb::gil_scoped_release release;
      s = t.T().WaitUntil(sig, static_cast<Cmp>(cmp), value, DeadlineOfCall(timeout));
    }
    Check(s);
  }

  static uint64_t SignalValue(PyTeam& t, nb::handle signal) {
    const uint64_t sig = HeapOffset(signal, 0, 8, "signal");
    const uint64_t heap = t.T().heap_bytes();
    if (sig % 8 != 0 || sig > heap || heap - sig < 8)
      RaiseCode(Code::kInvalidArgument, "signal offset {} is not an aligned word of the heap of {} bytes", sig, heap);
    return t.T().SignalValue(sig);
  }

  static void Barrier(PyTeam& t, std::optional<double> timeout) {
    Status s;
    {
      nb::gil_scoped_release release;
      s = t.T().Barrier(DeadlineOfCall(timeout));
    }
    Check(s);
  }
  static void DeviceSynchronize(PyTeam& t, std::optional<double> timeout) {
    Status s;
    {
      nb::gil_scoped_release release;
      s = t.T().DeviceSynchronize(DeadlineOfCall(timeout));
    }
    Check(s);
  }
};

// ---- the eight collectives ----------------------------------------------------------------------

using OptName = std::optional<std::string>;
using OptTimeout = std::optional<double>;

void Broadcast(PyTeam& t, nb::handle buf, uint32_t root, OptName dtype, OptTimeout timeout) {
  RunCollective(
      [&](Operands& o) {
        o.recv = ViewOf(buf, true, "buf");
        o.dtype = DTypeOfCall(dtype, *o.recv, View());
        o.count = Elements(o.recv->bytes(), o.dtype, 1, "buf");
        o.root = root;
      },
      [&](Operands& o) { return t.T().Broadcast(Data(o.recv), o.count, o.dtype, root, DeadlineOfCall(timeout)); });
}

void AllReduce(PyTeam& t, nb::handle send, nb::handle recv, const std::string& op, OptName dtype, OptTimeout timeout) {
  RunCollective(
      [&](Operands& o) {
        o.send = ViewOf(send, false, "send");
        o.recv = ViewOf(recv, true, "recv");
        o.dtype = DTypeOfCall(dtype, *o.send, *o.recv);
        o.count = Elements(o.send->bytes(), o.dtype, 1, "send");
        ExpectBytes(o.recv->bytes(), o.send->bytes(), "recv", "an allreduce of send");
        o.op = OpOfName(op);
      },
      [&](Operands& o) {
        return t.T().AllReduce(Data(o.send), Data(o.recv), o.count, o.dtype, o.op, DeadlineOfCall(timeout));
      });
}

// recv is needed at the root only (None elsewhere).
void Reduce(PyTeam& t, nb::handle send, nb::handle recv, uint32_t root, const std::string& op, OptName dtype,
            OptTimeout timeout) {
  RunCollective(
      [&](Operands& o) {
        o.send = ViewOf(send, false, "send");
        o.recv = ViewOf(recv, true, "recv");
        o.dtype = DTypeOfCall(dtype, *o.send, *o.recv);
        o.count = Elements(o.send->bytes(), o.dtype, 1, "send");
        if (t.T().rank() == root) ExpectBytes(o.recv->bytes(), o.send->bytes(), "recv", "a reduce of send");
        o.op = OpOfName(op);
      },
      [&](Operands& o) {
        return t.T().Reduce(Data(o.send), Data(o.recv), o.count, o.dtype, o.op, root, DeadlineOfCall(timeout));
      });
}

void ReduceScatter(PyTeam& t, nb::handle send, nb::handle recv, const std::string& op, OptName dtype,
                   OptTimeout timeout) {
  RunCollective(
      [&](Operands& o) {
        o.send = ViewOf(send, false, "send");
        o.recv = ViewOf(recv, true, "recv");
        o.dtype = DTypeOfCall(dtype, *o.send, *o.recv);
        o.count = Elements(o.recv->bytes(), o.dtype, 1, "recv");
        ExpectBytes(o.send->bytes(), o.recv->bytes() * t.T().size(), "send", "a reduce-scatter into recv");
        o.op = OpOfName(op);
      },
      [&](Operands& o) {
        return t.T().ReduceScatter(Data(o.send), Data(o.recv), o.count, o.dtype, o.op, DeadlineOfCall(timeout));
      });
}

void AllGather(PyTeam& t, nb::handle send, nb::handle recv, OptName dtype, OptTimeout timeout) {
  RunCollective(
      [&](Operands& o) {
        o.send = ViewOf(send, false, "send");
        o.recv = ViewOf(recv, true, "recv");
        o.dtype = DTypeOfCall(dtype, *o.send, *o.recv);
        o.count = Elements(o.send->bytes(), o.dtype, 1, "send");
        ExpectBytes(o.recv->bytes(), o.send->bytes() * t.T().size(), "recv", "an allgather of send");
      },
      [&](Operands& o) {
        return t.T().AllGather(Data(o.send), Data(o.recv), o.count, o.dtype, DeadlineOfCall(timeout));
      });
}

// send is needed at the root only.
void Scatter(PyTeam& t, nb::handle send, nb::handle recv, uint32_t root, OptName dtype, OptTimeout timeout) {
  RunCollective(
      [&](Operands& o) {
        o.send = ViewOf(send, false, "send");
        o.recv = ViewOf(recv, true, "recv");
        o.dtype = DTypeOfCall(dtype, *o.send, *o.recv);
        o.count = Elements(o.recv->bytes(), o.dtype, 1, "recv");
        if (t.T().rank() == root)
          ExpectBytes(o.send->bytes(), o.recv->bytes() * t.T().size(), "send", "a scatter into recv");
      },
      [&](Operands& o) {
        return t.T().Scatter(Data(o.send), Data(o.recv), o.count, o.dtype, root, DeadlineOfCall(timeout));
      });
}

// recv is needed at the root only.
void Gather(PyTeam& t, nb::handle send, nb::handle recv, uint32_t root, OptName dtype, OptTimeout timeout) {
  RunCollective(
      [&](Operands& o) {
        o.send = ViewOf(send, false, "send");
        o.recv = ViewOf(recv, true, "recv");
        o.dtype = DTypeOfCall(dtype, *o.send, *o.recv);
        o.count = Elements(o.send->bytes(), o.dtype, 1, "send");
        if (t.T().rank() == root)
          ExpectBytes(o.recv->bytes(), o.send->bytes() * t.T().size(), "recv", "a gather of send");
      },
      [&](Operands& o) {
        return t.T().Gather(Data(o.send), Data(o.recv), o.count, o.dtype, root, DeadlineOfCall(timeout));
      });
}

void AllToAll(PyTeam& t, nb::handle send, nb::handle recv, OptName dtype, OptTimeout timeout) {
  RunCollective(
      [&](Operands& o) {
        o.send = ViewOf(send, false, "send");
        o.recv = ViewOf(recv, true, "recv");
        o.dtype = DTypeOfCall(dtype, *o.send, *o.recv);
        o.count = Elements(o.send->bytes(), o.dtype, t.T().size(), "send");
        ExpectBytes(o.recv->bytes(), o.send->bytes(), "recv", "an alltoall of send");
      },
      [&](Operands& o) {
        return t.T().AllToAll(Data(o.send), Data(o.recv), o.count, o.dtype, DeadlineOfCall(timeout));
      });
}

}  // namespace

void BindSymm(nb::module_& m) {
  nb::class_<SymmBuffer>(m, "SymmBuffer", nb::type_slots(kSymmBufferSlots))
      .def_ro("offset", &SymmBuffer::offset)
      .def_ro("nbytes", &SymmBuffer::nbytes)
      .def_ro("freed", &SymmBuffer::freed)
      .def("__len__", [](const SymmBuffer& b) { return b.nbytes; })
      .def("__repr__", [](const SymmBuffer& b) {
        return fmt::format("<weft.symm.SymmBuffer offset {} nbytes {}{}>", b.offset, b.nbytes, b.freed ? " freed" : "");
      });

  nb::class_<DeviceSymmBuffer>(m, "DeviceSymmBuffer")
      .def_ro("offset", &DeviceSymmBuffer::offset)
      .def_ro("nbytes", &DeviceSymmBuffer::nbytes)
      .def_ro("ptr", &DeviceSymmBuffer::ptr)
      .def_ro("freed", &DeviceSymmBuffer::freed)
      .def_prop_ro("__cuda_array_interface__", &CudaArrayInterface)
      .def("__len__", [](const DeviceSymmBuffer& b) { return b.nbytes; })
      .def("__repr__", [](const DeviceSymmBuffer& b) {
        return fmt::format("<weft.symm.DeviceSymmBuffer offset {} nbytes {} at {:#x}{}>", b.offset, b.nbytes, b.ptr,
                           b.freed ? " freed" : "");
      });

  nb::class_<PyTeam>(m, "Team")
      .def_static("create", &Symm::Create, "pool"_a, "heap_bytes"_a, "slot_bytes"_a, "one_shot_max_bytes"_a,
                  "timeout"_a, "user_context"_a, "device_heap_bytes"_a = 0, "device_async"_a = false)
      .def_prop_ro("device_heap_bytes", [](PyTeam& t) { return t.T().device_heap_bytes(); })
      .def("device_malloc",
           [](nb::handle self, uint64_t n, OptTimeout timeout) { return Symm::DeviceMalloc(self, n, timeout); },
           "nbytes"_a, "timeout"_a.none())
      .def("device_free", &Symm::DeviceFree, "block"_a, "timeout"_a.none())
      .def("set_stream", [](PyTeam& t, uint64_t stream) { t.T().SetStream(reinterpret_cast<void*>(stream)); },
           "stream"_a)
      .def("stats", [](PyTeam& t) {
        weft::symm::TeamStats st = t.T().stats();
        nb::dict d;
        d["collectives"] = st.collectives;
        d["heap_path"] = st.heap_path;
        d["device_path"] = st.device_path;
        return d;
      })
      .def_prop_ro("rank", [](PyTeam& t) { return t.T().rank(); })
      .def_prop_ro("size", [](PyTeam& t) { return t.T().size(); })
      .def_prop_ro("id", [](PyTeam& t) { return t.T().id(); })
      .def_prop_ro("heap_bytes", [](PyTeam& t) { return t.T().heap_bytes(); })
      .def_prop_ro("user_contexts", &Symm::UserContexts)
      .def("pool_rank", [](PyTeam& t, uint32_t r) {
        if (r >= t.T().size()) RaiseCode(Code::kInvalidArgument, "rank {} is not in this team of {}", r, t.T().size());
        return t.T().pool_rank(r);
      }, "team_rank"_a)
      .def("plan", [](PyTeam& t, const std::string& c, uint64_t bytes) { return t.T().Plan(c, bytes).ToString(); },
           "collective"_a, "bytes"_a)
      .def("split", &Symm::Split, "ranks"_a, "timeout"_a.none())
      .def("malloc", [](nb::handle self, uint64_t n, OptTimeout timeout) { return Symm::Malloc(self, n, timeout); },
           "nbytes"_a, "timeout"_a.none())
      .def("free", &Symm::Free, "block"_a, "timeout"_a.none())
      .def("put", &Symm::Put, "rank"_a, "dst"_a, "src"_a, "offset"_a)
      .def("get", &Symm::Get, "dst"_a, "rank"_a, "src"_a, "offset"_a)
      .def("put_signal", &Symm::PutSignal, "rank"_a, "dst"_a, "src"_a, "signal"_a, "value"_a, "op"_a, "offset"_a)
      .def("wait_until", &Symm::WaitUntil, "signal"_a, "cmp"_a, "value"_a, "timeout"_a.none())
      .def("signal_value", &Symm::SignalValue, "signal"_a)
      .def("fence", [](PyTeam& t) { t.T().Fence(); })
      .def("quiet", [](PyTeam& t) { t.T().Quiet(); })
      .def("barrier", &Symm::Barrier, "timeout"_a.none())
      .def("device_synchronize", &Symm::DeviceSynchronize, "timeout"_a.none())
      .def("broadcast", &Broadcast, "buf"_a, "root"_a, "dtype"_a.none(), "timeout"_a.none())
      .def("scatter", &Scatter, "send"_a.none(), "recv"_a, "root"_a, "dtype"_a.none(), "timeout"_a.none())
      .def("gather", &Gather, "send"_a, "recv"_a.none(), "root"_a, "dtype"_a.none(), "timeout"_a.none())
      .def("allgather", &AllGather, "send"_a, "recv"_a, "dtype"_a.none(), "timeout"_a.none())
      .def("reduce", &Reduce, "send"_a, "recv"_a.none(), "root"_a, "op"_a, "dtype"_a.none(), "timeout"_a.none())
      .def("reduce_scatter", &ReduceScatter, "send"_a, "recv"_a, "op"_a, "dtype"_a.none(), "timeout"_a.none())
      .def("allreduce", &AllReduce, "send"_a, "recv"_a, "op"_a, "dtype"_a.none(), "timeout"_a.none())
      .def("alltoall", &AllToAll, "send"_a, "recv"_a, "dtype"_a.none(), "timeout"_a.none());
}
