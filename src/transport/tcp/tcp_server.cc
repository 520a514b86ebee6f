#include "transport/tcp/tcp_server.h"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <utility>

#include "base/log.h"
#include "net/event_loop.h"
#include "wire/data.h"

namespace weft::transport::tcp {

namespace {

constexpr size_t kStageBytes = 64u << 10;      // per-connection input staging buffer
constexpr size_t kMaxOutItems = 1024;          // queued responses before we stop reading requests
constexpr uint64_t kMaxOutBytes = 256ull << 20;  // likewise, in bytes (READ payloads are not copies)
constexpr uint64_t kTurnBudget = 16ull << 20;  // bytes per connection per readiness event (fairness)
constexpr size_t kMaxIov = 64;
constexpr int kSweepMs = 250;

}  // namespace

struct TcpServer::Shared {
  TcpServerOptions options;
  SegmentAccess* access = nullptr;
  std::atomic<size_t> open{0};
  std::atomic<uint64_t> accepted{0}, auth_failures{0}, protocol_errors{0}, reads{0}, writes{0}, refused{0},
      bytes_read{0}, bytes_written{0}, notifies{0}, device_staged{0}, device_unpooled{0};
  std::unique_ptr<BouncePool> bounce;  // device requests' staging (only with a device_copy)
  // Fencing (wire/data.h, FENCE): per client, its newest generation and how many of its
  // connections hold a session (the entry goes with the last). A WRITE's bytes enter memory only
  // under the client's lock, shared, after checking that their connection's generation is still
  // the newest; raising it takes that lock exclusively, so no older write lands after it. Only a
  // client's own connections share its lock.
  struct ClientSessions {
    explicit ClientSessions(uint64_t id) : id(id) {}
    const uint64_t id;  // the client's (its key in `sessions`)
    std::shared_mutex mu;
    uint64_t newest = 0;  // under mu
    uint32_t conns = 0;   // under Shared::sessions_mu
  };
  std::mutex sessions_mu;  // the map and the conns counts; never held while waiting for a client's mu
  std::unordered_map<uint64_t, std::shared_ptr<ClientSessions>> sessions;
  std::atomic<uint64_t> fenced{0};  // writes and notifications refused because their session was superseded
};

namespace {

struct Out {
  std::vector<uint8_t> head;  // response header + error text, or handshake bytes
  const uint8_t* payload = nullptr;
  uint64_t payload_len = 0;
  uint64_t done = 0;  // bytes of head + payload already sent
  bool pinned = false;
  uint32_t segment = 0;
  std::vector<uint8_t> owned;  // a device segment's bytes, copied out for a READ (payload points here)
  uint8_t* bounce = nullptr;   // or the pooled bounce buffer they were copied into
  uint64_t total() const { return head.size() + payload_len; }
};

enum class Phase { kHello, kProof, kServing };

struct Conn {
  net::UniqueFd fd;
  std::string peer;
  Phase phase = Phase::kHello;
  std::unique_ptr<net::ServerHandshake> hs;
  std::unique_ptr<uint8_t[]> stage{new uint8_t[kStageBytes]};
  size_t in_begin = 0, in_end = 0;
  // The WRITE whose payload is being received.
  bool in_payload = false;
  wire::DataRequest req;
  uint8_t* target = nullptr;  // null while a refused payload is being drained
  std::vector<uint8_t> staging;  // a NOTIFY's payload (or a device WRITE's pieces, with no bounce buffer)
  // A WRITE to device memory arrives in pieces of at most chunk_cap bytes in `target` (a pooled
  // bounce buffer, or `staging`), each copied to device_target + chunk_base once full.
  uint8_t* device_target = nullptr;
  uint8_t* bounce = nullptr;  // the pooled buffer held for that WRITE
  uint64_t chunk_base = 0;
  uint64_t chunk_cap = 0;
  bool flush_now = false;  // a device READ was queued: start sending it before copying the next
  uint64_t left = 0;
  bool pinned = false;
  Status refusal;
  // Responses waiting to be sent, in request order.
  std::deque<Out> out;
  uint64_t out_bytes = 0;
  bool close_after_flush = false;
  Clock::time_point last_progress = Clock::now();
  uint32_t events = 0;
  // The session (FENCE) this connection opened: its client's and its generation; null without one.
  std::shared_ptr<TcpServer::Shared::ClientSessions> session;
  uint64_t generation = 0;
  size_t staged() const { return in_end - in_begin; }
  bool busy() const { return phase != Phase::kServing || in_payload || !out.empty() || staged() > 0; }
};

}  // namespace

struct TcpServer::Worker {
  std::shared_ptr<Shared> shared;
  int index = 0;
  std::unique_ptr<net::EventLoop> loop;
  net::UniqueFd listen;      // worker 0 only
  std::vector<Worker*> all;  // for dealing connections out (worker 0)
  size_t next_worker = 0;
  // Connections dealt to this worker by worker 0, taken on this worker's loop thread.
  std::mutex incoming_mu;
  std::vector<std::unique_ptr<Conn>> incoming;
  std::unordered_map<Conn*, std::unique_ptr<Conn>> conns;
  Clock::time_point next_sweep = Clock::now();

