// weft._weft.TransferEngine: the transfer engine (include/weft/transfer_engine.h) for Python.
//
// weft/trans.py wraps it as weft.TransferEngine (the native API, typed exceptions) and
// weft/mooncake.py builds Mooncake's int-returning API on top of it. Memory is given as ints or
// as objects exposing their memory (ext_common.h). Objects are kept alive (and their buffer
// views held) for as long as the engine may touch them: a registered object until it is
// unregistered, a batch's objects until the batch is freed. Every call that can block releases
// the GIL; the bookkeeping maps are only touched with the GIL held, which is what guards them.
// close() from one thread while another is blocked in the engine waits for that call to end.
//
// Also binds meta::DirectoryServer as weft.MetadataServer: a directory (and Mooncake's
// /metadata HTTP protocol) in-process, for tests and for deployments without `weft meta`.
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <weft/transfer_engine.h>

#include "ext_common.h"
#include "api/trans/device_query.h"
#include "meta/directory_server.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using namespace weft::pyext;
using weft::trans::BatchId;
using weft::trans::BatchStatus;
using weft::trans::BufferInfo;
using weft::trans::Notification;
using weft::trans::Opcode;
using weft::trans::SegmentHandle;
using weft::trans::TransferEngine;
using weft::trans::TransferEngineOptions;
using weft::trans::TransferRequest;

// Options given by keyword in Python (weft/trans.py documents each); an unknown key is an
// error so that a typo never passes as a default.
TransferEngineOptions OptionsOf(const nb::dict& kwargs) {
  TransferEngineOptions o;
  for (auto [k, v] : kwargs) {
    const std::string key = nb::cast<std::string>(k);
    auto ms = [&] { return std::chrono::milliseconds(nb::cast<int64_t>(v)); };
    try {
      if (key == "local_name") o.local_name = nb::cast<std::string>(v);
      else if (key == "metadata") o.metadata = nb::cast<std::string>(v);
      else if (key == "protocol") o.protocol = nb::cast<std::string>(v);
      else if (key == "protocol_fallback") o.protocol_fallback = nb::cast<std::string>(v);
      else if (key == "device_name") o.device_name = nb::cast<std::string>(v);
      else if (key == "transports") o.transports = nb::cast<std::string>(v);
      else if (key == "rpc_port") o.rpc_port = nb::cast<uint16_t>(v);
      else if (key == "bind_host") o.bind_host = nb::cast<std::string>(v);
      else if (key == "rpc_bind_host") o.rpc_bind_host = nb::cast<std::string>(v);
      else if (key == "advertise_host") o.advertise_host = nb::cast<std::string>(v);
      else if (key == "cluster_secret") o.auth.cluster_secret = nb::cast<std::string>(v);
      else if (key == "allow_unauthenticated") o.auth.allow_unauthenticated = nb::cast<bool>(v);
      else if (key == "lanes") o.lanes = nb::cast<int>(v);
      else if (key == "server_threads") o.server_threads = nb::cast<int>(v);
      else if (key == "worker_threads") o.worker_threads = nb::cast<int>(v);
      else if (key == "transfer_timeout_ms") o.transfer_timeout = ms();
      else if (key == "metadata_timeout_ms") o.metadata_timeout = ms();
      else if (key == "descriptor_lease_ms") o.descriptor_lease = ms();
      else if (key == "metadata_prefix") o.metadata_prefix = nb::cast<std::string>(v);
      else RaiseCode(Code::kInvalidArgument, "unknown TransferEngine option '{}'", key);
    } catch (const nb::cast_error&) {
      RaiseCode(Code::kInvalidArgument, "TransferEngine option '{}': {} has the wrong type", key,
                nb::str(v).c_str());
    }
  }
  return o;
}

