// One receive thread per client reads the coordinator's frames, runs the peer callbacks and
// completes waiters; a heartbeat thread sends the heartbeats, so a callback that takes long (a
// detach waits for in-flight copies) never makes this peer miss its heartbeats.
// Any thread may send; a send mutex keeps frames whole on the stream. Waiters share one
// condition variable: control traffic is light and this keeps every wait a plain predicate.
//
// The coordinator answers every heartbeat. A coordinator that is frozen (SIGSTOP, a debugger,
// swapped out) or cut off without a reset keeps its socket open, so only silence tells: when
// a heartbeat has gone unanswered for the pool's peer timeout, the heartbeat thread marks the
// coordinator unreachable. Control calls waiting then fail with UNAVAILABLE and new ones fail at
// once, instead of each waiting out its deadline; the next frame from the coordinator clears the
// mark. Nothing on the data path asks the coordinator, so copies between live peers go on.
#include "meta/coordinator_client.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <system_error>
#include <thread>

#include "base/log.h"
#include "net/control_stream.h"
#include "net/unix_socket.h"
#include "wire/control.h"

namespace weft::meta {

namespace {

using GatherResult = Result<std::vector<std::pair<uint32_t, std::vector<uint8_t>>>>;

// Completed epochs kept for waiters that have not looked yet.
constexpr size_t kKeptResults = 16;
// Room for a Call's own fields inside one frame.
constexpr size_t kCallOverhead = 64;

template <typename Pred>
bool WaitUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock, Deadline deadline, Pred pred) {
  while (!pred()) {
    if (deadline.never()) {
      cv.wait(lock);
    } else if (cv.wait_until(lock, deadline.at()) == std::cv_status::timeout) {
      return pred();
    }
  }
  return true;
}

// A throwing callback must not take the receive thread (and with it the process) down.
template <typename Fn>
void Guarded(const char* what, Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    WEFT_LOG_ERROR("{} callback threw: {}", what, e.what());
  } catch (...) {
    WEFT_LOG_ERROR("{} callback threw", what);
  }
}

template <typename V>
void Prune(std::map<uint64_t, V>& m) {
  while (m.size() > kKeptResults) m.erase(m.begin());
}

}  // namespace

struct CoordinatorClient::Impl {
  JoinOptions opt;
  OnPeerJoined on_joined;
  OnPeerGone on_gone;

  net::UniqueFd sock;
  net::UniqueFd wake;
  net::FrameReader reader;  // Join's, then the receive thread's alone
  uint32_t rank = 0;
  std::thread thread;
  std::thread heartbeat_thread;
  std::atomic<bool> stop{false};
  std::mutex stop_mu;  // wakes the heartbeat thread at once on stop
  std::condition_variable stop_cv;
  bool tcp = false;

  // One sender at a time keeps frames whole; a flag under a mutex (not a timed_mutex) so a
  // waiting sender honours its deadline.
  std::mutex send_mu;
  std::condition_variable send_cv;
  bool sending = false;

  std::mutex mu;
  std::condition_variable cv;
  bool connected = true;
  bool left = false;
  Status down;  // why connected turned false
  // The coordinator's liveness as heartbeats tell it: a heartbeat sent at first_unanswered has
  // had no frame in reply yet (awaiting); past answer_timeout (0: never) it is unreachable.
  Millis answer_timeout{0};
  bool awaiting = false;
  Clock::time_point first_unanswered;
  bool unreachable = false;
  std::set<uint32_t> live;
  uint64_t barrier_epoch = 0;
  bool barrier_entered = false;
  std::map<uint64_t, Status> barrier_results;
  uint64_t allgather_epoch = 0;
  bool allgather_entered = false;
  std::map<uint64_t, GatherResult> allgather_results;
  uint64_t next_call_id = 1;
  std::map<uint64_t, std::optional<Result<std::vector<uint8_t>>>> calls;
  // Bumped (after the reply is in `calls`) by each CallReply: a caller polls it for a short
  // while before it sleeps on cv (WaitForReply).
  std::atomic<uint64_t> replies{0};

  // Until calls[id] holds the reply, the connection is interrupted or the deadline passes.
  void WaitForReply(std::unique_lock<std::mutex>& lock, uint64_t id, Deadline deadline);