  const TcpServerOptions& opts() const { return shared->options; }

  // Called from worker 0's thread: the connection is watched once this worker's loop runs the
  // posted TakeIncoming.
  void Hand(std::unique_ptr<Conn> c) {
    {
      std::lock_guard lock(incoming_mu);
      incoming.push_back(std::move(c));
    }
    loop->Post([this] { TakeIncoming(); });
  }

  Status WatchListener() {
    return loop->Add(listen.get(), EPOLLIN, [this](int, uint32_t) { AcceptAll(); });
  }

  // The stall sweep runs every kSweepMs whatever the traffic.
  std::chrono::milliseconds Tick() {
    if (Clock::now() >= next_sweep) {
      Sweep();
      next_sweep = Clock::now() + Millis(kSweepMs);
    }
    return Millis(kSweepMs);
  }

  void Run() {
    loop->SetTick([this] { return Tick(); });
    Status ended = loop->Run();
    if (!ended.ok()) WEFT_LOG_ERROR("tcp server: {}", ended.ToString());
    // Stopping: close everything (clients see the connection reset: PEER_DOWN).
    TakeIncoming();
    std::vector<Conn*> all_conns;
    for (auto& [p, c] : conns) all_conns.push_back(p);
    for (Conn* c : all_conns) Close(c);
  }

  void TakeIncoming() {
    std::vector<std::unique_ptr<Conn>> mine;
    {
      std::lock_guard lock(incoming_mu);
      mine.swap(incoming);
    }
    for (auto& c : mine) {
      Conn* p = c.get();
      c->hs = std::make_unique<net::ServerHandshake>(&shared->options.auth);
      c->last_progress = Clock::now();
      c->events = EPOLLIN | EPOLLRDHUP;
      Status watched = loop->Add(c->fd.get(), c->events, [this, p](int, uint32_t events) { OnEvent(p, events); });
      if (!watched.ok()) {
        WEFT_LOG_WARN("tcp server: cannot watch the connection from {}: {}", c->peer, watched.ToString());
        shared->open.fetch_sub(1);
        continue;
      }
      conns.emplace(p, std::move(c));
    }
  }

  void AcceptAll() {
    for (;;) {
      std::string peer;
      auto fd = net::AcceptTcp(listen.get(), opts().tcp, &peer);
      if (!fd.ok()) {
        WEFT_LOG_WARN("tcp server on port {}: accept: {}", shared->options.port, fd.status().ToString());
        return;
      }
      if (!fd->valid()) return;
      if (shared->open.load() >= opts().max_connections) {
        WEFT_LOG_WARN("tcp server: refusing the connection from {}: {} connections are open (max_connections)", peer,
                      shared->open.load());
        continue;  // closed by UniqueFd
      }
      shared->accepted.fetch_add(1);
      shared->open.fetch_add(1);
      auto c = std::make_unique<Conn>();
      c->fd = std::move(*fd);
      c->peer = peer;
      Worker* w = all[next_worker++ % all.size()];
      if (w == this) {
        {
          std::lock_guard lock(incoming_mu);
          incoming.push_back(std::move(c));
        }
        TakeIncoming();  // on our own thread: no need to post
      } else {
        w->Hand(std::move(c));
      }
    }
  }

