// weft._weft.Store: the KV-cache store (include/weft/store.h) for Python.
//
// weft/store.py wraps it as weft.store.Store (typed exceptions) and weft/mooncake_store.py builds
// Mooncake's int-returning MooncakeDistributedStore on top. Keys are str (UTF-8) or bytes; values
// and buffers are ints or objects exposing their memory (ext_common.h). A registered object is
// kept alive (its buffer view held) until it is unregistered or the store closes, because the
// store may write into it at any later call. Every call that can block releases the GIL; the
// registration map is touched only with the GIL held, which is what guards it.
//
// The native Store is held by shared_ptr and each call takes its own reference first, so close()
// from one thread while another is inside a call never frees the object under that call.
#include <nanobind/nanobind.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <weft/config.h>
#include <weft/store.h>

#include "api/store/types.h"
#include "ext_common.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using namespace weft::pyext;
using weft::store::PlaceOptions;
using weft::store::Store;

// A key as the store wants it: str as UTF-8, bytes as they are.
std::string KeyOf(nb::handle key, const char* what = "key") {
  if (nb::isinstance<nb::str>(key)) {
    Py_ssize_t n = 0;
    const char* p = PyUnicode_AsUTF8AndSize(key.ptr(), &n);
    if (!p) RaiseCode(Code::kInvalidArgument, "{}: {}", what, TakePythonError());
    return std::string(p, static_cast<size_t>(n));
  }
  if (nb::isinstance<nb::bytes>(key)) {
    nb::bytes b = nb::borrow<nb::bytes>(key);
    return std::string(b.c_str(), b.size());
  }
  throw nb::type_error(fmt::format("{}: expected str or bytes, not {}", what, nb::type_name(key.type()).c_str()).c_str());
}

std::vector<std::string> KeysOf(nb::iterable keys) {
  std::vector<std::string> out;
  for (nb::handle key : keys) out.push_back(KeyOf(key, fmt::format("keys[{}]", out.size()).c_str()));
  return out;
}

// The bytes of `obj` for a put: an object exposing its memory (an int has no length here).
MemPtr ValueOf(nb::handle obj, const char* what) {
  MemPtr m = Resolve(obj, /*writable=*/false, what);
  if (!m->size) RaiseCode(Code::kInvalidArgument, "{}: give bytes or a buffer, not an address (use put_from)", what);
  return m;
}

// A zero-copy end: an int address with its size, or an object (its size, or less when `size`
// says so). The store itself checks the range against the registered buffers.
MemPtr BufferOf(nb::handle obj, std::optional<uint64_t> size, bool writable, const char* what) {
  MemPtr m = Resolve(obj, writable, what);
  if (size) {
    if (m->size && *size > *m->size)
      RaiseCode(Code::kInvalidArgument, "{}: size {} is larger than the buffer ({} bytes)", what, *size, *m->size);
    m->size = size;
  }
  if (!m->size) RaiseCode(Code::kInvalidArgument, "{}: size is needed for an int address", what);
  return m;
}

std::optional<uint64_t> SizeAt(nb::handle sizes, size_t i) {
  if (sizes.is_none()) return std::nullopt;
  nb::handle item = sizes[i];
  if (item.is_none()) return std::nullopt;
  return ToU64(item, "sizes");
}

// A bytes object of `size` bytes made from a thread without the GIL (the store's destination
// callback); returns where its bytes go, or null (the read then fails) when Python has no memory.
void* NewBytes(nb::object& slot, uint64_t size) {
  nb::gil_scoped_acquire acquire;
  PyObject* bytes = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(size));
  if (!bytes) {
    PyErr_Clear();
    return nullptr;
  }
  slot = nb::steal(bytes);
  return PyBytes_AS_STRING(bytes);
}

void CheckSameLength(size_t keys, size_t other, const char* what) {
  if (keys != other) RaiseCode(Code::kInvalidArgument, "{} keys but {} {}", keys, other, what);
}

// One result per key: the value (converted by `ok`) or the exception of its Status.
template <typename T, typename Convert>
nb::list ResultsOf(std::vector<weft::Result<T>>& results, Convert ok) {
  nb::list out;
  for (auto& r : results) {
    if (r.ok()) out.append(ok(*r));
    else out.append(MakeError(r.status()));
  }
  return out;
}