  Status JoinPool(Deadline deadline);
  Result<wire::Join> MakeJoin(bool over_tcp) const;
  void Run();
  void Heartbeats();
  Status DrainFrames();
  Status OnFrame(net::ReceivedFrame frame);

  template <typename T>
  Status SendMsg(const T& msg, std::span<const int> fds, Deadline deadline);
  void Disconnect(Status why);
  // What a waiter gets once the connection is gone.
  Status PendingStatus() const {
    return left ? Status(Code::kCancelled, "left the pool while the operation was pending") : down;
  }
  Status NotConnected() const {
    return Status(Code::kUnavailable,
                  fmt::format("not connected to the coordinator at '{}': {}", opt.socket_path,
                              left ? "this peer left the pool" : down.message()));
  }
  Status Unreachable() const {
    return Status(Code::kUnavailable,
                  fmt::format("the coordinator at '{}' stopped answering: no reply to heartbeats for {} ms (the "
                              "pool's peer_timeout_ms). Is its process stopped or overloaded, or the network to it "
                              "down? Control calls fail at once until it answers again; copies between live peers "
                              "still work",
                              opt.socket_path, answer_timeout.count()));
  }
  // What a new call gets when it cannot go out now; OK when it can. Under mu.
  Status CannotCall() const {
    if (!connected) return NotConnected();
    if (unreachable) return Unreachable();
    return OkStatus();
  }
  // What a waiter gets when it stops waiting early (connection gone or coordinator silent).
  Status Interrupted() const { return connected ? Unreachable() : PendingStatus(); }
  bool Interrupting() const { return !connected || unreachable; }
  void Heard();
  void CheckAnswers();
  void StopThread();
};

template <typename T>
Status CoordinatorClient::Impl::SendMsg(const T& msg, std::span<const int> fds, Deadline deadline) {
  WEFT_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, wire::EncodeFrame(msg));
  {
    std::unique_lock gate(send_mu);
    if (!WaitUntil(send_cv, gate, deadline, [&] { return !sending; })) {
      return Error(Code::kTimeout, "sending {}: another send held the connection past the deadline",
                   wire::MessageTypeName(T::kType));
    }
    sending = true;
  }
  struct Release {
    Impl* impl;
    ~Release() {
      std::lock_guard gate(impl->send_mu);
      impl->sending = false;
      impl->send_cv.notify_one();
    }
  } release{this};
  {
    std::lock_guard state(mu);
    if (!connected) return NotConnected();
  }
  size_t sent = 0;
  Status s = net::SendAll(sock.get(), bytes, fds, deadline, &sent);
  if (s.ok()) return s;
  if (s.code() == Code::kTimeout && sent == 0) return s.Annotate(wire::MessageTypeName(T::kType));
  // A torn frame or a dead socket: the stream cannot be used again.
  Status why = s.code() == Code::kTimeout
                   ? Error(Code::kUnavailable, "sending {} timed out mid-frame; connection dropped",
                           wire::MessageTypeName(T::kType))
                   : Status(Code::kUnavailable, s.message());
  ::shutdown(sock.get(), SHUT_RDWR);
  Disconnect(why);
  return s.code() == Code::kTimeout ? s : why;
}

void CoordinatorClient::Impl::Disconnect(Status why) {
  std::lock_guard lock(mu);
  if (!connected) return;
  connected = false;
  down = std::move(why);
  cv.notify_all();
}

// Our Join; checks locally what the coordinator would refuse as malformed.
Result<wire::Join> CoordinatorClient::Impl::MakeJoin(bool over_tcp) const {
  if (over_tcp && !opt.fds.empty())
    return Error(Code::kInvalidArgument, "{} descriptors cannot be sent to a tcp:// coordinator", opt.fds.size());
  if (opt.fds.size() > wire::kMaxFdsPerFrame)
    return Error(Code::kInvalidArgument, "{} descriptors, a Join carries at most {}", opt.fds.size(),
                 wire::kMaxFdsPerFrame);
  if (Status blobs = wire::CheckTransportBlobs(opt.segment.transports); !blobs.ok())
    return Status(Code::kInvalidArgument, blobs.message());
  wire::Join join;
  join.pool_name = opt.pool_name;
  join.rank_size = opt.rank_size;
  join.peer_name = opt.peer_name;
  join.pid = opt.segment.pid != 0 ? opt.segment.pid : static_cast<int32_t>(::getpid());
  join.segment_size = opt.segment.size;
  join.permissions = opt.segment.permissions;
  join.device_size = opt.segment.device_size;
  join.fd_count = static_cast<uint32_t>(opt.fds.size());
  join.transports = opt.segment.transports;
  return join;
}