Opcode OpcodeOf(nb::handle op) {
  // Mooncake's TransferOpcode (an enum whose int value is Read = 0, Write = 1), an int, or text.
  if (nb::isinstance<nb::str>(op)) {
    const std::string s = nb::cast<std::string>(op);
    if (s == "read" || s == "READ" || s == "Read") return Opcode::kRead;
    if (s == "write" || s == "WRITE" || s == "Write") return Opcode::kWrite;
    RaiseCode(Code::kInvalidArgument, "opcode '{}' is not 'read' or 'write'", s);
  }
  if (PyBool_Check(op.ptr())) throw nb::type_error("opcode: a bool is not an opcode");
  nb::object index = nb::steal(PyNumber_Index(op.ptr()));
  if (!index.is_valid()) {
    PyErr_Clear();
    throw nb::type_error("opcode must be 'read', 'write', 0 (read), 1 (write) or a TransferOpcode");
  }
  const long v = PyLong_AsLong(index.ptr());
  if (v == 0) return Opcode::kRead;
  if (v == 1) return Opcode::kWrite;
  if (PyErr_Occurred()) PyErr_Clear();
  RaiseCode(Code::kInvalidArgument, "opcode {} is not 0 (read) or 1 (write)", v);
}

std::optional<Notification> NotificationOf(nb::handle notify) {
  if (notify.is_none()) return std::nullopt;
  // (name, message) or an object with name and msg/message (Mooncake's TransferNotify).
  auto text = [](nb::handle h, const char* what) -> std::string {
    if (nb::isinstance<nb::bytes>(h)) {
      nb::bytes b = nb::borrow<nb::bytes>(h);
      return std::string(b.c_str(), b.size());
    }
    if (nb::isinstance<nb::str>(h)) {
      Py_ssize_t n = 0;
      const char* p = PyUnicode_AsUTF8AndSize(h.ptr(), &n);
      if (!p) RaiseCode(Code::kInvalidArgument, "notification {}: {}", what, TakePythonError());
      return std::string(p, static_cast<size_t>(n));
    }
    throw nb::type_error(fmt::format("notification {} must be str or bytes", what).c_str());
  };
  if (nb::isinstance<nb::tuple>(notify) || nb::isinstance<nb::list>(notify)) {
    nb::object seq = nb::steal(PySequence_Tuple(notify.ptr()));
    nb::tuple t = nb::borrow<nb::tuple>(seq);
    if (t.size() != 2) RaiseCode(Code::kInvalidArgument, "a notification is (name, message)");
    return Notification{text(t[0], "name"), text(t[1], "message")};
  }
  if (nb::hasattr(notify, "name")) {
    nb::object msg = nb::hasattr(notify, "msg") ? notify.attr("msg") : notify.attr("message");
    return Notification{text(notify.attr("name"), "name"), text(msg, "message")};
  }
  throw nb::type_error("notify must be None, (name, message) or an object with name and msg");
}

nb::tuple BufferTuple(const BufferInfo& b) {
  return nb::make_tuple(b.addr, b.length, b.location, b.remote_accessible);
}

const char* StateName(weft::trans::TransferState s) {
  switch (s) {
    case weft::trans::TransferState::kPending: return "pending";
    case weft::trans::TransferState::kCompleted: return "completed";
    case weft::trans::TransferState::kFailed: return "failed";
    case weft::trans::TransferState::kTimeout: return "timeout";
  }
  return "unknown";
}

// (states, results, done, notification): states as text, results None or the typed exception
// per request, notification None or why it was withheld.
nb::tuple StatusTuple(const BatchStatus& st) {
  nb::list states, results;
  for (auto s : st.states) states.append(StateName(s));
  for (size_t i = 0; i < st.results.size(); ++i) {
    if (st.results[i].ok()) results.append(nb::none());
    else results.append(MakeError(st.results[i].Annotate(fmt::format("request {} of {}", i, st.results.size()))));
  }
  nb::object notification = st.notification.ok() ? nb::none() : MakeError(st.notification);
  return nb::make_tuple(states, results, st.done, notification);
}


