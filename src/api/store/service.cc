// ServeStore (api/store/protocol.h): a store call applied to the master, one result per key.
#include "api/store/protocol.h"

#include <map>

#include <fmt/format.h>

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

// Get's and Describe's answer: where the object is (Describe's view holds no lease: 0 ms).
KeyResult ViewResult(Result<ObjectView> view) {
  KeyResult r = StatusOnly(view.status());
  if (view.ok()) {
    r.size = view->size;
    r.replicas = std::move(view->replicas);
    r.lease_ms = static_cast<uint32_t>(view->lease.count());
    r.id = view->id;
    r.disk_rank = view->disk_rank;
  }
  return r;
}

std::vector<KeyResult> ServeKeys(Master& master, uint32_t from_rank, const StoreRequest& req,
                                 const ReplicaWriter& write) {
  std::vector<KeyResult> out;
  out.reserve(req.keys.size());
  for (size_t i = 0; i < req.keys.size(); ++i) {
    const std::string& key = req.keys[i];
    switch (req.op) {
      case StoreOp::kPutInline: {
        // The decoder bounds the values (kMaxInlineCallBytes a call), and so the memcpy this
        // holds the coordinator thread for.
        auto put = master.PutInline(from_rank, key, req.values[i], req.place, req.upsert, write);
        KeyResult r = StatusOnly(put.status());
        if (put.ok()) {
          r.replicas = std::move(put->placed.replicas);
          r.id = put->placed.id;
          r.exists = put->complete;
        }
        out.push_back(std::move(r));
        break;
      }
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
      case StoreOp::kGet:
        out.push_back(ViewResult(master.Get(key)));
        break;
      case StoreOp::kDescribe:
        out.push_back(ViewResult(master.Describe(key)));
        break;
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

std::string_view OpName(StoreOp op) {
  switch (op) {
    case StoreOp::kPutStart: return "put_start";
    case StoreOp::kPutEnd: return "put_end";
    case StoreOp::kPutRevoke: return "put_revoke";
    case StoreOp::kGet: return "get";
    case StoreOp::kExists: return "exists";
    case StoreOp::kRemove: return "remove";
    case StoreOp::kRemoveRegex: return "remove_regex";
    case StoreOp::kRemoveAll: return "remove_all";
    case StoreOp::kStats: return "stats";
    case StoreOp::kPutEndOnDisk: return "put_end_on_disk";
    case StoreOp::kPing: return "ping";
    case StoreOp::kDescribe: return "describe";
    case StoreOp::kPutInline: return "put_inline";
  }
  return "unknown";
}

// One lookup per call and per distinct error code, not per key: a batch is up to kMaxBatch keys.
void CountKeys(MetricsRegistry& m, StoreOp op, const std::vector<KeyResult>& results) {
  const std::string_view name = OpName(op);
  m.counter(fmt::format("weft_store_keys_total{{op=\"{}\"}}", name), "Keys the master served, by op")
      ->Add(results.size());
  std::map<Code, uint64_t> errors;
  for (const KeyResult& r : results) {
    if (!r.status.ok()) ++errors[r.status.code()];
  }
  for (const auto& [code, n] : errors) {
    m.counter(fmt::format("weft_store_key_errors_total{{op=\"{}\",code=\"{}\"}}", name, CodeName(code)),
              "Keys the master answered with an error, by op and code")
        ->Add(n);
  }
}

}  // namespace

Result<std::vector<uint8_t>> ServeStore(Master& master, uint32_t from_rank, std::span<const uint8_t> request,
                                        MetricsRegistry* metrics, const ReplicaWriter& write) {
  WEFT_ASSIGN_OR_RETURN(StoreRequest req, DecodeStoreRequest(request));
  if (metrics != nullptr && (req.op == StoreOp::kRemoveRegex || req.op == StoreOp::kRemoveAll || req.op == StoreOp::kStats ||
                             req.op == StoreOp::kPing)) {
    metrics->counter(fmt::format("weft_store_calls_total{{op=\"{}\"}}", OpName(req.op)),
                     "Whole-store calls the master served, by op")->Add();
  }
  switch (req.op) {
    case StoreOp::kRemoveRegex: {
      WEFT_ASSIGN_OR_RETURN(uint64_t n, master.RemoveByRegex(req.pattern, req.force));
      return EncodeCount(n);
    }
    case StoreOp::kRemoveAll:
      return EncodeCount(master.RemoveAll(req.force));
    case StoreOp::kStats:
      return EncodeStats(master.Stats());
    case StoreOp::kPing:  // Health: the master answers, and walks nothing (Stats walks every object)
      return EncodeCount(0);
    default: {
      std::vector<KeyResult> results = ServeKeys(master, from_rank, req, write);
      if (metrics != nullptr) CountKeys(*metrics, req.op, results);
      return EncodeKeyResults(results);
    }
  }
}

}  // namespace weft::store
