#include "transport/tcp/tcp_client.h"

#include <thread>

#include <unistd.h>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <latch>
#include <limits>
#include <cerrno>
#include <cstring>
#include <deque>
#include <set>

#include "base/log.h"
#include "base/random.h"

namespace weft::transport::tcp {

namespace {

constexpr size_t kStageBytes = 64u << 10;
constexpr size_t kMaxIov = 64;

struct Slice {
  size_t entry;
  uint64_t offset;  // within the entry
  uint64_t len;
};

struct SendItem {
  wire::DataRequestBytes hdr;
  const uint8_t* payload = nullptr;
  uint64_t payload_len = 0;
  uint64_t done = 0;
  uint64_t total() const { return hdr.size() + payload_len; }
};

struct Pending {
  size_t slice;
  uint64_t id;
};

}  // namespace

struct TcpClient::Lane {
  explicit Lane(std::atomic<int64_t>& open) : open_lanes(open) {}
  ~Lane() { Close(); }
  // Every connection a lane holds is counted in open_lanes (TcpClientStats::open_lanes).
  void Adopt(net::UniqueFd connected) {
    Close();
    fd = std::move(connected);
    open_lanes.fetch_add(1);
  }
  void Close() {
    if (!fd.valid()) return;
    fd.Reset();
    open_lanes.fetch_sub(1);
  }

  std::atomic<int64_t>& open_lanes;
  std::timed_mutex mu;
  net::UniqueFd fd;
  Clock::time_point last_used = Clock::now();  // when a call last released it (under mu)
  uint64_t next_id = 1;
  uint64_t generation = 0;  // the peer's generation this connection's session opened with
  std::unique_ptr<uint8_t[]> stage{new uint8_t[kStageBytes]};
};

struct TcpClient::Peer {
  PeerAddr addr;
  std::string name;
  std::vector<std::unique_ptr<Lane>> lanes;
  std::atomic<uint32_t> rr{0};
  // Raised past a lane's generation when that lane is reset with a WRITE or NOTIFY outstanding:
  // lanes of older generations are not used again, and the server refuses their writes once a
  // lane of the newer one opened its session (wire/data.h, FENCE).
  std::atomic<uint64_t> generation{1};
  // Whether this call raised it (another lane of the same generation may have done so first).
  bool Supersede(uint64_t lane_generation) {
    uint64_t now = generation.load();
    while (now <= lane_generation)
      if (generation.compare_exchange_weak(now, lane_generation + 1)) return true;
    return false;
  }
  // Abort: `down` is set after `down_why`, and `wake` (an eventfd every call polls with its
  // sockets) turns readable, so a call blocked on a frozen peer's sockets returns at once.
  std::atomic<bool> aborting{false};  // the first Abort writes down_why
  std::atomic<bool> down{false};
  Status down_why;
  net::UniqueFd wake;
  // Sockets in their handshake (a frozen peer never answers it): Abort shuts them down so the
  // handshake fails at once. Under connecting_mu, which Abort holds while it does so.
  std::mutex connecting_mu;
  std::set<int> connecting;

  Status DownStatus() const { return down.load() ? down_why : OkStatus(); }
};

namespace {

// The state of one lane during one call.
struct Active {
  TcpClient::Lane* lane = nullptr;
  bool alive = true;
  std::deque<SendItem> out;
  std::deque<Pending> inflight;
  uint64_t inflight_bytes = 0;
  bool have_header = false;
  wire::DataResponse resp;
  uint64_t got = 0;
  size_t in_begin = 0, in_end = 0;
  size_t staged() const { return in_end - in_begin; }
};

Deadline Sooner(Deadline a, Deadline b) { return a.at() < b.at() ? a : b; }

// true if an idle connection is still good (no EOF, no error, no unexpected bytes waiting).
bool IdleLaneHealthy(int fd) {
  uint8_t b;
  ssize_t n = ::recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
  return false;  // EOF, an error, or bytes nobody asked for
}

// Half the open-file limit: the other half stays for the process's other descriptors.
int DefaultMaxOpenLanes() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY) return 0;
  return static_cast<int>(std::clamp<rlim_t>(lim.rlim_cur / 2, 1, std::numeric_limits<int>::max()));
}

}  // namespace

TcpClient::TcpClient(TcpClientOptions options)
    : options_(std::move(options)),
      id_((FreshSeed() ^ (static_cast<uint64_t>(::getpid()) << 32) ^
           static_cast<uint64_t>(Clock::now().time_since_epoch().count())) | 1) {
  if (options_.lanes < 1) options_.lanes = 1;
  options_.slice_bytes = std::clamp<uint64_t>(options_.slice_bytes, 4096, wire::kMaxDataLength);
  if (options_.max_inflight_per_lane < 1) options_.max_inflight_per_lane = 1;
  if (options_.max_inflight_bytes_per_lane < options_.slice_bytes)
    options_.max_inflight_bytes_per_lane = options_.slice_bytes;
  if (options_.lanes > 1) parallel_ = std::make_unique<WorkerPool>(static_cast<unsigned>(options_.lanes - 1));
  if (options_.max_open_lanes < 0) options_.max_open_lanes = DefaultMaxOpenLanes();
}