class PyStore {
 public:
  PyStore(const std::map<std::string, std::string>& overrides, int mode) {
    if (mode < 0 || mode > 2) RaiseCode(Code::kInvalidArgument, "join mode {} is not 0 (auto), 1 (host) or 2 (join)", mode);
    auto config = weft::LoadConfig("", overrides);
    if (!config.ok()) Raise(config.status());
    weft::Result<std::unique_ptr<Store>> opened = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      opened = Store::Open(*config, static_cast<weft::bm::JoinMode>(mode));
    }
    if (!opened.ok()) Raise(opened.status());
    store_ = std::shared_ptr<Store>(std::move(*opened));
    rank_ = store_->pool().rank();
  }
  PyStore(const PyStore&) = delete;
  PyStore& operator=(const PyStore&) = delete;
  ~PyStore() {
    // The registered objects' views are released with the GIL held (the destructor has it),
    // after the native store is gone and can no longer write into them.
    std::shared_ptr<Store> store = std::move(store_);
    if (store) {
      nb::gil_scoped_release release;
      store.reset();
    }
  }

  void Put(nb::handle key, nb::handle value, const PlaceOptions& place, bool upsert) {
    auto store = S();
    const std::string k = KeyOf(key);
    MemPtr v = ValueOf(value, "value");
    Status s;
    {
      nb::gil_scoped_release release;
      std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(v->addr), *v->size);
      s = upsert ? store->Upsert(k, bytes, place) : store->Put(k, bytes, place);
    }
    Check(s);
  }

  void PutParts(nb::handle key, nb::iterable parts, const PlaceOptions& place, bool upsert) {
    auto store = S();
    const std::string k = KeyOf(key);
    std::vector<MemPtr> keep;
    std::vector<weft::store::Span> spans;
    for (nb::handle part : parts) {
      keep.push_back(ValueOf(part, "parts"));
      spans.push_back({reinterpret_cast<const void*>(keep.back()->addr), *keep.back()->size});
    }
    Status s;
    {
      nb::gil_scoped_release release;
      s = store->PutParts(k, spans, place, upsert);
    }
    Check(s);
  }

  nb::list PutBatch(nb::iterable keys, nb::iterable values, const PlaceOptions& place, bool upsert) {
    auto store = S();
    const std::vector<std::string> ks = KeysOf(keys);
    std::vector<MemPtr> keep;
    std::vector<weft::store::Span> spans;
    for (nb::handle value : values) {
      keep.push_back(ValueOf(value, "values"));
      spans.push_back({reinterpret_cast<const void*>(keep.back()->addr), *keep.back()->size});
    }
    CheckSameLength(ks.size(), spans.size(), "values");
    std::vector<Status> statuses;
    {
      nb::gil_scoped_release release;
      statuses = store->PutBatch(ks, spans, place, upsert);
    }
    return ResultList(statuses, /*check=*/false);
  }

  // The value is read straight into a new bytes object, allocated (GIL taken back for it) once
  // the master has told its size: one copy, no staging vector.
  nb::object Get(nb::handle key) {
    auto store = S();
    const std::string k = KeyOf(key);
    nb::object value;
    weft::Result<uint64_t> r = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      r = store->GetWith(k, [&](uint64_t size) { return NewBytes(value, size); });
    }
    if (!r.ok()) Raise(r.status());
    return value;
  }

  // One entry per key: its bytes, or the exception of its Status.
  nb::list GetBatch(nb::iterable keys) {
    auto store = S();
    const std::vector<std::string> ks = KeysOf(keys);
    std::vector<nb::object> values(ks.size());
    std::vector<weft::Result<uint64_t>> results;
    {
      nb::gil_scoped_release release;
      results = store->GetBatchWith(ks, [&](size_t i, uint64_t size) {
        return i < values.size() ? NewBytes(values[i], size) : nullptr;
      });
    }
    nb::list out;
    for (size_t i = 0; i < results.size(); ++i) {
      if (results[i].ok() && values[i].is_valid()) out.append(values[i]);
      else out.append(MakeError(results[i].ok() ? Status(Code::kInternal, "no destination was asked for") : results[i].status()));
    }
    return out;
  }

  uint64_t GetInto(nb::handle key, nb::handle buffer, std::optional<uint64_t> size) {
    auto store = S();
    const std::string k = KeyOf(key);
    MemPtr b = BufferOf(buffer, size, /*writable=*/true, "buffer");
    weft::Result<uint64_t> r = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      r = store->GetInto(k, reinterpret_cast<void*>(b->addr), *b->size);
    }
    if (!r.ok()) Raise(r.status());
    return *r;
  }

  nb::list GetIntoBatch(nb::iterable keys, nb::sequence buffers, nb::handle sizes) {
    auto store = S();
    const std::vector<std::string> ks = KeysOf(keys);
    CheckSameLength(ks.size(), nb::len(buffers), "buffers");
    if (!sizes.is_none()) CheckSameLength(ks.size(), nb::len(sizes), "sizes");
    std::vector<MemPtr> keep;
    std::vector<weft::store::Buffer> bufs;
    for (size_t i = 0; i < ks.size(); ++i) {
      keep.push_back(BufferOf(buffers[i], SizeAt(sizes, i), /*writable=*/true, "buffers"));
      bufs.push_back({reinterpret_cast<void*>(keep.back()->addr), *keep.back()->size});
    }
    std::vector<weft::Result<uint64_t>> results;
    {
      nb::gil_scoped_release release;
      results = store->GetIntoBatch(ks, bufs);
    }
    return ResultsOf(results, [](uint64_t n) { return nb::int_(n); });
  }

  void PutFrom(nb::handle key, nb::handle buffer, std::optional<uint64_t> size, const PlaceOptions& place,
               bool upsert) {
    auto store = S();
    const std::string k = KeyOf(key);
    MemPtr b = BufferOf(buffer, size, /*writable=*/false, "buffer");
    Status s;
    {
      nb::gil_scoped_release release;
      s = store->PutFrom(k, reinterpret_cast<const void*>(b->addr), *b->size, place, upsert);
    }
    Check(s);
  }

  nb::list PutFromBatch(nb::iterable keys, nb::sequence buffers, nb::handle sizes, const PlaceOptions& place,
                        bool upsert) {
    auto store = S();
    const std::vector<std::string> ks = KeysOf(keys);
    CheckSameLength(ks.size(), nb::len(buffers), "buffers");
    if (!sizes.is_none()) CheckSameLength(ks.size(), nb::len(sizes), "sizes");
    std::vector<MemPtr> keep;
    std::vector<weft::store::Span> spans;
    for (size_t i = 0; i < ks.size(); ++i) {
      keep.push_back(BufferOf(buffers[i], SizeAt(sizes, i), /*writable=*/false, "buffers"));
      spans.push_back({reinterpret_cast<const void*>(keep.back()->addr), *keep.back()->size});
    }
    std::vector<Status> statuses;
    {
      nb::gil_scoped_release release;
      statuses = store->PutFromBatch(ks, spans, place, upsert);
    }
    return ResultList(statuses, /*check=*/false);
  }

  // One object from several registered buffers laid end to end (Mooncake's multi-buffer puts).
  void PutFromParts(nb::handle key, nb::sequence buffers, nb::handle sizes, const PlaceOptions& place, bool upsert) {
    auto store = S();
    const std::string k = KeyOf(key);
    std::vector<MemPtr> keep = RegisteredParts(buffers, sizes, /*writable=*/false);
    std::vector<weft::store::Span> spans;
    for (const MemPtr& m : keep) spans.push_back({reinterpret_cast<const void*>(m->addr), *m->size});
    Status s;
    {
      nb::gil_scoped_release release;
      s = store->PutParts(k, spans, place, upsert);
    }
    Check(s);
  }

  // The value spread over several registered buffers in order (Mooncake's multi-buffer gets).
  // The store reads into one contiguous destination, so the value is staged once and then
  // copied out: INVALID_ARGUMENT (nothing written) when the buffers hold less than the value.
  uint64_t GetIntoParts(nb::handle key, nb::sequence buffers, nb::handle sizes) {
    auto store = S();
    const std::string k = KeyOf(key);
    std::vector<MemPtr> parts = RegisteredParts(buffers, sizes, /*writable=*/true);
    uint64_t room = 0;
    for (const MemPtr& m : parts) room += *m->size;
    std::vector<uint8_t> staged;
    std::optional<uint64_t> too_large;  // the value's size when the buffers cannot hold it
    weft::Result<uint64_t> r = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      r = store->GetWith(k, [&](uint64_t size) -> void* {
        if (size > room) {
          too_large = size;
          return nullptr;
        }
        staged.resize(size);
        return staged.data();
      });
      if (r.ok()) Scatter(staged, parts);
    }
    if (too_large)
      RaiseCode(Code::kInvalidArgument, "the buffers hold {} bytes, less than the {} of the value", room, *too_large);
    if (!r.ok()) Raise(r.status());
    return *r;
  }

  // Returns the registered address (the key for unregister_buffer).
  uint64_t RegisterBuffer(nb::handle buffer, std::optional<uint64_t> size) {
    auto store = S();
    MemPtr b = BufferOf(buffer, size, /*writable=*/true, "buffer");
    Status s;
    {
      nb::gil_scoped_release release;
      s = store->RegisterBuffer(reinterpret_cast<void*>(b->addr), *b->size);
    }
    Check(s);
    const uint64_t addr = b->addr;
    registered_[addr] = std::move(b);
    return addr;
  }

  void UnregisterBuffer(nb::handle buffer) {
    auto store = S();
    const uint64_t addr = Resolve(buffer, /*writable=*/false, "buffer")->addr;
    Status s;
    {
      nb::gil_scoped_release release;
      s = store->UnregisterBuffer(reinterpret_cast<void*>(addr));
    }
    Check(s);
    registered_.erase(addr);  // only now may the object's memory go
  }

  // (size, [(rank, gva, path), ...], disk_rank): path is the transport a copy from this peer
  // would take ("" when the engine finds none, e.g. the peer is gone), for Mooncake's protocol.
  nb::tuple Describe(nb::handle key) {
    auto store = S();
    const std::string k = KeyOf(key);
    weft::Result<weft::store::ObjectDesc> r = Status(Code::kInternal, "not run");
    std::vector<std::string> paths;
    {
      nb::gil_scoped_release release;
      r = store->Describe(k);
      if (r.ok()) paths = PathsTo(*store, *r);
    }
    if (!r.ok()) Raise(r.status());
    return DescTuple(*r, paths);
  }

  // One entry per key: Describe's tuple, or the exception of its Status.
  nb::list DescribeBatch(nb::iterable keys) {
    auto store = S();
    const std::vector<std::string> ks = KeysOf(keys);
    std::vector<weft::Result<weft::store::ObjectDesc>> results;
    std::vector<std::vector<std::string>> paths(ks.size());
    {
      nb::gil_scoped_release release;
      results = store->DescribeBatch(ks);
      for (size_t i = 0; i < results.size(); ++i)
        if (results[i].ok()) paths[i] = PathsTo(*store, *results[i]);
    }
    nb::list out;
    for (size_t i = 0; i < results.size(); ++i) {
      if (results[i].ok()) out.append(DescTuple(*results[i], paths[i]));
      else out.append(MakeError(results[i].status()));
    }
    return out;
  }

  // Ranged reads: range i copies sizes[i] bytes from offsets[i] in keys[key_index[i]] to
  // dsts[i] (an int address, or a writable object); one entry per range, its size or the
  // exception of its Status.
  nb::list GetRanges(nb::iterable keys, nb::sequence key_index, nb::sequence offsets, nb::sequence sizes,
                     nb::sequence dsts) {
    auto store = S();
    const std::vector<std::string> ks = KeysOf(keys);
    const size_t n = nb::len(key_index);
    if (nb::len(offsets) != n || nb::len(sizes) != n || nb::len(dsts) != n)
      RaiseCode(Code::kInvalidArgument, "{} key indices, {} offsets, {} sizes and {} destinations", n,
                nb::len(offsets), nb::len(sizes), nb::len(dsts));
    std::vector<weft::store::RangeRead> ranges(n);
    std::vector<MemPtr> keep;  // each destination's buffer view, held until the copies end
    for (size_t i = 0; i < n; ++i) {
      const uint64_t size = ToU64(sizes[i], "sizes");
      keep.push_back(Resolve(dsts[i], /*writable=*/true, "dsts"));
      const MemPtr& dst = keep.back();
      if (dst->size && size > *dst->size)
        RaiseCode(Code::kInvalidArgument, "dsts[{}]: {} bytes do not fit its {}", i, size, *dst->size);
      ranges[i] = {static_cast<size_t>(ToU64(key_index[i], "key_index")), ToU64(offsets[i], "offsets"), size,
                   reinterpret_cast<void*>(dst->addr)};
    }
    std::vector<weft::Result<uint64_t>> results;
    {
      nb::gil_scoped_release release;
      results = store->GetRanges(ks, ranges);
    }
    return ResultsOf(results, [](uint64_t got) { return nb::int_(got); });
  }

  bool Exists(nb::handle key) {
    auto store = S();
    const std::string k = KeyOf(key);
    weft::Result<bool> r = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      r = store->Exists(k);
    }
    if (!r.ok()) Raise(r.status());
    return *r;
  }

  nb::list ExistsBatch(nb::iterable keys) {
    auto store = S();
    const std::vector<std::string> ks = KeysOf(keys);
    std::vector<weft::Result<bool>> results;
    {
      nb::gil_scoped_release release;
      results = store->ExistsBatch(ks);
    }
    return ResultsOf(results, [](bool b) { return nb::bool_(b); });
  }

  uint64_t Size(nb::handle key) {
    auto store = S();
    const std::string k = KeyOf(key);
    weft::Result<uint64_t> r = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      r = store->Size(k);
    }
    if (!r.ok()) Raise(r.status());
    return *r;
  }

  void Remove(nb::handle key, bool force) {
    auto store = S();
    const std::string k = KeyOf(key);
    Status s;
    {
      nb::gil_scoped_release release;
      s = store->Remove(k, force);
    }
    Check(s);
  }

  nb::list RemoveBatch(nb::iterable keys, bool force) {
    auto store = S();
    const std::vector<std::string> ks = KeysOf(keys);
    std::vector<Status> statuses;
    {
      nb::gil_scoped_release release;
      statuses = store->RemoveBatch(ks, force);
    }
    return ResultList(statuses, /*check=*/false);
  }

  uint64_t RemoveByRegex(const std::string& pattern, bool force) {
    auto store = S();
    weft::Result<uint64_t> r = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      r = store->RemoveByRegex(pattern, force);
    }
    if (!r.ok()) Raise(r.status());
    return *r;
  }

  uint64_t RemoveAll(bool force) {
    auto store = S();
    weft::Result<uint64_t> r = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      r = store->RemoveAll(force);
    }
    if (!r.ok()) Raise(r.status());
    return *r;
  }

  void Health() {
    auto store = S();
    Status s;
    {
      nb::gil_scoped_release release;
      s = store->Health();
    }
    Check(s);
  }

  nb::dict Stats() {
    auto store = S();
    weft::Result<weft::store::StoreStats> r = Status(Code::kInternal, "not run");
    {
      nb::gil_scoped_release release;
      r = store->Stats();
    }
    if (!r.ok()) Raise(r.status());
    nb::dict d;
    d["objects"] = r->objects;
    d["pending_puts"] = r->pending_puts;
    d["bytes"] = r->bytes;
    d["capacity"] = r->capacity;
    d["used"] = r->used;
    d["evicted"] = r->evicted;
    d["parked_bytes"] = r->parked_bytes;
    d["on_disk"] = r->on_disk;
    d["inline_puts"] = r->inline_puts;
    d["inline_deferred"] = r->inline_deferred;
    return d;
  }

  // Idempotent. The registered objects are let go only after the store has closed.
  void Close() {
    std::shared_ptr<Store> store = std::move(store_);
    if (!store) return;
    Status s;
    {
      nb::gil_scoped_release release;
      s = store->Close();
      store.reset();
    }
    registered_.clear();
    Check(s);
  }

  bool closed() const { return !store_; }

  uint32_t rank() const { return rank_; }

 private:
  // Buffers (ints with sizes, or objects) that registrations made here cover: NOT_REGISTERED
  // otherwise, so that an int is never used as a pointer into memory nobody vouched for.
  std::vector<MemPtr> RegisteredParts(nb::sequence buffers, nb::handle sizes, bool writable) {
    if (!sizes.is_none()) CheckSameLength(nb::len(buffers), nb::len(sizes), "sizes");
    std::vector<MemPtr> parts;
    for (size_t i = 0; i < nb::len(buffers); ++i) {
      parts.push_back(BufferOf(buffers[i], SizeAt(sizes, i), writable, "buffers"));
      if (!Covered(parts.back()->addr, *parts.back()->size))
        RaiseCode(Code::kNotRegistered, "buffers[{}] ({:#x}, {} bytes) is not inside a registered buffer", i,
                  parts.back()->addr, *parts.back()->size);
    }
    return parts;
  }

  static std::vector<std::string> PathsTo(Store& store, const weft::store::ObjectDesc& desc) {
    std::vector<std::string> paths;
    uint8_t probe = 0;  // a local end for the route question; nothing is copied
    for (const auto& replica : desc.replicas) {
      auto route = store.pool().Route(reinterpret_cast<uint64_t>(&probe), replica.gva, 1);
      paths.push_back(route.ok() ? route->path : "");
    }
    return paths;
  }

  static nb::tuple DescTuple(const weft::store::ObjectDesc& desc, const std::vector<std::string>& paths) {
    nb::list replicas;
    for (size_t i = 0; i < desc.replicas.size(); ++i)
      replicas.append(nb::make_tuple(desc.replicas[i].rank, desc.replicas[i].gva, paths[i]));
    return nb::make_tuple(desc.size, replicas, desc.disk_rank);
  }

  bool Covered(uint64_t addr, uint64_t size) const {
    auto it = registered_.upper_bound(addr);
    if (it == registered_.begin()) return false;
    --it;
    return addr + size >= addr && addr + size <= it->first + *it->second->size;
  }

  static void Scatter(const std::vector<uint8_t>& value, const std::vector<MemPtr>& parts) {
    uint64_t done = 0;
    for (const MemPtr& m : parts) {
      const uint64_t n = std::min<uint64_t>(*m->size, value.size() - done);
      std::memcpy(reinterpret_cast<void*>(m->addr), value.data() + done, n);
      done += n;
    }
  }

  std::shared_ptr<Store> S() const {
    if (!store_) RaiseCode(Code::kCancelled, "the store is closed");
    return store_;
  }

  std::shared_ptr<Store> store_;
  uint32_t rank_ = 0;
  std::map<uint64_t, MemPtr> registered_;  // by address: what keeps registered objects alive
};