  void Close(Conn* c) {
    if (c->pinned) {
      shared->access->Release(c->req.segment_id);
      c->pinned = false;
    }
    if (c->bounce) shared->bounce->Release(c->bounce);
    c->bounce = nullptr;
    for (Out& o : c->out) {
      if (o.pinned) shared->access->Release(o.segment);
      if (o.bounce) shared->bounce->Release(o.bounce);
    }
    c->out.clear();
    EndSession(c);
    [[maybe_unused]] Status unwatched = loop->Remove(c->fd.get());  // NOT_FOUND only if never watched
    shared->open.fetch_sub(1);
    conns.erase(c);  // closes the socket
  }

  void Drop(Conn* c, const Status& why, bool protocol_error = true) {
    WEFT_LOG_WARN("tcp server: closing the connection from {}: {}", c->peer, why.ToString());
    if (protocol_error) shared->protocol_errors.fetch_add(1);
    Close(c);
  }

  void Sweep() {
    auto now = Clock::now();
    std::vector<std::pair<Conn*, Status>> stale;
    for (auto& [p, c] : conns) {
      if (!c->busy()) continue;
      int limit = c->phase == Phase::kServing ? opts().stall_timeout_ms : opts().handshake_timeout_ms;
      if (now - c->last_progress > Millis(limit)) {
        stale.emplace_back(p, c->phase == Phase::kServing
                                  ? Error(Code::kTimeout, "no progress for {} ms with a request or response pending",
                                          limit)
                                  : Error(Code::kTimeout, "the handshake did not finish within {} ms", limit));
      }
    }
    for (auto& [p, s] : stale) Drop(p, s);
  }

  void SetEvents(Conn* c) {
    // Not reading while the output is backed up: the client must take its responses first (a
    // client that never does is closed by the stall sweep).
    uint32_t want = 0;
    bool out_full = c->out.size() >= kMaxOutItems || c->out_bytes >= kMaxOutBytes;
    if (!out_full && !c->close_after_flush) want |= EPOLLIN | EPOLLRDHUP;
    if (!c->out.empty()) want |= EPOLLOUT;
    if (want == c->events) return;
    if (loop->Modify(c->fd.get(), want).ok()) c->events = want;
  }

  void OnEvent(Conn* c, uint32_t events) {
    // Errors and hang-ups surface through the recv/send calls below.
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && (c->events & EPOLLIN || events & (EPOLLHUP | EPOLLERR))) {
      if (!OnReadable(c)) return;  // closed
    }
    if (!Flush(c)) return;
    SetEvents(c);
  }

  void Queue(Conn* c, Out o) {
    c->out_bytes += o.total();
    c->out.push_back(std::move(o));
  }

  void QueueResponse(Conn* c, const wire::DataRequest& r, const Status& s, const uint8_t* payload, bool pinned,
                     std::vector<uint8_t> owned = {}, uint8_t* bounce = nullptr) {
    wire::DataResponse resp;
    resp.op = r.op;
    resp.request_id = r.request_id;
    resp.status = s.code();
    std::string_view msg;
    if (!s.ok()) {
      msg = s.message();
      if (msg.size() > wire::kMaxDataMessage) msg = msg.substr(0, wire::kMaxDataMessage);
      resp.message_length = static_cast<uint32_t>(msg.size());
      shared->refused.fetch_add(1);
    } else if (r.op == wire::DataOp::kRead) {
      resp.length = r.length;
    }
    auto hdr = wire::EncodeDataResponse(resp);
    Out o;
    o.head.reserve(hdr.size() + msg.size());
    o.head.insert(o.head.end(), hdr.begin(), hdr.end());
    o.head.insert(o.head.end(), msg.begin(), msg.end());
    if (s.ok() && r.op == wire::DataOp::kRead) {
      o.payload = payload;
      o.payload_len = r.length;
    }
    o.pinned = pinned;
    o.segment = r.segment_id;
    o.owned = std::move(owned);  // the payload pointer stays valid: moving a vector keeps its buffer
    o.bounce = bounce;
    Queue(c, std::move(o));
  }