Status CoordinatorClient::Impl::JoinPool(Deadline deadline) {
  WEFT_ASSIGN_OR_RETURN(net::ControlAddress address, net::ParseControlAddress(opt.socket_path));
  tcp = address.tcp;
  net::AuthOptions auth{opt.cluster_secret, opt.allow_unauthenticated};
  WEFT_ASSIGN_OR_RETURN(sock, net::ConnectControl(address, auth, deadline));
  WEFT_ASSIGN_OR_RETURN(wire::Join join, MakeJoin(tcp));
  WEFT_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, wire::EncodeFrame(join));
  Status s = net::SendAll(sock.get(), bytes, opt.fds, deadline);
  if (!s.ok()) return s.Annotate("sending Join");

  for (;;) {
    auto frame = reader.Next();
    if (!frame.ok()) return frame.status().Annotate("reading JoinAck");
    if (frame->has_value()) {
      net::ReceivedFrame& f = **frame;
      if (f.header.type != wire::MessageType::kJoinAck) {
        return Error(Code::kProtocol, "expected JoinAck from the coordinator, got {}",
                     wire::MessageTypeName(f.header.type));
      }
      WEFT_ASSIGN_OR_RETURN(wire::JoinAck ack, wire::Decode<wire::JoinAck>(f.payload));
      if (ack.status.code != Code::kOk) return ack.status.ToStatus();
      rank = ack.rank;
      barrier_epoch = ack.barrier_epoch;
      allgather_epoch = ack.allgather_epoch;
      live.insert(rank);
      answer_timeout = Millis(ack.peer_timeout_ms);
      if (tcp && ack.peer_timeout_ms > 0) {
        // A coordinator that vanished without a FIN (link down, machine off) is noticed when our
        // heartbeats stay unacknowledged for the pool's peer timeout.
        Status live_opts = net::SetStreamLiveness(sock.get(), Millis(ack.peer_timeout_ms));
        if (!live_opts.ok()) WEFT_LOG_WARN("coordinator connection: {}", live_opts.ToString());
      }
      if (ack.peer_timeout_ms > 0 && opt.heartbeat_interval >= std::chrono::milliseconds(ack.peer_timeout_ms)) {
        WEFT_LOG_WARN("heartbeat interval {} ms is not below the coordinator's peer timeout {} ms; this peer may be "
                      "declared down",
                      opt.heartbeat_interval.count(), ack.peer_timeout_ms);
      }
      return OkStatus();
    }
    pollfd p{sock.get(), POLLIN, 0};
    int rc = ::poll(&p, 1, deadline.left_ms_for_poll());
    if (rc < 0 && errno != EINTR) return ErrnoStatus("poll", errno);
    if (rc == 0 && deadline.expired()) {
      return Error(Code::kTimeout, "the coordinator at '{}' did not answer Join before the deadline",
                   opt.socket_path);
    }
    if (rc <= 0) continue;
    WEFT_ASSIGN_OR_RETURN(auto state, reader.ReadOnce(sock.get()));
    if (state == net::FrameReader::ReadState::kClosed) {
      return Error(Code::kUnavailable, "the coordinator at '{}' closed the connection during Join",
                   opt.socket_path);
    }
  }
}

void CoordinatorClient::Impl::Heartbeats() {
  std::unique_lock lock(stop_mu);
  for (;;) {
    if (stop_cv.wait_for(lock, opt.heartbeat_interval, [&] { return stop.load(std::memory_order_acquire); })) return;
    lock.unlock();
    CheckAnswers();
    // A heartbeat that cannot go out within an interval is late anyway; skip it.
    Status hb = SendMsg(wire::Heartbeat{}, {}, Deadline::After(opt.heartbeat_interval));
    lock.lock();
    if (!hb.ok() && hb.code() != Code::kTimeout) {
      // SendMsg has dropped the connection; the receive thread sees the socket shut down.
      WEFT_LOG_DEBUG("rank {}: heartbeat: {}", rank, hb.ToString());
      return;
    }
  }
}