// Checked here too: the client's encoder refuses a count out of range as a PROTOCOL error,
// which would read as a broken wire rather than a bad argument.
PlaceOptions PlaceOf(uint32_t replicas, bool soft_pin, bool hard_pin, int32_t preferred_rank) {
  if (replicas < 1 || replicas > weft::store::kMaxReplicas)
    RaiseCode(Code::kInvalidArgument, "replicas {} is not in 1..{}", replicas, weft::store::kMaxReplicas);
  return PlaceOptions{replicas, soft_pin, hard_pin, preferred_rank};
}

}  // namespace

void BindStore(nb::module_& m) {
  nb::class_<PyStore>(m, "Store")
      .def(nb::init<const std::map<std::string, std::string>&, int>(), "overrides"_a, "mode"_a)
      .def(
          "put",
          [](PyStore& s, nb::handle key, nb::handle value, uint32_t replicas, bool soft_pin, bool hard_pin,
             int32_t preferred_rank, bool upsert) {
            s.Put(key, value, PlaceOf(replicas, soft_pin, hard_pin, preferred_rank), upsert);
          },
          "key"_a, "value"_a, "replicas"_a, "soft_pin"_a, "hard_pin"_a, "preferred_rank"_a, "upsert"_a)
      .def(
          "put_parts",
          [](PyStore& s, nb::handle key, nb::iterable parts, uint32_t replicas, bool soft_pin, bool hard_pin,
             int32_t preferred_rank, bool upsert) {
            s.PutParts(key, parts, PlaceOf(replicas, soft_pin, hard_pin, preferred_rank), upsert);
          },
          "key"_a, "parts"_a, "replicas"_a, "soft_pin"_a, "hard_pin"_a, "preferred_rank"_a, "upsert"_a)
      .def(
          "put_batch",
          [](PyStore& s, nb::iterable keys, nb::iterable values, uint32_t replicas, bool soft_pin, bool hard_pin,
             int32_t preferred_rank, bool upsert) {
            return s.PutBatch(keys, values, PlaceOf(replicas, soft_pin, hard_pin, preferred_rank), upsert);
          },
          "keys"_a, "values"_a, "replicas"_a, "soft_pin"_a, "hard_pin"_a, "preferred_rank"_a, "upsert"_a)
      .def("get", &PyStore::Get, "key"_a)
      .def("get_batch", &PyStore::GetBatch, "keys"_a)
      .def("get_into", &PyStore::GetInto, "key"_a, "buffer"_a, "size"_a.none())
      .def("batch_get_into", &PyStore::GetIntoBatch, "keys"_a, "buffers"_a, "sizes"_a.none())
      .def(
          "put_from",
          [](PyStore& s, nb::handle key, nb::handle buffer, std::optional<uint64_t> size, uint32_t replicas,
             bool soft_pin, bool hard_pin, int32_t preferred_rank, bool upsert) {
            s.PutFrom(key, buffer, size, PlaceOf(replicas, soft_pin, hard_pin, preferred_rank), upsert);
          },
          "key"_a, "buffer"_a, "size"_a.none(), "replicas"_a, "soft_pin"_a, "hard_pin"_a, "preferred_rank"_a,
          "upsert"_a)
      .def(
          "batch_put_from",
          [](PyStore& s, nb::iterable keys, nb::sequence buffers, nb::handle sizes, uint32_t replicas, bool soft_pin,
             bool hard_pin, int32_t preferred_rank, bool upsert) {
            return s.PutFromBatch(keys, buffers, sizes, PlaceOf(replicas, soft_pin, hard_pin, preferred_rank),
                                  upsert);
          },
          "keys"_a, "buffers"_a, "sizes"_a.none(), "replicas"_a, "soft_pin"_a, "hard_pin"_a, "preferred_rank"_a,
          "upsert"_a)
      .def(
          "put_from_parts",
          [](PyStore& s, nb::handle key, nb::sequence buffers, nb::handle sizes, uint32_t replicas, bool soft_pin,
             bool hard_pin, int32_t preferred_rank, bool upsert) {
            s.PutFromParts(key, buffers, sizes, PlaceOf(replicas, soft_pin, hard_pin, preferred_rank), upsert);
          },
          "key"_a, "buffers"_a, "sizes"_a.none(), "replicas"_a, "soft_pin"_a, "hard_pin"_a, "preferred_rank"_a,
          "upsert"_a)
      .def("get_into_parts", &PyStore::GetIntoParts, "key"_a, "buffers"_a, "sizes"_a.none())
      .def("register_buffer", &PyStore::RegisterBuffer, "buffer"_a, "size"_a.none())
      .def("unregister_buffer", &PyStore::UnregisterBuffer, "buffer"_a)
      .def("describe", &PyStore::Describe, "key"_a)
      .def("batch_describe", &PyStore::DescribeBatch, "keys"_a)
      .def("get_ranges", &PyStore::GetRanges, "keys"_a, "key_index"_a, "offsets"_a, "sizes"_a, "dsts"_a)
      .def("exists", &PyStore::Exists, "key"_a)
      .def("batch_exists", &PyStore::ExistsBatch, "keys"_a)
      .def("size", &PyStore::Size, "key"_a)
      .def("remove", &PyStore::Remove, "key"_a, "force"_a)
      .def("batch_remove", &PyStore::RemoveBatch, "keys"_a, "force"_a)
      .def("remove_by_regex", &PyStore::RemoveByRegex, "pattern"_a, "force"_a)
      .def("remove_all", &PyStore::RemoveAll, "force"_a)
      .def("health", &PyStore::Health)
      .def("stats", &PyStore::Stats)
      .def("close", &PyStore::Close)
      .def_prop_ro("closed", &PyStore::closed)
      .def_prop_ro("rank", &PyStore::rank);
}