  // Receives into [dst, dst+n): staged bytes first, then the socket. Returns bytes moved (0 on
  // EAGAIN), or an error (PEER_DOWN for end of stream).
  Result<size_t> Take(Conn* c, uint8_t* dst, uint64_t n) {
    if (c->staged() > 0) {
      size_t k = static_cast<size_t>(std::min<uint64_t>(n, c->staged()));
      if (dst) std::memcpy(dst, c->stage.get() + c->in_begin, k);
      c->in_begin += k;
      return k;
    }
    if (!dst) {  // draining: the stage is the scratch space
      iovec iov{c->stage.get(), static_cast<size_t>(std::min<uint64_t>(n, kStageBytes))};
      return net::RecvvSome(c->fd.get(), &iov, 1, c->peer);
    }
    iovec iov{dst, static_cast<size_t>(n)};
    return net::RecvvSome(c->fd.get(), &iov, 1, c->peer);
  }

  // Fills the stage so it holds at least `need` bytes if the socket has them. false on EAGAIN.
  Result<bool> Fill(Conn* c, size_t need) {
    if (c->staged() >= need) return true;
    if (c->in_begin > 0) {
      std::memmove(c->stage.get(), c->stage.get() + c->in_begin, c->staged());
      c->in_end -= c->in_begin;
      c->in_begin = 0;
    }
    while (c->in_end < need) {
      iovec iov{c->stage.get() + c->in_end, kStageBytes - c->in_end};
      auto n = net::RecvvSome(c->fd.get(), &iov, 1, c->peer);
      if (!n.ok()) return n.status();
      if (*n == 0) return false;
      c->in_end += *n;
      c->last_progress = Clock::now();
    }
    return true;
  }

  // Reads and serves what is there. false once the connection is closed.
  bool OnReadable(Conn* c) {
    uint64_t budget = kTurnBudget;
    while (budget > 0 && !c->close_after_flush) {
      if (c->out.size() >= kMaxOutItems || c->out_bytes >= kMaxOutBytes) return true;  // let the output drain
      if (c->in_payload && c->device_target) {
        if (!ReceiveDevicePiece(c, budget)) return false;
        continue;
      }
      if (c->in_payload) {
        uint64_t done_before = c->req.length - c->left;
        Result<size_t> n = [&] {
          auto fence = HoldSession(c);  // held while the bytes go into memory, and no longer
          return Take(c, c->target ? c->target + done_before : nullptr, c->left);
        }();
        if (!n.ok()) return EndOfStream(c, n.status());
        if (*n == 0) return true;
        c->left -= *n;
        budget -= std::min<uint64_t>(budget, *n);
        c->last_progress = Clock::now();
        if (c->left == 0) FinishWrite(c);
        continue;
      }
      if (c->phase == Phase::kHello || c->phase == Phase::kProof) {
        size_t need = c->phase == Phase::kHello ? net::kAuthHelloSize : net::kAuthProofSize;
        auto got = Fill(c, need);
        if (!got.ok()) return EndOfStream(c, got.status());
        if (!*got) return true;
        std::span<const uint8_t> bytes(c->stage.get() + c->in_begin, need);
        c->in_begin += need;
        if (c->phase == Phase::kHello) {
          auto sh = c->hs->OnHello(bytes);
          if (!sh.ok()) {
            shared->auth_failures.fetch_add(1);
            Drop(c, sh.status());
            return false;
          }
          Out o;
          o.head.assign(sh->begin(), sh->end());
          Queue(c, std::move(o));
          c->phase = Phase::kProof;
        } else {
          Status verdict = c->hs->OnProof(bytes);
          auto result = net::ServerHandshake::ResultBytes(verdict.ok() ? Code::kOk : Code::kUnauthenticated);
          Out o;
          o.head.assign(result.begin(), result.end());
          Queue(c, std::move(o));
          if (!verdict.ok()) {
            shared->auth_failures.fetch_add(1);
            WEFT_LOG_WARN("tcp server: closing the connection from {}: {}", c->peer, verdict.ToString());
            c->close_after_flush = true;  // the result goes out first so the client knows why
            return true;
          }
          c->hs.reset();
          c->phase = Phase::kServing;
        }
        continue;
      }
      auto got = Fill(c, wire::kDataRequestSize);
      if (!got.ok()) return EndOfStream(c, got.status());
      if (!*got) return true;
      auto req = wire::DecodeDataRequest({c->stage.get() + c->in_begin, wire::kDataRequestSize});
      if (!req.ok()) {
        Drop(c, req.status());
        return false;
      }
      c->in_begin += wire::kDataRequestSize;
      budget -= std::min<uint64_t>(budget, wire::kDataRequestSize);
      Serve(c, *req);
      if (c->flush_now) {
        // The kernel sends this READ's bytes while the next request's device copy runs.
        c->flush_now = false;
        if (!Flush(c)) return false;
      }
    }
    return true;
  }