TcpClient::~TcpClient() = default;

std::shared_ptr<TcpClient::Peer> TcpClient::GetPeer(const PeerAddr& addr) {
  std::lock_guard lock(mu_);
  auto& p = peers_[addr];
  if (!p) {
    p = std::make_shared<Peer>();
    p->addr = addr;
    p->name = addr.ToString();
    p->wake = net::UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    for (int i = 0; i < options_.lanes; ++i) p->lanes.push_back(std::make_unique<Lane>(open_lanes_));
  }
  return p;
}

void TcpClient::Forget(const PeerAddr& addr) {
  std::shared_ptr<Peer> p;
  {
    std::lock_guard lock(mu_);
    auto it = peers_.find(addr);
    if (it == peers_.end()) return;
    p = it->second;
    peers_.erase(it);
  }
  for (auto& l : p->lanes) {
    if (l->mu.try_lock()) {
      l->Close();
      l->mu.unlock();
    }
  }
}

void TcpClient::Abort(const PeerAddr& addr, const Status& why) {
  std::shared_ptr<Peer> p = GetPeer(addr);
  if (p->aborting.exchange(true)) return;
  p->down_why = why;
  p->down.store(true);
  if (p->wake.valid()) {
    const uint64_t one = 1;
    (void)!::write(p->wake.get(), &one, sizeof(one));
  }
  {
    std::lock_guard lock(p->connecting_mu);
    for (int fd : p->connecting) ::shutdown(fd, SHUT_RDWR);
  }
  // Idle lanes close here; lanes in use close when their call sees `down`.
  for (auto& l : p->lanes) {
    if (l->mu.try_lock()) {
      l->Close();
      l->mu.unlock();
    }
  }
}

void TcpClient::Revive(const PeerAddr& addr) {
  std::lock_guard lock(mu_);
  auto it = peers_.find(addr);
  if (it != peers_.end() && it->second->down.load()) peers_.erase(it);  // calls holding it still see it down
}

size_t TcpClient::ConnectedLanes(const PeerAddr& addr) {
  std::shared_ptr<Peer> p;
  {
    std::lock_guard lock(mu_);
    auto it = peers_.find(addr);
    if (it == peers_.end()) return 0;
    p = it->second;
  }
  size_t n = 0;
  for (auto& l : p->lanes) {
    std::lock_guard lock(l->mu);
    if (l->fd.valid()) ++n;
  }
  return n;
}

std::vector<std::shared_ptr<TcpClient::Peer>> TcpClient::Peers() {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<Peer>> out;
  for (const auto& [addr, p] : peers_) out.push_back(p);
  return out;
}

size_t TcpClient::CloseIdleLanes() {
  if (options_.idle_close_ms <= 0) return 0;
  const std::vector<std::shared_ptr<Peer>> peers = Peers();
  const auto unused_since = Clock::now() - Millis(options_.idle_close_ms);
  size_t closed = 0;
  for (const auto& p : peers) {
    for (auto& l : p->lanes) {
      if (!l->mu.try_lock()) continue;  // in use
      if (l->fd.valid() && l->last_used <= unused_since) {
        l->Close();
        ++closed;
      }
      l->mu.unlock();
    }
  }
  idle_closes_.fetch_add(closed);
  return closed;
}