// Marks a heartbeat as waiting for an answer, and the coordinator unreachable once the oldest
// unanswered one is older than answer_timeout.
void CoordinatorClient::Impl::CheckAnswers() {
  const auto now = Clock::now();
  std::lock_guard lock(mu);
  if (answer_timeout.count() <= 0 || !connected) return;
  if (!awaiting) {
    awaiting = true;
    first_unanswered = now;
    return;
  }
  if (unreachable || now - first_unanswered <= answer_timeout) return;
  // Bytes waiting unread mean an answer came and the receive thread has not read it yet (this
  // process was stopped or starved itself): not the coordinator's silence.
  pollfd waiting{sock.get(), POLLIN, 0};
  if (::poll(&waiting, 1, 0) > 0) return;
  unreachable = true;
  WEFT_LOG_WARN("rank {}: {}", rank, Unreachable().message());
  cv.notify_all();
}

// Any frame from the coordinator answers the heartbeats sent so far.
void CoordinatorClient::Impl::Heard() {
  std::lock_guard lock(mu);
  awaiting = false;
  if (!unreachable) return;
  unreachable = false;
  WEFT_LOG_WARN("rank {}: the coordinator at '{}' answers again", rank, opt.socket_path);
  cv.notify_all();
}

void CoordinatorClient::Impl::Run() {
  // Join may have read frames past the JoinAck already.
  Status s = DrainFrames();
  while (s.ok() && !stop.load(std::memory_order_acquire)) {
    pollfd p[2] = {{sock.get(), POLLIN, 0}, {wake.get(), POLLIN, 0}};
    int rc = ::poll(p, 2, 1000);
    if (rc < 0) {
      if (errno == EINTR) continue;
      s = ErrnoStatus("poll", errno);
      break;
    }
    if (p[1].revents != 0) break;  // woken to stop
    if (p[0].revents == 0) continue;
    auto state = reader.ReadOnce(sock.get());
    if (!state.ok()) {
      s = state.status();
      break;
    }
    s = DrainFrames();
    if (s.ok() && *state == net::FrameReader::ReadState::kClosed) {
      s = Error(Code::kUnavailable, "the coordinator closed the connection");
    }
  }
  if (!s.ok()) {
    if (s.code() != Code::kUnavailable) {
      WEFT_LOG_WARN("rank {}: dropping the coordinator connection: {}", rank, s.ToString());
      s = Status(Code::kUnavailable, s.ToString());
    }
    ::shutdown(sock.get(), SHUT_RDWR);
    Disconnect(s);
  }
}

Status CoordinatorClient::Impl::DrainFrames() {
  for (;;) {
    WEFT_ASSIGN_OR_RETURN(std::optional<net::ReceivedFrame> frame, reader.Next());
    if (!frame) return OkStatus();
    WEFT_RETURN_IF_ERROR(OnFrame(std::move(*frame)));
  }
}