  // Receives the next part of a device WRITE's payload into its piece buffer; a full piece (or
  // the last) is copied to the device. A failed copy becomes the WRITE's answer, the rest of the
  // payload is drained. false once the connection is closed (it stays open otherwise; true on
  // EAGAIN too: the caller's loop then finds nothing more and returns).
  bool ReceiveDevicePiece(Conn* c, uint64_t& budget) {
    const uint64_t done = c->req.length - c->left;
    const uint64_t in_piece = done - c->chunk_base;
    const uint64_t want = std::min(c->left, c->chunk_cap - in_piece);
    auto n = Take(c, c->refusal.ok() ? c->target + in_piece : nullptr, want);
    if (!n.ok()) return EndOfStream(c, n.status());
    if (*n == 0) {
      budget = 0;  // EAGAIN: end this turn
      return true;
    }
    c->left -= *n;
    budget -= std::min<uint64_t>(budget, *n);
    c->last_progress = Clock::now();
    const uint64_t filled = in_piece + *n;
    if (filled == c->chunk_cap || c->left == 0) {
      auto fence = HoldSession(c);  // released before FinishWrite, which may close the connection
      if (c->refusal.ok()) c->refusal = opts().device_copy(c->device_target + c->chunk_base, c->target, filled);
      fence = {};
      c->chunk_base += filled;
    }
    if (c->left == 0) FinishWrite(c);
    return true;
  }

  // The socket reported an error or end of stream while reading.
  bool EndOfStream(Conn* c, const Status& s) {
    bool mid_frame = c->in_payload || c->staged() > 0 || c->phase != Phase::kServing;
    if (mid_frame) {
      Drop(c, s.Annotate(c->phase != Phase::kServing ? "during the handshake" : "in the middle of a frame"));
    } else {
      WEFT_LOG_DEBUG("tcp server: connection from {} closed: {}", c->peer, s.ToString());
      Close(c);
    }
    return false;
  }

  // FENCE: the connection's session starts at the client's generation, which becomes the newest
  // known (fencing the client's older connections off) unless a newer one is known already.
  Status OpenSession(Conn* c, const wire::DataRequest& r) {
    if (c->session) return Error(Code::kInvalidArgument, "this connection has a session already");
    std::shared_ptr<Shared::ClientSessions> client;
    {
      std::lock_guard lock(shared->sessions_mu);
      auto& slot = shared->sessions[r.access_key];
      if (!slot) slot = std::make_shared<Shared::ClientSessions>(r.access_key);
      client = slot;
      client->conns++;
    }
    uint64_t newest = 0;
    {
      std::unique_lock lock(client->mu);
      if (r.offset >= client->newest) client->newest = r.offset;
      newest = client->newest;
    }
    if (r.offset < newest) {
      Release(client);
      return Error(Code::kCancelled, "generation {} of this client is older than its newest ({}): open the session "
                   "again with the newest", r.offset, newest);
    }
    c->session = std::move(client);
    c->generation = r.offset;
    return OkStatus();
  }

  // One connection fewer holds a session of the client; the entry goes with the last.
  void Release(const std::shared_ptr<Shared::ClientSessions>& client) {
    std::lock_guard lock(shared->sessions_mu);
    if (--client->conns > 0) return;
    if (auto it = shared->sessions.find(client->id); it != shared->sessions.end() && it->second == client)
      shared->sessions.erase(it);
  }

  void EndSession(Conn* c) {
    if (c->session) Release(std::exchange(c->session, nullptr));
  }