size_t TcpClient::CloseLanesOverCap() {
  if (options_.max_open_lanes <= 0) return 0;
  const std::vector<std::shared_ptr<Peer>> peers = Peers();
  // Idle connected lanes, least recently used first (last_used is read under each lane's lock).
  std::vector<std::pair<Clock::time_point, Lane*>> idle;
  for (const auto& p : peers) {
    for (auto& l : p->lanes) {
      if (!l->mu.try_lock()) continue;  // in use
      if (l->fd.valid()) idle.emplace_back(l->last_used, l.get());
      l->mu.unlock();
    }
  }
  std::sort(idle.begin(), idle.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  size_t closed = 0;
  for (const auto& [when, l] : idle) {
    if (open_lanes_.load() < options_.max_open_lanes) break;
    if (!l->mu.try_lock()) continue;  // taken meanwhile
    if (l->fd.valid()) {
      l->Close();
      ++closed;
    }
    l->mu.unlock();
  }
  cap_closes_.fetch_add(closed);
  return closed;
}

TcpClientStats TcpClient::stats() const {
  TcpClientStats s;
  s.connects = connects_.load();
  s.lane_resets = lane_resets_.load();
  s.requests = requests_.load();
  s.bytes_written = bytes_written_.load();
  s.bytes_read = bytes_read_.load();
  s.open_lanes = static_cast<uint64_t>(std::max<int64_t>(0, open_lanes_.load()));
  s.idle_closes = idle_closes_.load();
  s.cap_closes = cap_closes_.load();
  s.superseded = superseded_.load();
  return s;
}

Status TcpClient::Write(const PeerAddr& peer, uint32_t segment_id, uint64_t access_key, uint64_t remote_offset,
                        const void* src, uint64_t len, Deadline deadline) {
  TcpRequest r{wire::DataOp::kWrite, segment_id, access_key, remote_offset, const_cast<void*>(src), len};
  return Transfer(peer, {&r, 1}, deadline)[0];
}

Status TcpClient::Read(const PeerAddr& peer, uint32_t segment_id, uint64_t access_key, uint64_t remote_offset,
                       void* dst, uint64_t len, Deadline deadline) {
  TcpRequest r{wire::DataOp::kRead, segment_id, access_key, remote_offset, dst, len};
  return Transfer(peer, {&r, 1}, deadline)[0];
}

std::vector<Status> TcpClient::WriteBatch(const PeerAddr& peer, std::span<const TcpRequest> requests,
                                          Deadline deadline) {
  std::vector<TcpRequest> w(requests.begin(), requests.end());
  for (auto& r : w) r.op = wire::DataOp::kWrite;
  return Transfer(peer, w, deadline);
}

std::vector<Status> TcpClient::ReadBatch(const PeerAddr& peer, std::span<const TcpRequest> requests,
                                         Deadline deadline) {
  std::vector<TcpRequest> w(requests.begin(), requests.end());
  for (auto& r : w) r.op = wire::DataOp::kRead;
  return Transfer(peer, w, deadline);
}

Status TcpClient::Notify(const PeerAddr& peer, std::span<const uint8_t> payload, Deadline deadline) {
  TcpRequest r{wire::DataOp::kNotify, 0, 0, 0, const_cast<uint8_t*>(payload.data()), payload.size()};
  return Transfer(peer, {&r, 1}, deadline)[0];
}

std::vector<Status> TcpClient::Transfer(const PeerAddr& peer_addr, std::span<const TcpRequest> requests,
                                        Deadline deadline) {
  // A large call is cut into one part per lane, each driven by its own thread on its own lane,
  // so that several CPUs do the kernel's copies (one thread striping over every lane is no
  // faster than one lane: docs/performance.md, TCP).
  uint64_t total = 0;
  bool plain = true;
  for (const TcpRequest& r : requests) {
    total += r.len;
    plain = plain && (r.op == wire::DataOp::kRead || r.op == wire::DataOp::kWrite) && r.local &&
            r.remote_offset <= UINT64_MAX - r.len;
  }
  const uint64_t parts = std::min<uint64_t>(options_.lanes, (total + options_.slice_bytes - 1) / options_.slice_bytes);
  if (options_.parallel_min_bytes == 0 || total < options_.parallel_min_bytes || parts < 2 || !plain)
    return TransferOnLanes(peer_addr, requests, deadline, options_.lanes);
  return TransferInParallel(peer_addr, requests, deadline, parts, total);
}

std::vector<Status> TcpClient::TransferInParallel(const PeerAddr& peer_addr, std::span<const TcpRequest> requests,
                                                  Deadline deadline, uint64_t parts, uint64_t total) {
  // Part p gets the bytes [p * share, (p + 1) * share) of the concatenated requests, in whole
  // slices; a request crossing a boundary is cut in two.
  const uint64_t share = (total / parts + options_.slice_bytes - 1) / options_.slice_bytes * options_.slice_bytes;
  std::vector<std::vector<TcpRequest>> pieces(parts);
  std::vector<std::vector<size_t>> origin(parts);  // piece -> index of its request
  uint64_t at = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const TcpRequest& r = requests[i];
    uint64_t done = 0;
    while (done < r.len) {
      uint64_t part = std::min<uint64_t>(at / share, parts - 1);
      uint64_t room = part == parts - 1 ? r.len - done : (part + 1) * share - at;
      uint64_t take = std::min(room, r.len - done);
      TcpRequest piece = r;
      piece.remote_offset += done;
      piece.local = static_cast<uint8_t*>(r.local) + done;
      piece.len = take;
      pieces[part].push_back(piece);
      origin[part].push_back(i);
      done += take;
      at += take;
    }
  }
  std::vector<std::vector<Status>> got(parts);
  // Parts 1.. on the client's threads (they wait for nothing but their own sockets), part 0 here.
  std::latch done(static_cast<std::ptrdiff_t>(parts - 1));
  for (uint64_t p = 1; p < parts; ++p) {
    parallel_->Submit([&, p] {
      if (!pieces[p].empty()) got[p] = TransferOnLanes(peer_addr, pieces[p], deadline, 1);
      done.count_down();
    });
  }
  got[0] = TransferOnLanes(peer_addr, pieces[0], deadline, 1);
  done.wait();
  std::vector<Status> results(requests.size());
  for (uint64_t p = 0; p < parts; ++p) {
    for (size_t k = 0; k < got[p].size(); ++k) {
      Status& r = results[origin[p][k]];
      if (r.ok() && !got[p][k].ok()) r = got[p][k];
    }
  }
  return results;
}