Status CoordinatorClient::Impl::OnFrame(net::ReceivedFrame frame) {
  Heard();
  const wire::MessageType type = frame.header.type;
  if (type != wire::MessageType::kPeerJoined && !frame.fds.empty()) {
    return Error(Code::kProtocol, "{} descriptors attached to a {} frame", frame.fds.size(),
                 wire::MessageTypeName(type));
  }
  switch (type) {
    case wire::MessageType::kPeerJoined: {
      WEFT_ASSIGN_OR_RETURN(wire::PeerJoined m, wire::Decode<wire::PeerJoined>(frame.payload));
      if (frame.fds.size() != m.fd_count) {
        return Error(Code::kProtocol, "PeerJoined announces {} descriptors but {} came with it", m.fd_count,
                     frame.fds.size());
      }
      SegmentDescriptor d;
      d.rank = m.rank;
      d.peer_name = std::move(m.peer_name);
      d.pid = m.pid;
      d.size = m.size;
      d.permissions = m.permissions;
      d.device_size = m.device_size;
      d.transports = std::move(m.transports);
      // The owner maps the peer's memory first: a WaitForPeers that counts this peer must find
      // its slices attached (mapping a device slice takes milliseconds).
      if (on_joined) Guarded("OnPeerJoined", [&] { on_joined(std::move(d), std::move(frame.fds)); });
      {
        std::lock_guard lock(mu);
        live.insert(m.rank);
        cv.notify_all();
      }
      return OkStatus();
    }
    case wire::MessageType::kPeerGone: {
      WEFT_ASSIGN_OR_RETURN(wire::PeerGone m, wire::Decode<wire::PeerGone>(frame.payload));
      {
        std::lock_guard lock(mu);
        live.erase(m.rank);
        cv.notify_all();
      }
      if (on_gone) Guarded("OnPeerGone", [&] { on_gone(m.rank, m.clean); });
      return OkStatus();
    }
    case wire::MessageType::kBarrierDone: {
      WEFT_ASSIGN_OR_RETURN(wire::BarrierDone m, wire::Decode<wire::BarrierDone>(frame.payload));
      std::lock_guard lock(mu);
      if (m.epoch != barrier_epoch) return OkStatus();  // an answer to a barrier we no longer wait for
      barrier_results[m.epoch] = m.status.ToStatus();
      Prune(barrier_results);
      ++barrier_epoch;
      barrier_entered = false;
      cv.notify_all();
      return OkStatus();
    }
    case wire::MessageType::kAllgatherDone: {
      WEFT_ASSIGN_OR_RETURN(wire::AllgatherDone m, wire::Decode<wire::AllgatherDone>(frame.payload));
      std::lock_guard lock(mu);
      if (m.epoch != allgather_epoch) return OkStatus();
      if (m.status.code == Code::kOk) {
        std::vector<std::pair<uint32_t, std::vector<uint8_t>>> out;
        out.reserve(m.entries.size());
        for (auto& e : m.entries) out.emplace_back(e.rank, std::move(e.data));
        allgather_results.insert_or_assign(m.epoch, GatherResult(std::move(out)));
      } else {
        allgather_results.insert_or_assign(m.epoch, GatherResult(m.status.ToStatus()));
      }
      Prune(allgather_results);
      ++allgather_epoch;
      allgather_entered = false;
      cv.notify_all();
      return OkStatus();
    }
    case wire::MessageType::kHeartbeatAck:
      return wire::Decode<wire::HeartbeatAck>(frame.payload).status();
    case wire::MessageType::kCallReply: {
      WEFT_ASSIGN_OR_RETURN(wire::CallReply m, wire::Decode<wire::CallReply>(frame.payload));
      std::lock_guard lock(mu);
      auto it = calls.find(m.request_id);
      if (it == calls.end()) return OkStatus();  // the caller gave up (deadline)
      if (m.status.code == Code::kOk) {
        it->second.emplace(std::move(m.payload));
      } else {
        it->second.emplace(m.status.ToStatus());
      }
      replies.fetch_add(1, std::memory_order_release);
      cv.notify_all();
      return OkStatus();
    }
    default:
      return Error(Code::kProtocol, "unexpected {} from the coordinator", wire::MessageTypeName(type));
  }
}

void CoordinatorClient::Impl::StopThread() {
  {
    std::lock_guard lock(stop_mu);
    stop.store(true, std::memory_order_release);
  }
  stop_cv.notify_all();
  if (heartbeat_thread.joinable()) heartbeat_thread.join();
  uint64_t one = 1;
  [[maybe_unused]] ssize_t w = ::write(wake.get(), &one, sizeof one);
  // A callback on the receive thread may call Leave(); that thread cannot wait for itself.
  if (thread.joinable() && thread.get_id() != std::this_thread::get_id()) thread.join();
}