std::optional<weft::Deadline> OptionalDeadline(std::optional<double> timeout_s) {
  if (!timeout_s) return std::nullopt;
  return DeadlineOf(timeout_s);
}

class PyTransferEngine {
 public:
  explicit PyTransferEngine(const nb::dict& kwargs) {
    const TransferEngineOptions options = OptionsOf(kwargs);
    weft::Result<std::unique_ptr<TransferEngine>> r = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      r = TransferEngine::Create(options);
    }
    if (!r.ok()) Raise(r.status());
    engine_ = std::move(*r);
  }

  // The engine stops (waiting for its running batches) before the memory it may touch is let go.
  ~PyTransferEngine() { Close(); }

  // New calls fail with CANCELLED from here on; calls of other threads that are blocked in the
  // engine (GIL released) finish first (each is bounded by a deadline), then the engine goes.
  void Close() {
    if (!engine_ || closing_) return;
    closing_ = true;
    {
      nb::gil_scoped_release release;
      std::unique_lock lock(mu_);
      idle_.wait(lock, [&] { return inflight_.load() == 0; });
      engine_.reset();
    }
    batches_.clear();
    registered_.clear();
  }

  bool closed() const { return !engine_ || closing_; }
  const std::string& name() { return E().name(); }
  uint16_t rpc_port() { return E().rpc_port(); }
  uint16_t data_port() { return E().data_port(); }
  const std::string& protocol() { return E().protocol(); }
  uint64_t native_handle() { return reinterpret_cast<uint64_t>(&E()); }
  std::string metrics_text() { return E().MetricsText(); }

  // Returns the registered address. An object is kept (with its buffer view) until unregistered.
  uint64_t RegisterMemory(nb::handle memory, std::optional<uint64_t> length, const std::string& location,
                          bool remote_accessible) {
    TransferEngine& e = E();
    Use use(this);
    MemPtr m = Resolve(memory, /*writable=*/false, "memory");
    uint64_t len = 0;
    if (length) {
      if (m->size && *length > *m->size)
        RaiseCode(Code::kOutOfRange, "length {} is larger than the buffer ({} bytes)", *length, *m->size);
      len = *length;
    } else if (m->size) {
      len = *m->size;
    } else {
      RaiseCode(Code::kInvalidArgument, "length is needed when memory is an address");
    }
    Status s;
    {
      nb::gil_scoped_release release;
      s = e.RegisterMemory(reinterpret_cast<void*>(m->addr), len, location, remote_accessible);
    }
    Check(s);
    const uint64_t addr = m->addr;
    registered_[addr] = std::move(m);
    return addr;
  }

  void UnregisterMemory(nb::handle memory) {
    TransferEngine& e = E();
    Use use(this);
    MemPtr m = Resolve(memory, false, "memory");
    const uint64_t addr = m->addr;
    m.reset();
    Status s;
    {
      nb::gil_scoped_release release;
      s = e.UnregisterMemory(reinterpret_cast<void*>(addr));
    }
    Check(s);
    registered_.erase(addr);  // the engine no longer touches it: let the object go
  }

  uint64_t AllocateManagedBuffer(uint64_t length) {
    TransferEngine& e = E();
    Use use(this);
    weft::Result<void*> p = weft::Error(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      p = e.AllocateManagedBuffer(length);
    }
    Check(p.status());
    return reinterpret_cast<uint64_t>(*p);
  }

  void FreeManagedBuffer(uint64_t addr) {
    TransferEngine& e = E();
    Use use(this);
    Status s;
    {
      nb::gil_scoped_release release;
      s = e.FreeManagedBuffer(reinterpret_cast<void*>(addr));
    }
    Check(s);
  }

  // The path one request (as given to transfer()) would take, and why.
  std::string Route(nb::handle request) {
    TransferEngine& e = E();
    Use use(this);
    nb::tuple one = nb::make_tuple(request);
    Batch b = Parse(nb::borrow<nb::iterable>(one));
    weft::Result<std::string> r = weft::Error(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      r = e.Route(b.requests.at(0));
    }
    Check(r.status());
    return *r;
  }

  std::vector<nb::tuple> LocalBuffers() {
    std::vector<nb::tuple> out;
    for (const auto& b : E().LocalBuffers()) out.push_back(BufferTuple(b));
    return out;
  }

  SegmentHandle OpenSegment(const std::string& name) {
    TransferEngine& e = E();
    Use use(this);
    weft::Result<SegmentHandle> r = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      r = e.OpenSegment(name);
    }
    if (!r.ok()) Raise(r.status());
    return *r;
  }

  void CloseSegment(SegmentHandle handle) {
    TransferEngine& e = E();
    Use use(this);
    Status s;
    {
      nb::gil_scoped_release release;
      s = e.CloseSegment(handle);
    }
    Check(s);
  }

  std::vector<nb::tuple> RemoteBuffers(nb::handle target, bool refresh) {
    const SegmentHandle handle = TargetOf(target);
    TransferEngine& e = E();
    Use use(this);
    weft::Result<std::vector<BufferInfo>> r = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      r = e.RemoteBuffers(handle, refresh);
    }
    if (!r.ok()) Raise(r.status());
    std::vector<nb::tuple> out;
    for (const auto& b : *r) out.push_back(BufferTuple(b));
    return out;
  }

  // requests: (opcode, local, target, remote_addr[, length]); local an int or a buffer object
  // (then length defaults to its size), target a handle or a segment name.
  BatchId Submit(nb::iterable requests, nb::handle notify, std::optional<double> timeout) {
    Batch batch = Parse(requests);
    return SubmitBatch(std::move(batch), notify, timeout);
  }

  // The same from parallel lists of ints (Mooncake's shape; no tuple per request).
  BatchId SubmitLists(nb::handle opcode, nb::handle target, nb::handle locals, nb::handle remotes,
                      nb::handle lengths, nb::handle notify, std::optional<double> timeout) {
    Batch batch = ParseLists(opcode, target, locals, remotes, lengths);
    return SubmitBatch(std::move(batch), notify, timeout);
  }

  nb::tuple Poll(BatchId id) {
    weft::Result<BatchStatus> r = E().Poll(id);
    if (!r.ok()) Raise(r.status());
    return StatusTuple(*r);
  }

  // None while the batch runs, then whether every request completed: what a caller polling many
  // batches needs, without a Python object per request (Poll's lists cost ~90 us for 1024).
  std::optional<bool> PollDone(BatchId id) {
    weft::Result<BatchStatus> r = E().Poll(id);
    if (!r.ok()) Raise(r.status());
    if (!r->done) return std::nullopt;
    return std::all_of(r->results.begin(), r->results.end(), [](const Status& s) { return s.ok(); });
  }

  nb::tuple Wait(BatchId id, std::optional<double> timeout) {
    TransferEngine& e = E();
    Use use(this);
    weft::Result<BatchStatus> r = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      r = e.Wait(id, DeadlineOf(timeout));
    }
    if (!r.ok()) Raise(r.status());
    return StatusTuple(*r);
  }

  void FreeBatch(BatchId id) {
    Check(E().FreeBatch(id));
    batches_.erase(id);  // finished: its buffers may go
  }

  nb::list Transfer(nb::iterable requests, nb::handle notify, std::optional<double> timeout, bool check) {
    Batch batch = Parse(requests);
    return RunBatch(batch, notify, timeout, check);
  }

  nb::list TransferLists(nb::handle opcode, nb::handle target, nb::handle locals, nb::handle remotes,
                         nb::handle lengths, nb::handle notify, std::optional<double> timeout, bool check) {
    Batch batch = ParseLists(opcode, target, locals, remotes, lengths);
    return RunBatch(batch, notify, timeout, check);
  }

  // weft.mooncake's synchronous batches in one native call, so the shim touches no per-request
  // Python object beyond the three lists: zero-length requests are dropped (Mooncake skips them;
  // with none left only the notification goes), the deadline is timeout_base + 1 ns a byte, and the
  // answer is None when every request succeeded, else the per-request results of those that ran.
  nb::object TransferListsMooncake(nb::handle opcode, nb::handle target, nb::handle locals, nb::handle remotes,
                                   nb::handle lengths, nb::handle notify, double timeout_base_s) {
    Batch batch = ParseLists(opcode, target, locals, remotes, lengths);
    std::erase_if(batch.requests, [](const TransferRequest& r) { return r.length == 0; });
    if (batch.requests.empty()) {
      if (!notify.is_none()) Notify(target, notify, timeout_base_s);
      return nb::none();
    }
    uint64_t total = 0;
    for (const TransferRequest& r : batch.requests) total += r.length;
    const std::vector<Status> statuses = RunStatuses(batch, notify, timeout_base_s + total * 1e-9);
    for (const Status& st : statuses)
      if (!st.ok()) return ResultList(statuses, /*check=*/false);
    return nb::none();
  }

  void Notify(nb::handle target, nb::handle notification, std::optional<double> timeout) {
    const SegmentHandle handle = TargetOf(target);
    std::optional<Notification> n = NotificationOf(notification);
    if (!n) RaiseCode(Code::kInvalidArgument, "notify needs a notification, not None");
    TransferEngine& e = E();
    Use use(this);
    Status s;
    {
      nb::gil_scoped_release release;
      s = e.Notify(handle, *n, OptionalDeadline(timeout));
    }
    Check(s);
  }

  // [(name, message bytes)] in arrival order.
  nb::list TakeNotifications() {
    std::vector<Notification> got = E().TakeNotifications();
    nb::list out;
    for (auto& n : got)
      out.append(nb::make_tuple(nb::str(n.name.data(), n.name.size()), nb::bytes(n.message.data(), n.message.size())));
    return out;
  }

  void Probe(const std::string& name, std::optional<double> timeout) {
    TransferEngine& e = E();
    Use use(this);
    Status s;
    {
      nb::gil_scoped_release release;
      s = e.Probe(name, OptionalDeadline(timeout));
    }
    Check(s);
  }

 private:
  struct Batch {
    std::vector<TransferRequest> requests;
    std::vector<MemPtr> keep;  // buffer objects behind the local ends
  };

  TransferEngine& E() {
    if (!engine_ || closing_) RaiseCode(Code::kCancelled, "this TransferEngine is closed");
    return *engine_;
  }

  // Marks a call that uses the engine with the GIL released, so that Close() (another thread)
  // does not destroy the engine under it. Made with the GIL held, after E().
  class Use {
   public:
    explicit Use(PyTransferEngine* owner) : owner_(owner) { owner_->inflight_.fetch_add(1); }
    ~Use() {
      if (owner_->inflight_.fetch_sub(1) == 1) {
        std::lock_guard lock(owner_->mu_);
        owner_->idle_.notify_all();
      }
    }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;

   private:
    PyTransferEngine* owner_;
  };

  SegmentHandle TargetOf(nb::handle target) {
    if (nb::isinstance<nb::str>(target)) return OpenSegment(nb::cast<std::string>(target));
    return ToU64(target, "target");
  }

  Batch Parse(nb::iterable requests) {
    Batch b;
    std::unordered_map<std::string, SegmentHandle> names;  // one OpenSegment per name per batch
    size_t index = 0;
    for (nb::handle item : requests) {
      nb::object seq = nb::steal(PySequence_Tuple(item.ptr()));
      if (!seq.is_valid()) {
        const std::string reason = TakePythonError();
        RaiseCode(Code::kInvalidArgument, "request {}: expected (opcode, local, target, remote_addr[, length]): {}",
                  index, reason);
      }
      nb::tuple t = nb::borrow<nb::tuple>(seq);
      if (t.size() != 4 && t.size() != 5)
        RaiseCode(Code::kInvalidArgument, "request {}: expected (opcode, local, target, remote_addr[, length])", index);
      TransferRequest r;
      r.op = OpcodeOf(t[0]);
      MemPtr m = Resolve(t[1], /*writable=*/r.op == Opcode::kRead, "local");
      if (nb::isinstance<nb::str>(t[2])) {
        const std::string name = nb::cast<std::string>(t[2]);
        auto it = names.find(name);
        r.target = it != names.end() ? it->second : (names[name] = OpenSegment(name));
      } else {
        r.target = ToU64(t[2], "target");
      }
      r.remote_addr = ToU64(t[3], "remote_addr");
      if (t.size() == 5 && !t[4].is_none()) {
        r.length = ToU64(t[4], "length");
        if (m->size && r.length > *m->size)
          RaiseCode(Code::kOutOfRange, "request {}: length {} is larger than the local buffer ({} bytes)", index,
                    r.length, *m->size);
      } else if (m->size) {
        r.length = *m->size;
      } else {
        RaiseCode(Code::kInvalidArgument, "request {}: length is needed when local is an address", index);
      }
      r.local = reinterpret_cast<void*>(m->addr);
      b.requests.push_back(r);
      if (m->has_view || m->keep.is_valid() || m->tensor) b.keep.push_back(std::move(m));
      ++index;
    }
    return b;
  }

  // A list of ints, or (without a Python object per item) a C-contiguous buffer of 8-byte
  // integers: a numpy uint64/int64 array, array.array('Q').
  static std::vector<uint64_t> U64List(nb::handle seq, const char* what) {
    std::vector<uint64_t> out;
    if (PyObject_CheckBuffer(seq.ptr())) {
      Py_buffer view{};
      if (PyObject_GetBuffer(seq.ptr(), &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) throw nb::python_error();
      std::string_view f = view.format ? view.format : "B";
      if (!f.empty() && (f[0] == '@' || f[0] == '=' || f[0] == '<')) f.remove_prefix(1);
      const bool words =
          view.itemsize == 8 && f.size() == 1 && std::string_view("QqLl").find(f[0]) != std::string_view::npos;
      std::string refusal;
      if (words) {
        out.resize(static_cast<size_t>(view.len) / 8);
        std::memcpy(out.data(), view.buf, out.size() * 8);
      } else {
        refusal = fmt::format("{}: a buffer of {}-byte items of format '{}'; give a list of ints or an array of "
                              "8-byte integers", what, view.itemsize, f);
      }
      PyBuffer_Release(&view);
      if (!words) throw nb::type_error(refusal.c_str());
      return out;
    }
    nb::object fast = nb::steal(PySequence_Fast(seq.ptr(), what));
    if (!fast.is_valid()) throw nb::python_error();
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(fast.ptr());
    PyObject** items = PySequence_Fast_ITEMS(fast.ptr());
    out.reserve(static_cast<size_t>(n));
    for (Py_ssize_t i = 0; i < n; ++i) {
      if (PyBool_Check(items[i]) || !PyLong_Check(items[i]))
        throw nb::type_error(fmt::format("{}[{}] must be an int", what, i).c_str());
      out.push_back(ToU64(items[i], what));
    }
    return out;
  }

  Batch ParseLists(nb::handle opcode, nb::handle target, nb::handle locals, nb::handle remotes, nb::handle lengths) {
    Batch b;
    const Opcode op = OpcodeOf(opcode);
    const SegmentHandle handle = TargetOf(target);
    std::vector<uint64_t> l = U64List(locals, "buffers"), r = U64List(remotes, "peer_buffer_addresses"),
                          n = U64List(lengths, "lengths");
    if (l.size() != r.size() || l.size() != n.size())
      RaiseCode(Code::kInvalidArgument, "{} buffers, {} peer addresses and {} lengths: the lists must be as long",
                l.size(), r.size(), n.size());
    b.requests.resize(l.size());
    for (size_t i = 0; i < l.size(); ++i)
      b.requests[i] = TransferRequest{op, reinterpret_cast<void*>(l[i]), handle, r[i], n[i]};
    return b;
  }

  BatchId SubmitBatch(Batch batch, nb::handle notify, std::optional<double> timeout) {
    std::optional<Notification> n = NotificationOf(notify);
    TransferEngine& e = E();
    Use use(this);
    weft::Result<BatchId> r = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      r = e.Submit(batch.requests, std::move(n), OptionalDeadline(timeout));
    }
    if (!r.ok()) Raise(r.status());
    if (!batch.keep.empty()) batches_[*r] = std::move(batch.keep);
    return *r;
  }

  // Runs a batch to completion without the GIL: one status per request.
  std::vector<Status> RunStatuses(Batch& batch, nb::handle notify, std::optional<double> timeout) {
    std::optional<Notification> n = NotificationOf(notify);
    TransferEngine& e = E();
    Use use(this);
    nb::gil_scoped_release release;
    return e.Transfer(batch.requests, std::move(n), OptionalDeadline(timeout));
  }

  nb::list RunBatch(Batch& batch, nb::handle notify, std::optional<double> timeout, bool check) {
    return ResultList(RunStatuses(batch, notify, timeout), check);
  }

  std::unique_ptr<TransferEngine> engine_;
  bool closing_ = false;  // GIL-guarded
  std::atomic<int> inflight_{0};
  std::mutex mu_;
  std::condition_variable idle_;
  std::map<uint64_t, MemPtr> registered_;
  std::unordered_map<BatchId, std::vector<MemPtr>> batches_;
};

