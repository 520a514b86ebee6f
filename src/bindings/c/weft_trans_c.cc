// The C API of the transfer engine (include/weft/weft.h, "transfer engine") over
// trans::TransferEngine. Same conventions as the pool's: negative codes, weft_last_error(),
// no exception crosses into C.
#include <algorithm>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include <weft/config.h>
#include <weft/transfer_engine.h>

#include "bindings/c/c_guard.h"
#include "weft/weft.h"

using weft::Code;
using weft::Status;
using namespace weft::c_api;
namespace trans = weft::trans;

struct weft_trans {
  std::unique_ptr<trans::TransferEngine> engine;
  std::mutex mu;  // pending
  std::deque<trans::Notification> pending;
};

namespace {

static_assert(WEFT_TRANS_READ == static_cast<int>(trans::Opcode::kRead));
static_assert(WEFT_TRANS_WRITE == static_cast<int>(trans::Opcode::kWrite));
static_assert(WEFT_TRANS_PENDING == static_cast<int>(trans::TransferState::kPending));
static_assert(WEFT_TRANS_COMPLETED == static_cast<int>(trans::TransferState::kCompleted));
static_assert(WEFT_TRANS_FAILED == static_cast<int>(trans::TransferState::kFailed));
static_assert(WEFT_TRANS_TIMEOUT == static_cast<int>(trans::TransferState::kTimeout));

int CheckEngine(const char* function, const weft_trans* engine) noexcept {
  if (engine == nullptr) return NullArgument(function, "engine");
  if (!engine->engine) return Fail(Code::kInternal, "the engine handle holds no engine");
  return WEFT_OK;
}

#define WEFT_C_REQUIRE_ENGINE(engine)                                       \
  do {                                                                      \
    if (int rc_ = CheckEngine(__func__, engine); rc_ != WEFT_OK) return rc_; \
  } while (0)

Status ToRequests(const weft_trans_request* in, size_t n, std::vector<trans::TransferRequest>& out) {
  out.resize(n);
  for (size_t i = 0; i < n; ++i) {
    if (in[i].opcode != WEFT_TRANS_READ && in[i].opcode != WEFT_TRANS_WRITE)
      return weft::Error(Code::kInvalidArgument, "request {}: opcode {} is not WEFT_TRANS_READ or WEFT_TRANS_WRITE",
                         i, in[i].opcode);
    out[i] = {static_cast<trans::Opcode>(in[i].opcode), in[i].local, in[i].segment, in[i].remote_addr,
              in[i].length};
  }
  return weft::OkStatus();
}

// WEFT_OK, or the code of the first failed request (its index in weft_last_error()).
int FirstFailure(const std::vector<Status>& results, int* codes, size_t n) {
  int rc = WEFT_OK;
  for (size_t i = 0; i < results.size(); ++i) {
    if (codes && i < n) codes[i] = -static_cast<int>(results[i].code());
    if (rc == WEFT_OK && !results[i].ok()) rc = Fail(results[i].Annotate(fmt::format("request {}", i)));
  }
  return rc;
}

}  // namespace