Result<std::unique_ptr<CoordinatorClient>> CoordinatorClient::Join(JoinOptions options, OnPeerJoined on_joined,
                                                                   OnPeerGone on_gone) {
  if (options.pool_name.size() > wire::kMaxNameLength || options.peer_name.size() > wire::kMaxNameLength) {
    return Error(Code::kInvalidArgument, "pool and peer names are limited to {} bytes", wire::kMaxNameLength);
  }
  if (options.heartbeat_interval.count() <= 0) {
    return Error(Code::kInvalidArgument, "heartbeat_interval must be positive");
  }
  auto impl = std::make_unique<Impl>();
  impl->opt = std::move(options);
  impl->on_joined = std::move(on_joined);
  impl->on_gone = std::move(on_gone);
  impl->wake = net::UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!impl->wake.valid()) return ErrnoStatus("eventfd", errno);
  WEFT_RETURN_IF_ERROR(impl->JoinPool(impl->opt.deadline)
                           .Annotate(fmt::format("joining pool '{}' at '{}'", impl->opt.pool_name,
                                                 impl->opt.socket_path)));
  Impl* raw = impl.get();
  try {
    impl->thread = std::thread([raw] { raw->Run(); });
  } catch (const std::system_error& e) {
    return Error(Code::kInternal, "cannot start the receive thread: {}", e.what());
  }
  try {
    impl->heartbeat_thread = std::thread([raw] { raw->Heartbeats(); });
  } catch (const std::system_error& e) {
    impl->StopThread();
    return Error(Code::kInternal, "cannot start the heartbeat thread: {}", e.what());
  }
  return std::unique_ptr<CoordinatorClient>(new CoordinatorClient(std::move(impl)));
}

CoordinatorClient::CoordinatorClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

CoordinatorClient::~CoordinatorClient() {
  if (!impl_) return;
  (void)Leave();
  impl_->StopThread();
  if (impl_->thread.joinable()) impl_->thread.detach();  // only when destroyed from a callback
}

uint32_t CoordinatorClient::rank() const { return impl_->rank; }

bool CoordinatorClient::connected() const {
  std::lock_guard lock(impl_->mu);
  return impl_->connected;
}

bool CoordinatorClient::reachable() const {
  std::lock_guard lock(impl_->mu);
  return impl_->connected && !impl_->unreachable;
}

Result<std::vector<uint32_t>> CoordinatorClient::WaitForPeers(uint32_t count, Deadline deadline) {
  Impl& m = *impl_;
  std::unique_lock lock(m.mu);
  WaitUntil(m.cv, lock, deadline, [&] { return m.Interrupting() || m.live.size() >= count; });
  if (m.live.size() >= count && m.connected) return std::vector<uint32_t>(m.live.begin(), m.live.end());
  if (m.Interrupting()) return m.Interrupted();
  return Error(Code::kTimeout, "only {} of {} peers joined before the deadline", m.live.size(), count);
}

Status CoordinatorClient::Barrier(Deadline deadline) {
  Impl& m = *impl_;
  std::unique_lock lock(m.mu);
  WEFT_RETURN_IF_ERROR(m.CannotCall());
  const uint64_t epoch = m.barrier_epoch;
  if (!m.barrier_entered) {
    // Entered once per epoch: after a timeout the next Barrier waits on the same epoch again.
    m.barrier_entered = true;
    lock.unlock();
    Status s = m.SendMsg(wire::BarrierEnter{epoch}, {}, deadline);
    lock.lock();
    if (!s.ok()) {
      if (m.barrier_epoch == epoch) m.barrier_entered = false;
      return s.Annotate(fmt::format("barrier epoch {}", epoch));
    }
  }
  WaitUntil(m.cv, lock, deadline, [&] { return m.Interrupting() || m.barrier_results.count(epoch) != 0; });
  if (auto it = m.barrier_results.find(epoch); it != m.barrier_results.end()) return it->second;
  if (m.Interrupting()) return m.Interrupted();
  return Error(Code::kTimeout, "barrier epoch {}: not every live peer entered before the deadline", epoch);
}

Result<std::vector<std::pair<uint32_t, std::vector<uint8_t>>>> CoordinatorClient::Allgather(
    std::span<const uint8_t> mine, Deadline deadline) {
  Impl& m = *impl_;
  if (mine.size() + kCallOverhead > wire::kMaxFramePayload) {
    return Error(Code::kInvalidArgument, "allgather contribution of {} bytes exceeds the frame limit of {}",
                 mine.size(), wire::kMaxFramePayload);
  }
  std::unique_lock lock(m.mu);
  WEFT_RETURN_IF_ERROR(m.CannotCall());
  const uint64_t epoch = m.allgather_epoch;
  if (!m.allgather_entered) {
    m.allgather_entered = true;
    lock.unlock();
    wire::AllgatherEnter enter{epoch, std::vector<uint8_t>(mine.begin(), mine.end())};
    Status s = m.SendMsg(enter, {}, deadline);
    lock.lock();
    if (!s.ok()) {
      if (m.allgather_epoch == epoch) m.allgather_entered = false;
      return s.Annotate(fmt::format("allgather epoch {}", epoch));
    }
  }
  WaitUntil(m.cv, lock, deadline, [&] { return m.Interrupting() || m.allgather_results.count(epoch) != 0; });
  if (auto it = m.allgather_results.find(epoch); it != m.allgather_results.end()) return it->second;
  if (m.Interrupting()) return m.Interrupted();
  return Error(Code::kTimeout, "allgather epoch {}: not every live peer entered before the deadline", epoch);
}