namespace {

// An entry keeps the first error of its slices.
void FailEntry(std::vector<Status>& results, size_t entry, const Status& s) {
  if (results[entry].ok()) results[entry] = s;
}

// Cuts the requests into slices of at most slice_bytes (a NOTIFY into one, empty ones into none);
// an entry that cannot go out gets its error in `results` and no slice.
std::vector<Slice> SliceRequests(std::span<const TcpRequest> requests, uint64_t slice_bytes,
                                 std::vector<Status>& results) {
  std::vector<Slice> slices;
  for (size_t i = 0; i < requests.size(); ++i) {
    const TcpRequest& r = requests[i];
    if (r.op == wire::DataOp::kNotify) {  // never sliced; an empty one is a probe
      if (r.len > wire::kMaxNotifyPayload || (r.len > 0 && !r.local)) {
        results[i] = Error(Code::kInvalidArgument, "entry {}: a notification of {} bytes (limit {})", i, r.len,
                           wire::kMaxNotifyPayload);
        continue;
      }
      slices.push_back(Slice{i, 0, r.len});
      continue;
    }
    if (r.op != wire::DataOp::kRead && r.op != wire::DataOp::kWrite) {
      results[i] = Error(Code::kInvalidArgument, "entry {}: unknown op", i);
      continue;
    }
    if (r.len == 0) continue;
    if (!r.local) {
      results[i] = Error(Code::kInvalidArgument, "entry {}: null local buffer for {} bytes", i, r.len);
      continue;
    }
    if (r.remote_offset > UINT64_MAX - r.len) {
      results[i] = Error(Code::kOutOfRange, "entry {}: remote offset {} + {} bytes wraps around", i, r.remote_offset,
                         r.len);
      continue;
    }
    for (uint64_t off = 0; off < r.len; off += slice_bytes)
      slices.push_back(Slice{i, off, std::min(slice_bytes, r.len - off)});
  }
  return slices;
}

// Takes lanes of the peer for a call of `slices` slices: as many idle ones as there are slices
// (up to all, and up to max_lanes), at least one: with none idle, it waits for one until the
// deadline.
Result<std::vector<TcpClient::Lane*>> TakeLanes(TcpClient::Peer& peer, size_t slices, size_t max_lanes,
                                                Deadline deadline) {
  std::vector<TcpClient::Lane*> held;
  const size_t lane_count = peer.lanes.size();
  const size_t want = std::min({lane_count, slices, std::max<size_t>(1, max_lanes)});
  const uint32_t start = peer.rr.fetch_add(1);
  for (size_t i = 0; i < lane_count && held.size() < want; ++i) {
    TcpClient::Lane* l = peer.lanes[(start + i) % lane_count].get();
    if (l->mu.try_lock()) held.push_back(l);
  }
  if (!held.empty()) return held;
  TcpClient::Lane* l = peer.lanes[start % lane_count].get();
  bool got = deadline.never() ? (l->mu.lock(), true) : l->mu.try_lock_until(deadline.at());
  if (!got) return Error(Code::kTimeout, "all {} lanes to {} stayed busy until the deadline", lane_count, peer.name);
  held.push_back(l);
  return held;
}

// Points `iov` at what is still unsent of the queued requests, as many as fit; returns how many
// iovecs it filled.
size_t GatherUnsent(std::deque<SendItem>& out, iovec (&iov)[kMaxIov]) {
  size_t n = 0;
  for (auto it = out.begin(); it != out.end() && n + 2 <= kMaxIov; ++it) {
    uint64_t skip = it->done;
    if (skip < it->hdr.size()) {
      iov[n++] = {it->hdr.data() + skip, it->hdr.size() - skip};
      skip = 0;
    } else {
      skip -= it->hdr.size();
    }
    if (it->payload_len > skip) iov[n++] = {const_cast<uint8_t*>(it->payload) + skip, it->payload_len - skip};
  }
  return n;
}

// Counts `sent` bytes off the front of the queue, dropping the requests that went out whole.
void DropSent(std::deque<SendItem>& out, size_t sent) {
  while (sent > 0) {
    SendItem& it = out.front();
    uint64_t take = std::min<uint64_t>(sent, it.total() - it.done);
    it.done += take;
    sent -= take;
    if (it.done == it.total()) out.pop_front();
  }
}

// What taking the response header of a lane's oldest request came to.
enum class HeaderStep {
  kNotIn,      // its bytes have not all arrived
  kTextNotIn,  // a refusal whose text has not all arrived: the header is decoded again once it is in
  kFinished,   // the slice is done (refused, or a WRITE or NOTIFY acknowledged)
  kPayload,    // a READ's bytes follow
};

}  // namespace