  // The client's mu held: a newer connection of the same client opened a session.
  static bool Superseded(const Conn* c) { return c->session && c->session->newest != c->generation; }

  Status FencedOff(const Conn* c) {
    shared->fenced.fetch_add(1);
    return Error(Code::kCancelled, "refused: this connection's session (generation {}) was superseded by a newer one "
                 "of the same client after a failure; the client retries on a new connection", c->generation);
  }

  // For a WRITE whose bytes are about to enter memory: a shared hold on the client's sessions,
  // under which a superseded connection's WRITE turns into a drain (its bytes discarded, the
  // answer CANCELLED).
  std::shared_lock<std::shared_mutex> HoldSession(Conn* c) {
    if (!c->session || !c->refusal.ok()) return {};
    std::shared_lock lock(c->session->mu);
    if (Superseded(c)) {
      c->refusal = FencedOff(c);
      if (!c->device_target) c->target = nullptr;  // host: drained from now on (device: pieces no longer copied)
    }
    return lock;
  }

  void Serve(Conn* c, const wire::DataRequest& r) {
    bool write = r.op == wire::DataOp::kWrite;
    if (r.op == wire::DataOp::kNotify) return ServeNotify(c, r);
    if (r.op == wire::DataOp::kFence) return QueueResponse(c, r, OpenSession(c, r), nullptr, false);
    auto where = shared->access->Find(r.segment_id, r.access_key, r.offset, r.length, write);
    if (!write) {
      shared->reads.fetch_add(1);
      if (!where.ok()) {
        QueueResponse(c, r, where.status(), nullptr, false);
        return;
      }
      shared->bytes_read.fetch_add(r.length);
      if (shared->access->IsDevice(r.segment_id)) return ServeDeviceRead(c, r, *where);
      QueueResponse(c, r, OkStatus(), *where, true);
      return;
    }
    shared->writes.fetch_add(1);
    c->req = r;
    c->left = r.length;
    c->in_payload = true;
    if (where.ok() && shared->access->IsDevice(r.segment_id) && !opts().device_copy) {
      shared->access->Release(r.segment_id);
      c->target = nullptr;  // drained, then refused
      c->pinned = false;
      c->refusal = Error(Code::kNotSupported, "segment {} is device memory and this server has no device copy",
                         r.segment_id);
    } else if (where.ok() && shared->access->IsDevice(r.segment_id)) {
      // Device memory cannot be recv'd into: the payload lands in a host bounce buffer, piece by
      // piece, each piece copied over as it fills (ReceiveDevicePiece); the ack follows the last.
      c->device_target = *where;
      c->pinned = true;
      c->refusal = OkStatus();
      c->chunk_base = 0;
      c->chunk_cap = std::min<uint64_t>(std::max<uint64_t>(r.length, 1), shared->bounce->buffer_bytes());
      c->bounce = shared->bounce->TryAcquire();
      if (c->bounce) {
        shared->device_staged.fetch_add(1);
        c->target = c->bounce;
      } else {
        shared->device_unpooled.fetch_add(1);
        c->staging.resize(c->chunk_cap);
        c->target = c->staging.data();
      }
    } else if (where.ok()) {
      c->target = *where;
      c->pinned = true;
      c->refusal = OkStatus();
    } else {
      c->target = nullptr;  // drain the payload, then answer with the refusal
      c->pinned = false;
      c->refusal = where.status();
    }
    if (c->left == 0) FinishWrite(c);
  }

  // A READ of device memory: copied into a bounce buffer (or, when it is larger than one or none
  // is free, host memory of its own) owned by the response, then sent from there.
  void ServeDeviceRead(Conn* c, const wire::DataRequest& r, const uint8_t* device) {
    if (!opts().device_copy) {
      shared->access->Release(r.segment_id);
      return QueueResponse(c, r, Error(Code::kNotSupported, "segment {} is device memory and this server has no "
                                                            "device copy", r.segment_id),
                           nullptr, false);
    }
    uint8_t* bounce = r.length <= shared->bounce->buffer_bytes() ? shared->bounce->TryAcquire() : nullptr;
    std::vector<uint8_t> owned;
    if (bounce) {
      shared->device_staged.fetch_add(1);
    } else {
      shared->device_unpooled.fetch_add(1);
      owned.resize(r.length);
    }
    uint8_t* bytes = bounce ? bounce : owned.data();  // taken before the vector is moved into the response
    Status s = opts().device_copy(bytes, device, r.length);
    shared->access->Release(r.segment_id);
    if (!s.ok()) {
      if (bounce) shared->bounce->Release(bounce);
      return QueueResponse(c, r, s, nullptr, false);
    }
    QueueResponse(c, r, OkStatus(), bytes, false, std::move(owned), bounce);
    c->flush_now = true;
  }