class PyMetadataServer {
 public:
  PyMetadataServer(const std::string& bind, const std::string& cluster_secret) {
    weft::meta::DirectoryServerOptions o;
    o.bind = bind;
    o.cluster_secret = cluster_secret;  // empty: writes go unsigned (the Python layer says so)
    auto r = weft::meta::DirectoryServer::Start(o);
    if (!r.ok()) Raise(r.status());
    server_ = std::move(*r);
  }
  ~PyMetadataServer() { Stop(); }
  void Stop() {
    if (!server_) return;
    nb::gil_scoped_release release;
    server_->Stop();
  }
  std::string host() { return S().host(); }
  uint16_t port() { return S().port(); }
  std::string address() { return S().address(); }

 private:
  weft::meta::DirectoryServer& S() {
    if (!server_) RaiseCode(Code::kCancelled, "the metadata server is stopped");
    return *server_;
  }
  std::unique_ptr<weft::meta::DirectoryServer> server_;
};

// Device memory questions for weft/trans.py and weft/mooncake.py, answered by the core's CUDA
// layer (api/trans/device_query.h: the driver reached through the runtime, never linked), so
// Python code never imports torch or a CUDA binding to learn what an address is.
Status CudaUsable() { return weft::trans::DevicesUsable(); }
int CudaPointerDevice(uint64_t addr) { return weft::trans::DeviceOfPointer(reinterpret_cast<const void*>(addr)); }
Status CudaStreamSynchronize(uint64_t stream) { return weft::trans::SynchronizeStream(stream); }

