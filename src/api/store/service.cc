// ServeStore (api/store/protocol.h): a store call applied to the master, one result per key.
#include "api/store/protocol.h"

namespace weft::store {
namespace {

// Per-key error text is cut to this, so that a reply of kMaxBatch results (with their replica
// lists) stays well inside one control frame (16 MiB).
constexpr size_t kMaxKeyMessage = 1024;

KeyResult StatusOnly(Status s) {
  KeyResult r;
  r.status = s.message().size() > kMaxKeyMessage ? Status(s.code(), s.message().substr(0, kMaxKeyMessage)) : std::move(s);
  return r;
}

std::vector<KeyResult> ServeKeys(Master& master, uint32_t from_rank, const StoreRequest& req) {
  std::vector<KeyResult> out;
  out.reserve(req.keys.size());
  for (size_t i = 0; i < req.keys.size(); ++i) {
    const std::string& key = req.keys[i];
    switch (req.op) {
      case StoreOp::kPutStart: {
        auto placed = master.PutStart(from_rank, key, req.sizes[i], req.place, req.upsert, req.promote_id);
        KeyResult r = StatusOnly(placed.status());
        if (placed.ok()) {
          r.replicas = std::move(placed->replicas);
          r.id = placed->id;
        }
        out.push_back(std::move(r));
        break;
      }
      case StoreOp::kPutEnd:
      case StoreOp::kPutEndOnDisk:
        out.push_back(StatusOnly(master.PutEnd(from_rank, key, req.op == StoreOp::kPutEndOnDisk)));
        break;
      case StoreOp::kPutRevoke:
        out.push_back(StatusOnly(master.PutRevoke(from_rank, key)));
        break;
      case StoreOp::kGet: {
        auto view = master.Get(key);
        KeyResult r = StatusOnly(view.status());
        if (view.ok()) {
          r.size = view->size;
          r.replicas = std::move(view->replicas);
          r.lease_ms = static_cast<uint32_t>(view->lease.count());
          r.id = view->id;
          r.disk_rank = view->disk_rank;
        }
        out.push_back(std::move(r));
        break;
      }
      case StoreOp::kExists: {
        KeyResult r;
        r.exists = master.Exists(key);
        out.push_back(std::move(r));
        break;
      }
      case StoreOp::kRemove:
        out.push_back(StatusOnly(master.Remove(key, req.force)));
        break;
      default:
        out.push_back(StatusOnly(Error(Code::kInternal, "store op {} is not a per-key op", static_cast<int>(req.op))));
    }
  }
  return out;
}

}  // namespace

Result<std::vector<uint8_t>> ServeStore(Master& master, uint32_t from_rank, std::span<const uint8_t> request) {
  WEFT_ASSIGN_OR_RETURN(StoreRequest req, DecodeStoreRequest(request));
  switch (req.op) {
    case StoreOp::kRemoveRegex: {
      WEFT_ASSIGN_OR_RETURN(uint64_t n, master.RemoveByRegex(req.pattern, req.force));
      return EncodeCount(n);
    }
    case StoreOp::kRemoveAll:
      return EncodeCount(master.RemoveAll(req.force));
    case StoreOp::kStats:
      return EncodeStats(master.Stats());
    default:
      return EncodeKeyResults(ServeKeys(master, from_rank, req));
  }
}

}  // namespace weft::store