  // A NOTIFY's payload is received into c->staging, then handed to the application (a probe, with
  // no payload, only gets its answer).
  void ServeNotify(Conn* c, const wire::DataRequest& r) {
    shared->notifies.fetch_add(1);
    c->req = r;
    c->left = r.length;
    c->in_payload = true;
    c->staging.resize(r.length);
    c->target = c->staging.data();
    c->pinned = false;
    c->refusal = OkStatus();
    if (c->left == 0) FinishWrite(c);
  }

  Status Deliver(std::span<const uint8_t> payload) {
    if (payload.empty()) return OkStatus();  // a probe
    if (!opts().on_notify) return Error(Code::kNotSupported, "this peer takes no notifications");
    auto n = wire::DecodeNotification(payload);
    if (!n.ok()) return Status(Code::kInvalidArgument, n.status().message());
    return opts().on_notify(std::move(n->name), std::move(n->message));
  }

  void FinishWrite(Conn* c) {
    c->in_payload = false;
    if (c->req.op == wire::DataOp::kNotify) {
      if (c->refusal.ok() && c->session) {
        std::shared_lock lock(c->session->mu);
        if (Superseded(c)) c->refusal = FencedOff(c);
      }
      if (c->refusal.ok()) c->refusal = Deliver(c->staging);
      c->staging.clear();
      c->staging.shrink_to_fit();
    }
    if (c->device_target) {  // every piece was copied in by ReceiveDevicePiece
      c->device_target = nullptr;
      if (c->bounce) shared->bounce->Release(c->bounce);
      c->bounce = nullptr;
      c->staging.clear();
      c->staging.shrink_to_fit();
    }
    if (c->pinned) {
      shared->access->Release(c->req.segment_id);
      c->pinned = false;
      if (c->refusal.ok()) shared->bytes_written.fetch_add(c->req.length);
    }
    QueueResponse(c, c->req, c->refusal, nullptr, false);
    c->target = nullptr;
  }

  // Sends queued output. false once the connection is closed.
  bool Flush(Conn* c) {
    while (!c->out.empty()) {
      iovec iov[kMaxIov];
      size_t n = 0;
      for (auto it = c->out.begin(); it != c->out.end() && n + 2 <= kMaxIov; ++it) {
        uint64_t skip = it->done;
        if (skip < it->head.size()) {
          iov[n++] = {it->head.data() + skip, it->head.size() - skip};
          skip = 0;
        } else {
          skip -= it->head.size();
        }
        if (it->payload_len > skip) iov[n++] = {const_cast<uint8_t*>(it->payload) + skip, it->payload_len - skip};
      }
      auto sent = net::SendvSome(c->fd.get(), iov, n, c->peer);
      if (!sent.ok()) {
        EndOfStreamOnSend(c, sent.status());
        return false;
      }
      if (*sent == 0) return true;  // full; EPOLLOUT will call again
      c->last_progress = Clock::now();
      uint64_t left = *sent;
      c->out_bytes -= left;
      while (left > 0) {
        Out& o = c->out.front();
        uint64_t take = std::min(left, o.total() - o.done);
        o.done += take;
        left -= take;
        if (o.done == o.total()) {
          if (o.pinned) shared->access->Release(o.segment);
          if (o.bounce) shared->bounce->Release(o.bounce);
          c->out.pop_front();
        }
      }
    }
    if (c->close_after_flush) {
      Close(c);
      return false;
    }
    return true;
  }

  void EndOfStreamOnSend(Conn* c, const Status& s) {
    WEFT_LOG_DEBUG("tcp server: connection from {} closed while sending: {}", c->peer, s.ToString());
    Close(c);
  }
};