// (usable, why not): the reason is "" when a GPU is usable.
nb::tuple CudaStatusTuple() {
  const Status s = CudaUsable();
  return nb::make_tuple(s.ok(), s.ok() ? std::string() : s.message());
}

void CudaSynchronize(uint64_t stream) {
  Status s;
  {
    nb::gil_scoped_release release;  // the stream may hold long work
    s = CudaStreamSynchronize(stream);
  }
  Check(s);
}

}  // namespace

void BindTrans(nb::module_& m) {
  nb::class_<PyTransferEngine>(m, "TransferEngine")
      .def(nb::init<const nb::dict&>(), "options"_a)
      .def("close", &PyTransferEngine::Close)
      .def_prop_ro("closed", &PyTransferEngine::closed)
      .def_prop_ro("name", &PyTransferEngine::name)
      .def_prop_ro("rpc_port", &PyTransferEngine::rpc_port)
      .def_prop_ro("data_port", &PyTransferEngine::data_port)
      .def_prop_ro("protocol", &PyTransferEngine::protocol)
      .def_prop_ro("native_handle", &PyTransferEngine::native_handle)
      .def("metrics_text", &PyTransferEngine::metrics_text)
      .def("register_memory", &PyTransferEngine::RegisterMemory, "memory"_a, "length"_a.none(),
           "location"_a, "remote_accessible"_a)
      .def("unregister_memory", &PyTransferEngine::UnregisterMemory, "memory"_a)
      .def("local_buffers", &PyTransferEngine::LocalBuffers)
      .def("allocate_managed_buffer", &PyTransferEngine::AllocateManagedBuffer, "length"_a)
      .def("free_managed_buffer", &PyTransferEngine::FreeManagedBuffer, "addr"_a)
      .def("route", &PyTransferEngine::Route, "request"_a)
      .def("open_segment", &PyTransferEngine::OpenSegment, "name"_a)
      .def("close_segment", &PyTransferEngine::CloseSegment, "handle"_a)
      .def("remote_buffers", &PyTransferEngine::RemoteBuffers, "target"_a, "refresh"_a)
      .def("submit", &PyTransferEngine::Submit, "requests"_a, "notify"_a.none(), "timeout"_a.none())
      .def("submit_lists", &PyTransferEngine::SubmitLists, "opcode"_a, "target"_a, "locals"_a, "remotes"_a,
           "lengths"_a, "notify"_a.none(), "timeout"_a.none())
      .def("poll", &PyTransferEngine::Poll, "batch"_a)
      .def("poll_done", &PyTransferEngine::PollDone, "batch"_a)
      .def("wait", &PyTransferEngine::Wait, "batch"_a, "timeout"_a.none())
      .def("free_batch", &PyTransferEngine::FreeBatch, "batch"_a)
      .def("transfer", &PyTransferEngine::Transfer, "requests"_a, "notify"_a.none(), "timeout"_a.none(), "check"_a)
      .def("transfer_lists", &PyTransferEngine::TransferLists, "opcode"_a, "target"_a, "locals"_a, "remotes"_a,
           "lengths"_a, "notify"_a.none(), "timeout"_a.none(), "check"_a)
      .def("transfer_lists_mooncake", &PyTransferEngine::TransferListsMooncake, "opcode"_a, "target"_a, "locals"_a,
           "remotes"_a, "lengths"_a, "notify"_a.none(), "timeout_base"_a)
      .def("notify", &PyTransferEngine::Notify, "target"_a, "notification"_a, "timeout"_a.none())
      .def("take_notifications", &PyTransferEngine::TakeNotifications)
      .def("probe", &PyTransferEngine::Probe, "name"_a, "timeout"_a.none());

  nb::class_<PyMetadataServer>(m, "MetadataServer")
      .def(nb::init<const std::string&, const std::string&>(), "bind"_a, "cluster_secret"_a)
      .def("stop", &PyMetadataServer::Stop)
      .def_prop_ro("host", &PyMetadataServer::host)
      .def_prop_ro("port", &PyMetadataServer::port)
      .def_prop_ro("address", &PyMetadataServer::address);

  m.attr("max_notification_bytes") = weft::trans::kMaxNotificationBytes;
  // Named apart from the CUDA helpers of the pool's side (cuda_*): these serve the transfer engine.
  m.def("device_status", &CudaStatusTuple);
  m.def("pointer_device", &CudaPointerDevice, "addr"_a);
  m.def("stream_synchronize", &CudaSynchronize, "stream"_a);
}