// One call driven by this thread over the lanes it holds: which slice goes out next, what each
// lane has outstanding, and the entries' results.
struct TcpClient::Call {
  Call(TcpClient& client, Peer& peer, std::span<const TcpRequest> requests, std::span<const Slice> slices,
       Deadline deadline, std::vector<Status>& results)
      : client(client), peer(peer), name(peer.name), requests(requests), slices(slices), deadline(deadline),
        results(results) {}

  TcpClient& client;
  Peer& peer;
  const std::string& name;  // the peer's, for messages
  std::span<const TcpRequest> requests;
  std::span<const Slice> slices;
  Deadline deadline;
  std::vector<Status>& results;
  std::vector<Active> active;  // the lanes that connected
  Status last_error;           // why the last lane failed
  size_t next = 0;             // next slice to assign
  size_t done = 0;             // slices finished (either way)
  uint64_t bytes_done = 0;
  std::vector<pollfd> pfds;
  std::vector<Active*> polled;

  // A fresh connection on a lane that has none: connect and authenticate.
  Status OpenLane(Lane& l, const PeerAddr& peer_addr) {
    const TcpClientOptions& o = client.options_;
    Deadline cd = Sooner(deadline, Deadline::After(Millis(o.connect_timeout_ms)));
    WEFT_ASSIGN_OR_RETURN(net::UniqueFd fd, net::ConnectTcp(peer_addr, cd, o.tcp));
    WEFT_ASSIGN_OR_RETURN(l.generation, Authenticate(fd.get(), cd));
    l.Adopt(std::move(fd));
    l.next_id = 1;
    client.connects_.fetch_add(1);
    return OkStatus();
  }

  // The FENCE that opens the connection's session at the peer's generation (wire/data.h); tried
  // again if another lane raised the generation meanwhile. Returns the generation.
  Result<uint64_t> OpenSession(int fd, Deadline cd) {
    Result<uint64_t> opened = TryOpenSession(fd, cd);
    if (!opened.ok() && opened.status().code() != Code::kCancelled)
      return opened.status().Annotate("opening the lane's session (FENCE; a data server of an older weft build, "
                                      "which does not know it, closes the connection here)");
    return opened;
  }
  Result<uint64_t> TryOpenSession(int fd, Deadline cd) {
    for (int attempt = 0;; ++attempt) {
      const uint64_t generation = peer.generation.load();
      wire::DataRequest h;
      h.op = wire::DataOp::kFence;
      h.access_key = client.id_;
      h.offset = generation;
      const auto hdr = wire::EncodeDataRequest(h);
      WEFT_RETURN_IF_ERROR(net::SendAllTcp(fd, hdr.data(), hdr.size(), cd, name));
      wire::DataResponseBytes got;
      WEFT_RETURN_IF_ERROR(net::RecvAllTcp(fd, got.data(), got.size(), cd, name));
      WEFT_ASSIGN_OR_RETURN(wire::DataResponse resp, wire::DecodeDataResponse(got));
      if (resp.op != wire::DataOp::kFence || resp.request_id != 0 || resp.length != 0)
        return Error(Code::kProtocol, "{} answered a FENCE with a {} response", name, wire::DataOpName(resp.op));
      std::string text(resp.message_length, '\0');
      WEFT_RETURN_IF_ERROR(net::RecvAllTcp(fd, text.data(), text.size(), cd, name));
      if (resp.status == Code::kOk) return generation;
      if (resp.status != Code::kCancelled || attempt == 2)
        return Status(resp.status, fmt::format("{} refused this connection's session: {}", name, text));
      peer.Supersede(generation);  // the peer knows a newer one (its owner fenced us): go past it
    }
  }

  // The handshake and the session's FENCE, in the peer's `connecting` set so that an Abort cuts
  // them short. Returns the session's generation.
  Result<uint64_t> Authenticate(int fd, Deadline cd) {
    {
      std::lock_guard lock(peer.connecting_mu);
      if (Status down = peer.DownStatus(); !down.ok()) return down;
      peer.connecting.insert(fd);
    }
    Status authenticated = net::AuthenticateClient(fd, client.options_.auth, cd, name);
    Result<uint64_t> generation = authenticated.ok() ? OpenSession(fd, cd) : Result<uint64_t>(authenticated);
    {
      std::lock_guard lock(peer.connecting_mu);
      peer.connecting.erase(fd);
    }
    if (Status down = peer.DownStatus(); !down.ok()) return down;
    return generation;
  }

  // Connects (or reconnects) the lanes we hold. false when none is up: every slice failed then.
  bool ConnectLanes(const std::vector<Lane*>& held, const PeerAddr& peer_addr) {
    for (Lane* l : held) {
      if (l->fd.valid() && !IdleLaneHealthy(l->fd.get())) {
        WEFT_LOG_DEBUG("tcp client: idle lane to {} went away; reconnecting", name);
        l->Close();
      }
      if (l->fd.valid() && l->generation != peer.generation.load()) l->Close();  // superseded: never used again
      if (!l->fd.valid()) {
        if (!last_error.ok()) continue;  // another lane just failed to connect: don't wait twice
        if (Status s = OpenLane(*l, peer_addr); !s.ok()) {
          last_error = s;
          continue;
        }
      }
      Active a;
      a.lane = l;
      active.push_back(std::move(a));
    }
    if (!active.empty()) return true;
    for (const Slice& sl : slices) FailEntry(results, sl.entry, last_error);
    return false;
  }