Result<std::vector<uint8_t>> CoordinatorClient::Call(std::span<const uint8_t> request, Deadline deadline) {
  Impl& m = *impl_;
  if (request.size() + kCallOverhead > wire::kMaxFramePayload) {
    return Error(Code::kInvalidArgument, "call request of {} bytes exceeds the frame limit of {}", request.size(),
                 wire::kMaxFramePayload);
  }
  uint64_t id;
  {
    std::lock_guard lock(m.mu);
    WEFT_RETURN_IF_ERROR(m.CannotCall());
    id = m.next_call_id++;
    m.calls.emplace(id, std::nullopt);
  }
  wire::CallRequest req{id, std::vector<uint8_t>(request.begin(), request.end())};
  Status s = m.SendMsg(req, {}, deadline);
  std::unique_lock lock(m.mu);
  if (!s.ok()) {
    m.calls.erase(id);
    return s.Annotate("service call");
  }
  m.WaitForReply(lock, id, deadline);
  auto node = m.calls.extract(id);
  if (node.mapped().has_value()) return std::move(*node.mapped());
  if (m.Interrupting()) return m.Interrupted();
  return Error(Code::kTimeout, "service call {}: no reply before the deadline", id);
}

void CoordinatorClient::Impl::WaitForReply(std::unique_lock<std::mutex>& lock, uint64_t id, Deadline deadline) {
  auto done = [&] { return Interrupting() || calls[id].has_value(); };
  // A reply usually comes within tens of µs (the coordinator answers on its loop thread). Being
  // woken through cv costs the caller a futex wake and a trip through the scheduler, which on a
  // small VM was most of a round trip (docs/performance.md, the store section); polling the reply
  // count first avoids it. Yielding between polls keeps the receive thread runnable where cores
  // are few.
  if (opt.reply_spin.count() > 0 && !done()) {
    uint64_t seen = replies.load(std::memory_order_acquire);
    lock.unlock();
    const auto until = std::min(Clock::now() + opt.reply_spin, deadline.at());
    while (Clock::now() < until) {
      const uint64_t now_seen = replies.load(std::memory_order_acquire);
      if (now_seen == seen) {
        std::this_thread::yield();
        continue;
      }
      seen = now_seen;
      std::lock_guard check(mu);
      if (calls[id].has_value()) break;
    }
    lock.lock();
  }
  WaitUntil(cv, lock, deadline, done);
}

Status CoordinatorClient::Leave() {
  Impl& m = *impl_;
  {
    std::lock_guard lock(m.mu);
    if (m.left) return OkStatus();
    m.left = true;
  }
  // Best effort: a coordinator that is already gone has nothing to be told.
  Status sent = m.SendMsg(wire::Leave{}, {}, Deadline::After(std::chrono::seconds(1)));
  if (sent.ok() && m.thread.get_id() != std::this_thread::get_id()) {
    // The coordinator closes the connection once it has handled the Leave; waiting for that
    // means the others are being told by the time Leave returns.
    std::unique_lock lock(m.mu);
    WaitUntil(m.cv, lock, Deadline::After(std::chrono::seconds(2)), [&] { return !m.connected; });
  }
  ::shutdown(m.sock.get(), SHUT_RDWR);
  m.StopThread();
  std::lock_guard lock(m.mu);
  if (m.connected) {
    m.connected = false;
    m.down = Status(Code::kUnavailable, "this peer left the pool");
  }
  m.cv.notify_all();
  return OkStatus();
}

}  // namespace weft::meta