Result<std::unique_ptr<TcpServer>> TcpServer::Start(const TcpServerOptions& options, SegmentAccess* access) {
  if (!access) return Error(Code::kInvalidArgument, "tcp server needs a SegmentAccess");
  WEFT_RETURN_IF_ERROR(net::CheckAuthPolicy(options.auth));
  std::unique_ptr<TcpServer> s(new TcpServer());
  s->options_ = options;
  if (s->options_.threads < 1) s->options_.threads = 1;
  s->shared_ = std::make_shared<Shared>();
  s->shared_->options = s->options_;
  s->shared_->access = access;
  if (s->options_.device_staging_bytes == 0 || s->options_.device_staging_buffers == 0)
    return Error(Code::kInvalidArgument, "device_staging_bytes and device_staging_buffers must be at least 1");
  s->shared_->bounce = std::make_unique<BouncePool>(s->options_.device_staging_bytes,
                                                    s->options_.device_staging_buffers, s->options_.staging_alloc);
  auto listen = net::ListenTcp(options.host, options.port, 1024, options.tcp);
  if (!listen.ok()) return listen.status().Annotate("tcp server");
  WEFT_ASSIGN_OR_RETURN(s->port_, net::LocalPort(listen->get()));
  s->shared_->options.port = s->port_;
  for (int i = 0; i < s->options_.threads; ++i) {
    auto w = std::make_unique<Worker>();
    w->shared = s->shared_;
    w->index = i;
    WEFT_ASSIGN_OR_RETURN(w->loop, net::EventLoop::Create());
    s->workers_.push_back(std::move(w));
  }
  Worker* w0 = s->workers_[0].get();
  w0->listen = std::move(*listen);
  WEFT_RETURN_IF_ERROR(w0->WatchListener().Annotate("tcp server"));
  for (auto& w : s->workers_) w0->all.push_back(w.get());
  for (auto& w : s->workers_) s->threads_.emplace_back([p = w.get()] { p->Run(); });
  WEFT_LOG_INFO("tcp server listening on {} with {} progress threads", s->address().ToString(), s->options_.threads);
  return s;
}

TcpServer::~TcpServer() { Stop(); }

void TcpServer::Stop() {
  if (stopped_.exchange(true)) return;
  if (!shared_) return;
  for (auto& w : workers_) w->loop->Stop();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  // Connections handed to a worker that had already exited.
  for (auto& w : workers_) {
    std::lock_guard lock(w->incoming_mu);
    shared_->open.fetch_sub(w->incoming.size());
    w->incoming.clear();
  }
  if (!workers_.empty()) workers_[0]->listen.Reset();
}

void TcpServer::FenceClient(uint64_t client_id) {
  if (!shared_) return;
  std::shared_ptr<Shared::ClientSessions> client;
  {
    std::lock_guard lock(shared_->sessions_mu);
    auto it = shared_->sessions.find(client_id);
    if (it == shared_->sessions.end()) return;  // no connection of it holds a session here
    client = it->second;
  }
  std::unique_lock lock(client->mu);
  client->newest++;  // every session it has is older now
}

size_t TcpServer::connections() const { return shared_ ? shared_->open.load() : 0; }

TcpServerStats TcpServer::stats() const {
  TcpServerStats s;
  if (!shared_) return s;
  s.connections_accepted = shared_->accepted.load();
  s.auth_failures = shared_->auth_failures.load();
  s.protocol_errors = shared_->protocol_errors.load();
  s.reads = shared_->reads.load();
  s.writes = shared_->writes.load();
  s.refused = shared_->refused.load();
  s.fenced = shared_->fenced.load();
  s.bytes_read = shared_->bytes_read.load();
  s.bytes_written = shared_->bytes_written.load();
  s.notifies = shared_->notifies.load();
  s.device_staged = shared_->device_staged.load();
  s.device_unpooled = shared_->device_unpooled.load();
  return s;
}

BouncePool::Stats TcpServer::staging_stats() const { return shared_ ? shared_->bounce->stats() : BouncePool::Stats{}; }

}  // namespace weft::transport::tcp