  // The lane's oldest request is answered (with `s`).
  void FinishSlice(Active& a, const Status& s) {
    const Pending p = a.inflight.front();
    a.inflight.pop_front();
    const Slice& sl = slices[p.slice];
    a.inflight_bytes -= sl.len;
    ++done;
    if (!s.ok()) {
      FailEntry(results, sl.entry, s);
    } else {
      bytes_done += sl.len;
      if (requests[sl.entry].op != wire::DataOp::kRead)
        client.bytes_written_.fetch_add(sl.len);
      else
        client.bytes_read_.fetch_add(sl.len);
    }
  }

  // Fails what the lane has outstanding with `s` and closes it: a late response must never be
  // taken for the answer to a later request (the lane reconnects on next use).
  void ResetLane(Active& a, const Status& s) {
    const bool writes_outstanding = std::any_of(a.inflight.begin(), a.inflight.end(), [&](const Pending& p) {
      return requests[slices[p.slice].entry].op != wire::DataOp::kRead;
    });
    // Their bytes may still reach the server (queued in a socket, or retransmitted once a link
    // is back): the next lane opens a newer session, which fences this one off at the server.
    if (writes_outstanding && peer.Supersede(a.lane->generation)) client.superseded_.fetch_add(1);
    while (!a.inflight.empty()) FinishSlice(a, s);
    a.out.clear();
    a.lane->Close();
    a.alive = false;
    client.lane_resets_.fetch_add(1);
    last_error = s;
  }

  // Fails the slices never handed to a lane with `s`.
  void FailUnsent(const Status& s) {
    for (; next < slices.size(); ++next) {
      FailEntry(results, slices[next].entry, s);
      ++done;
    }
  }

  // The header (and for a WRITE or NOTIFY, the payload) of a slice's request.
  SendItem RequestFor(const Slice& sl, uint64_t id) const {
    const TcpRequest& rq = requests[sl.entry];
    wire::DataRequest h;
    h.op = rq.op;
    h.request_id = id;
    h.segment_id = rq.segment_id;
    h.access_key = rq.access_key;
    h.offset = rq.remote_offset + sl.offset;
    h.length = sl.len;
    SendItem item;
    item.hdr = wire::EncodeDataRequest(h);
    if (rq.op != wire::DataOp::kRead) {
      item.payload = static_cast<const uint8_t*>(rq.local) + sl.offset;
      item.payload_len = sl.len;
    }
    return item;
  }

  // Queues the next slices on the lane while it has room (requests and bytes in flight).
  void Assign(Active& a) {
    const TcpClientOptions& o = client.options_;
    while (next < slices.size() && a.inflight.size() < static_cast<size_t>(o.max_inflight_per_lane) &&
           (a.inflight_bytes == 0 || a.inflight_bytes + slices[next].len <= o.max_inflight_bytes_per_lane)) {
      const Slice& sl = slices[next];
      const uint64_t id = a.lane->next_id++;
      a.out.push_back(RequestFor(sl, id));
      a.inflight.push_back(Pending{next, id});
      a.inflight_bytes += sl.len;
      client.requests_.fetch_add(1);
      ++next;
    }
  }

  // Sends what the socket takes of the lane's queue, many requests per sendmsg. Returns whether
  // anything went out.
  Result<bool> Send(Active& a) {
    bool moved = false;
    while (!a.out.empty()) {
      iovec iov[kMaxIov];
      const size_t n = GatherUnsent(a.out, iov);
      WEFT_ASSIGN_OR_RETURN(size_t sent, net::SendvSome(a.lane->fd.get(), iov, n, name));
      if (sent == 0) return moved;
      moved = true;
      DropSent(a.out, sent);
    }
    return moved;
  }

  // Fills the stage to at least `need` bytes; false when the socket has no more right now.
  Result<bool> Fill(Active& a, size_t need) {
    if (a.staged() >= need) return true;
    uint8_t* stage = a.lane->stage.get();
    if (a.in_begin > 0) {
      std::memmove(stage, stage + a.in_begin, a.staged());
      a.in_end -= a.in_begin;
      a.in_begin = 0;
    }
    while (a.in_end < need) {
      iovec iov{stage + a.in_end, kStageBytes - a.in_end};
      auto n = net::RecvvSome(a.lane->fd.get(), &iov, 1, name);
      if (!n.ok()) return n.status();
      if (*n == 0) return false;
      a.in_end += *n;
    }
    return true;
  }