extern "C" {

int weft_trans_new(const char* local_name, const char* metadata, const char* protocol, const weft_config* config,
                   weft_trans** out) {
  WEFT_C_REQUIRE(local_name);
  WEFT_C_REQUIRE(metadata);
  WEFT_C_REQUIRE(protocol);
  WEFT_C_REQUIRE(out);
  return Guard(__func__, [&]() -> int {
    auto loaded = weft::LoadConfig("", config ? config->overrides : std::map<std::string, std::string>{});
    if (!loaded.ok()) return Fail(loaded.status());
    trans::TransferEngineOptions o;
    o.local_name = local_name;
    o.metadata = metadata;
    o.protocol = protocol;
    o.auth.cluster_secret = loaded->cluster_secret;
    o.lanes = static_cast<int>(loaded->tcp_lanes);
    o.worker_threads = static_cast<int>(std::max<uint32_t>(1, loaded->copy_threads));
    o.transfer_timeout = std::chrono::milliseconds(loaded->deadline_ms);
    auto engine = trans::TransferEngine::Create(o);
    if (!engine.ok()) return Fail(engine.status());
    auto handle = std::make_unique<weft_trans>();
    handle->engine = std::move(*engine);
    *out = handle.release();
    return WEFT_OK;
  });
}

void weft_trans_free(weft_trans* engine) {
  if (engine == nullptr) return;
  Guard(__func__, [&]() -> int {
    engine->engine.reset();
    return WEFT_OK;
  });
  delete engine;
}

int weft_trans_name(const weft_trans* engine, char* buf, size_t buf_size) {
  WEFT_C_REQUIRE_ENGINE(engine);
  if (buf == nullptr && buf_size != 0) return NullArgument(__func__, "buf");
  return Guard(__func__, [&]() -> int {
    const std::string& name = engine->engine->name();
    if (buf_size > 0) std::snprintf(buf, buf_size, "%s", name.c_str());
    return static_cast<int>(name.size());
  });
}

int weft_trans_rpc_port(const weft_trans* engine) {
  WEFT_C_REQUIRE_ENGINE(engine);
  return Guard(__func__, [&]() -> int { return engine->engine->rpc_port(); });
}

int weft_trans_register(weft_trans* engine, void* addr, uint64_t length, const char* location,
                        int remote_accessible) {
  WEFT_C_REQUIRE_ENGINE(engine);
  return Guard(__func__, [&]() -> int {
    return Report(engine->engine->RegisterMemory(addr, length, location ? location : "*", remote_accessible != 0));
  });
}

int weft_trans_unregister(weft_trans* engine, void* addr) {
  WEFT_C_REQUIRE_ENGINE(engine);
  return Guard(__func__, [&]() -> int { return Report(engine->engine->UnregisterMemory(addr)); });
}

int weft_trans_open_segment(weft_trans* engine, const char* name, uint64_t* out_segment) {
  WEFT_C_REQUIRE_ENGINE(engine);
  WEFT_C_REQUIRE(name);
  WEFT_C_REQUIRE(out_segment);
  return Guard(__func__, [&]() -> int {
    auto h = engine->engine->OpenSegment(name);
    if (!h.ok()) return Fail(h.status());
    *out_segment = *h;
    return WEFT_OK;
  });
}

int weft_trans_close_segment(weft_trans* engine, uint64_t segment) {
  WEFT_C_REQUIRE_ENGINE(engine);
  return Guard(__func__, [&]() -> int { return Report(engine->engine->CloseSegment(segment)); });
}

int weft_trans_submit(weft_trans* engine, const weft_trans_request* requests, size_t n, const char* notify_name,
                      const char* notify_msg, uint64_t* out_batch) {
  WEFT_C_REQUIRE_ENGINE(engine);
  WEFT_C_REQUIRE(requests);
  WEFT_C_REQUIRE(out_batch);
  return Guard(__func__, [&]() -> int {
    std::vector<trans::TransferRequest> reqs;
    if (int rc = Report(ToRequests(requests, n, reqs)); rc != WEFT_OK) return rc;
    std::optional<trans::Notification> note;
    if (notify_name || notify_msg) note = trans::Notification{notify_name ? notify_name : "", notify_msg ? notify_msg : ""};
    auto id = engine->engine->Submit(reqs, std::move(note));
    if (!id.ok()) return Fail(id.status());
    *out_batch = *id;
    return WEFT_OK;
  });
}

int weft_trans_status(weft_trans* engine, uint64_t batch, int* states, int* results, size_t n) {
  WEFT_C_REQUIRE_ENGINE(engine);
  return Guard(__func__, [&]() -> int {
    auto st = engine->engine->Poll(batch);
    if (!st.ok()) return Fail(st.status());
    for (size_t i = 0; states && i < n && i < st->states.size(); ++i) states[i] = static_cast<int>(st->states[i]);
    if (!st->done) {
      for (size_t i = 0; results && i < n && i < st->results.size(); ++i)
        results[i] = -static_cast<int>(st->results[i].code());
      return 1;
    }
    int rc = FirstFailure(st->results, results, n);  // a request's failure first: it explains a withheld notification
    if (rc == WEFT_OK && !st->notification.ok()) return Fail(st->notification);
    return rc;
  });
}

int weft_trans_wait(weft_trans* engine, uint64_t batch, int64_t timeout_ms, int* results, size_t n) {
  WEFT_C_REQUIRE_ENGINE(engine);
  return Guard(__func__, [&]() -> int {
    auto st = engine->engine->Wait(batch, DeadlineOf(timeout_ms));
    if (!st.ok()) return Fail(st.status());
    int rc = FirstFailure(st->results, results, n);
    if (rc == WEFT_OK && !st->notification.ok()) return Fail(st->notification);
    return rc;
  });
}

int weft_trans_free_batch(weft_trans* engine, uint64_t batch) {
  WEFT_C_REQUIRE_ENGINE(engine);
  return Guard(__func__, [&]() -> int { return Report(engine->engine->FreeBatch(batch)); });
}

int weft_trans_transfer(weft_trans* engine, const weft_trans_request* requests, size_t n, int* results) {
  WEFT_C_REQUIRE_ENGINE(engine);
  WEFT_C_REQUIRE(requests);
  return Guard(__func__, [&]() -> int {
    std::vector<trans::TransferRequest> reqs;
    if (int rc = Report(ToRequests(requests, n, reqs)); rc != WEFT_OK) return rc;
    return FirstFailure(engine->engine->Transfer(reqs), results, n);
  });
}

int weft_trans_notify(weft_trans* engine, uint64_t segment, const char* name, const char* msg) {
  WEFT_C_REQUIRE_ENGINE(engine);
  WEFT_C_REQUIRE(name);
  WEFT_C_REQUIRE(msg);
  return Guard(__func__, [&]() -> int { return Report(engine->engine->Notify(segment, {name, msg})); });
}

int weft_trans_take_notification(weft_trans* engine, char* name, size_t name_size, char* msg, size_t msg_size,
                                 size_t* msg_len) {
  WEFT_C_REQUIRE_ENGINE(engine);
  if (name == nullptr && name_size != 0) return NullArgument(__func__, "name");
  if (msg == nullptr && msg_size != 0) return NullArgument(__func__, "msg");
  return Guard(__func__, [&]() -> int {
    std::lock_guard g(engine->mu);
    for (auto& n : engine->engine->TakeNotifications()) engine->pending.push_back(std::move(n));
    if (engine->pending.empty()) return 0;
    trans::Notification n = std::move(engine->pending.front());
    engine->pending.pop_front();
    if (name_size > 0) std::snprintf(name, name_size, "%s", n.name.c_str());
    if (msg_size > 0) {
      size_t k = std::min(msg_size - 1, n.message.size());
      std::memcpy(msg, n.message.data(), k);
      msg[k] = '\0';
    }
    if (msg_len) *msg_len = n.message.size();
    return 1;
  });
}

int weft_trans_probe(weft_trans* engine, const char* name) {
  WEFT_C_REQUIRE_ENGINE(engine);
  WEFT_C_REQUIRE(name);
  return Guard(__func__, [&]() -> int { return Report(engine->engine->Probe(name)); });
}

}  // extern "C"