  // Takes the response header of the lane's oldest request; a mismatch with the request is
  // PROTOCOL.
  Result<HeaderStep> TakeHeader(Active& a) {
    const Pending& f = a.inflight.front();
    const Slice& sl = slices[f.slice];
    const TcpRequest& rq = requests[sl.entry];
    uint8_t* stage = a.lane->stage.get();
    WEFT_ASSIGN_OR_RETURN(bool ready, Fill(a, wire::kDataResponseSize));
    if (!ready) return HeaderStep::kNotIn;
    WEFT_ASSIGN_OR_RETURN(wire::DataResponse resp,
                          wire::DecodeDataResponse({stage + a.in_begin, wire::kDataResponseSize}));
    if (resp.request_id != f.id || resp.op != rq.op)
      return Error(Code::kProtocol, "response from {} is for request {} ({}), expected {} ({})", name,
                   resp.request_id, wire::DataOpName(resp.op), f.id, wire::DataOpName(rq.op));
    if (resp.status != Code::kOk) {
      WEFT_ASSIGN_OR_RETURN(bool all, Fill(a, wire::kDataResponseSize + resp.message_length));
      if (!all) return HeaderStep::kTextNotIn;
      std::string text(reinterpret_cast<const char*>(stage + a.in_begin + wire::kDataResponseSize),
                       resp.message_length);
      a.in_begin += wire::kDataResponseSize + resp.message_length;
      // The server fenced this lane's session off (a newer one, or it declared us down): later
      // calls open a lane of a newer session instead of being refused on this one.
      if (resp.status == Code::kCancelled && peer.Supersede(a.lane->generation)) client.superseded_.fetch_add(1);
      FinishSlice(a, Status(resp.status, fmt::format("{} {} bytes at offset {} of segment {} on {}: {}",
                                                     wire::DataOpName(rq.op), sl.len, rq.remote_offset + sl.offset,
                                                     rq.segment_id, name, text)));
      return HeaderStep::kFinished;
    }
    if (rq.op == wire::DataOp::kRead && resp.length != sl.len)
      return Error(Code::kProtocol, "READ response from {} carries {} bytes, asked for {}", name, resp.length, sl.len);
    a.in_begin += wire::kDataResponseSize;
    if (rq.op != wire::DataOp::kRead) {
      FinishSlice(a, OkStatus());
      return HeaderStep::kFinished;
    }
    a.have_header = true;
    a.got = 0;
    return HeaderStep::kPayload;
  }

  // Takes what has arrived of the oldest READ's payload: staged bytes first, then straight from
  // the socket into the destination. Returns whether any bytes came.
  Result<bool> TakePayload(Active& a) {
    const Slice& sl = slices[a.inflight.front().slice];
    const TcpRequest& rq = requests[sl.entry];
    uint8_t* dst = static_cast<uint8_t*>(rq.local) + sl.offset + a.got;
    uint64_t want_bytes = sl.len - a.got;
    if (a.staged() > 0) {
      size_t k = static_cast<size_t>(std::min<uint64_t>(want_bytes, a.staged()));
      std::memcpy(dst, a.lane->stage.get() + a.in_begin, k);
      a.in_begin += k;
      a.got += k;
    } else {
      iovec iov{dst, static_cast<size_t>(want_bytes)};
      WEFT_ASSIGN_OR_RETURN(size_t n, net::RecvvSome(a.lane->fd.get(), &iov, 1, name));
      if (n == 0) return false;
      a.got += n;
    }
    if (a.got == sl.len) {
      a.have_header = false;
      FinishSlice(a, OkStatus());
    }
    return true;
  }

  // Takes what responses have arrived. Returns whether anything moved.
  Result<bool> Receive(Active& a) {
    bool moved = false;
    while (!a.inflight.empty()) {
      if (!a.have_header) {
        WEFT_ASSIGN_OR_RETURN(HeaderStep step, TakeHeader(a));
        if (step == HeaderStep::kNotIn) return moved;
        if (step == HeaderStep::kTextNotIn) return true;
        moved = true;
        if (step == HeaderStep::kFinished) continue;
      }
      WEFT_ASSIGN_OR_RETURN(bool took, TakePayload(a));
      if (!took) return moved;
      moved = true;
    }
    return moved;
  }

  // One pass over the live lanes: each is given slices, sends and takes responses; a lane that
  // fails is reset. Returns whether anything moved; `alive` counts the lanes still up.
  bool Pass(size_t& alive) {
    bool progress = false;
    alive = 0;
    for (Active& a : active) {
      if (!a.alive) continue;
      Assign(a);
      auto s = Send(a);
      if (!s.ok()) {
        ResetLane(a, s.status());
        continue;
      }
      progress |= *s;
      auto r = Receive(a);
      if (!r.ok()) {
        if (r.status().code() == Code::kProtocol)
          WEFT_LOG_WARN("tcp client: closing a lane to {}: {}", name, r.status().ToString());
        ResetLane(a, r.status());
        continue;
      }
      progress |= *r;
      ++alive;
    }
    return progress;
  }

  // The deadline passed: the lanes still waiting are closed (a late response must never be taken
  // for the answer to a later request) and what was never sent fails.
  void TimeOut() {
    uint64_t bytes_total = 0;
    for (const Slice& s : slices) bytes_total += s.len;
    Status s = Error(Code::kTimeout,
                     "transfer with {} did not complete before the deadline ({} of {} bytes done); the lanes that "
                     "were waiting are closed",
                     name, bytes_done, bytes_total);
    for (Active& a : active)
      if (a.alive && (!a.inflight.empty() || !a.out.empty())) ResetLane(a, s);
    FailUnsent(s);
  }

  // Waits until a lane that waits for its socket can go on. false once the deadline passed (the
  // call is over then).
  bool WaitForSockets() {
    pfds.clear();
    polled.clear();
    for (Active& a : active) {
      if (!a.alive) continue;
      short ev = 0;
      if (!a.inflight.empty()) ev |= POLLIN;
      if (!a.out.empty()) ev |= POLLOUT;
      if (!ev) continue;
      pfds.push_back({a.lane->fd.get(), ev, 0});
      polled.push_back(&a);
    }
    if (pfds.empty()) return true;  // a lane has room for more slices
    if (peer.wake.valid()) pfds.push_back({peer.wake.get(), POLLIN, 0});  // Abort wakes us
    int rc = ::poll(pfds.data(), pfds.size(), deadline.left_ms_for_poll());
    if (rc < 0 && errno != EINTR) {
      Status s = ErrnoStatus("poll", errno);
      for (Active* a : polled) ResetLane(*a, s);
      return true;
    }
    if (rc == 0 && deadline.expired()) {
      TimeOut();
      return false;
    }
    return true;
  }

  // The peer was declared down: what is outstanding fails with its status and the lanes close
  // (nobody will answer on them).
  void Abandon(const Status& why) {
    for (Active& a : active)
      if (a.alive) ResetLane(a, why);
    FailUnsent(why);
  }

  // Drives the lanes until every slice is finished, one way or the other.
  void Run() {
    while (done < slices.size()) {
      if (Status down = peer.DownStatus(); !down.ok()) {
        Abandon(down);
        break;
      }
      size_t alive = 0;
      const bool progress = Pass(alive);
      if (done == slices.size()) break;
      if (alive == 0) {
        // Every lane failed: what was never sent fails with the last lane's error.
        FailUnsent(last_error);
        break;
      }
      if (progress) continue;
      if (!WaitForSockets()) break;
    }
  }

  // A healthy lane ends a call with nothing outstanding; anything left over would desync it.
  void CloseUnsettledLanes() {
    for (Active& a : active) {
      if (a.alive && (a.staged() > 0 || !a.inflight.empty() || !a.out.empty() || a.have_header)) {
        WEFT_LOG_WARN("tcp client: lane to {} has {} unexpected bytes after a call; closing it", name, a.staged());
        a.lane->Close();
        client.lane_resets_.fetch_add(1);
      }
    }
  }
};

std::vector<Status> TcpClient::TransferOnLanes(const PeerAddr& peer_addr, std::span<const TcpRequest> requests,
                                               Deadline deadline, size_t max_lanes) {
  std::vector<Status> results(requests.size());
  const std::vector<Slice> slices = SliceRequests(requests, options_.slice_bytes, results);
  if (slices.empty()) return results;

  if (options_.idle_close_ms > 0) {
    const int64_t now = Clock::now().time_since_epoch().count();
    int64_t due = next_idle_check_ns_.load(std::memory_order_relaxed);
    const int64_t period = std::chrono::duration_cast<Clock::duration>(Millis(options_.idle_close_ms) / 4).count();
    // One caller runs the check per period; the others go on.
    if (now >= due && next_idle_check_ns_.compare_exchange_strong(due, now + period)) CloseIdleLanes();
  }
  // Here, before this thread holds any lane (its try_lock of one it held would be undefined).
  if (options_.max_open_lanes > 0 && open_lanes_.load(std::memory_order_relaxed) >= options_.max_open_lanes)
    CloseLanesOverCap();
  std::shared_ptr<Peer> peer = GetPeer(peer_addr);
  auto held = TakeLanes(*peer, slices.size(), max_lanes, deadline);
  if (!held.ok()) {
    for (const Slice& sl : slices) FailEntry(results, sl.entry, held.status());
    return results;
  }
  struct Unlock {
    std::vector<Lane*>& held;
    ~Unlock() {
      const auto now = Clock::now();
      for (Lane* l : held) {
        l->last_used = now;
        l->mu.unlock();
      }
    }
  } unlock{*held};

  if (Status down = peer->DownStatus(); !down.ok()) {
    for (const Slice& sl : slices) FailEntry(results, sl.entry, down);
    return results;
  }
  Call call(*this, *peer, requests, slices, deadline, results);
  if (!call.ConnectLanes(*held, peer_addr)) return results;
  call.Run();
  call.CloseUnsettledLanes();
  return results;
}

}  // namespace weft::transport::tcp
