#include "net/unix_socket.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

namespace weft::net {

namespace {

constexpr size_t kReadChunk = 64u << 10;
// Descriptor batches may wait for the rest of their frame; a sender that keeps attaching
// descriptors without completing frames is cut off here rather than exhausting our fd table.
constexpr size_t kMaxPendingFdBatches = 16;
// Room for more descriptors than any valid frame carries, so an excess is seen (and closed)
// rather than silently truncated.
constexpr size_t kCmsgFds = 2 * wire::kMaxFdsPerFrame;

Result<sockaddr_un> MakeAddress(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty()) return Error(Code::kInvalidArgument, "unix socket path is empty");
  if (path.size() >= sizeof(addr.sun_path)) {
    return Error(Code::kInvalidArgument, "unix socket path '{}' is {} bytes; the limit is {}", path, path.size(),
                 sizeof(addr.sun_path) - 1);
  }
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

Result<UniqueFd> NewSocket() {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus("socket(AF_UNIX)", errno);
  return UniqueFd(fd);
}

// Waits for `events` on fd until the deadline. TIMEOUT when it passes.
Status WaitFor(int fd, short events, Deadline deadline, std::string_view what) {
  for (;;) {
    pollfd p{fd, events, 0};
    int ms = deadline.left_ms_for_poll();
    int rc = ::poll(&p, 1, ms);
    if (rc > 0) return OkStatus();
    if (rc == 0) {
      if (deadline.expired()) return Error(Code::kTimeout, "{}: deadline passed", what);
      continue;  // poll rounds down to whole milliseconds
    }
    if (errno != EINTR) return ErrnoStatus("poll", errno);
  }
}

bool IsPeerClosed(int err) { return err == EPIPE || err == ECONNRESET || err == ENOTCONN; }

}  // namespace

void UniqueFd::Reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Result<UniqueFd> UniqueFd::Dup() const {
  int fd = ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus("fcntl(F_DUPFD_CLOEXEC)", errno);
  return UniqueFd(fd);
}

Result<UniqueFd> ListenUnix(const std::string& path, int backlog) {
  WEFT_ASSIGN_OR_RETURN(sockaddr_un addr, MakeAddress(path));
  WEFT_ASSIGN_OR_RETURN(UniqueFd sock, NewSocket());
  for (int attempt = 0;; ++attempt) {
    if (::bind(sock.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) break;
    int err = errno;
    if (err != EADDRINUSE || attempt > 0) return ErrnoStatus(fmt::format("bind({})", path), err);
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode)) {
      return Error(Code::kAlreadyExists, "'{}' exists and is not a socket; remove it or choose another path", path);
    }
    // Connecting tells a live server from a file left by a process that died.
    auto probe = ConnectUnix(path, Deadline::After(std::chrono::milliseconds(500)));
    if (probe.ok() || probe.status().code() == Code::kTimeout) {
      return Error(Code::kAlreadyExists, "a server is already listening on '{}'", path);
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return ErrnoStatus(fmt::format("unlink stale socket {}", path), errno);
    }
  }
  if (::chmod(path.c_str(), 0600) != 0) return ErrnoStatus(fmt::format("chmod({})", path), errno);
  if (::listen(sock.get(), backlog) != 0) return ErrnoStatus(fmt::format("listen({})", path), errno);
  return sock;
}

Result<UniqueFd> ConnectUnix(const std::string& path, Deadline deadline) {
  WEFT_ASSIGN_OR_RETURN(sockaddr_un addr, MakeAddress(path));
  for (;;) {
    WEFT_ASSIGN_OR_RETURN(UniqueFd sock, NewSocket());
    if (::connect(sock.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return sock;
    int err = errno;
    if (err == EINPROGRESS) {
      WEFT_RETURN_IF_ERROR(WaitFor(sock.get(), POLLOUT, deadline, fmt::format("connect({})", path)));
      int so_error = 0;
      socklen_t len = sizeof so_error;
      if (::getsockopt(sock.get(), SOL_SOCKET, SO_ERROR, &so_error, &len) != 0) {
        return ErrnoStatus("getsockopt(SO_ERROR)", errno);
      }
      if (so_error == 0) return sock;
      err = so_error;
    }
    if (err == ENOENT || err == ECONNREFUSED) {
      return Error(Code::kUnavailable, "nothing listens on '{}' ({}); is the coordinator running?", path,
                   std::strerror(err));
    }
    if (err != EAGAIN && err != EINTR) return ErrnoStatus(fmt::format("connect({})", path), err);
    // EAGAIN: the server's backlog is full; it drains as the server accepts.
    if (deadline.expired()) {
      return Error(Code::kTimeout, "connect({}): the server did not accept before the deadline", path);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

Result<UniqueFd> AcceptUnix(int listen_fd) {
  for (;;) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) return UniqueFd(fd);
    int err = errno;
    if (err == EINTR) continue;
    // A connection that died in the queue is not our error.
    if (err == EAGAIN || err == EWOULDBLOCK || err == ECONNABORTED) return UniqueFd();
    return ErrnoStatus("accept4", err);
  }
}

Result<size_t> SendSome(int fd, std::span<const uint8_t> bytes, std::span<const int> fds) {
  if (fds.size() > wire::kMaxFdsPerFrame) {
    return Error(Code::kInvalidArgument, "{} descriptors on one frame; the limit is {}", fds.size(),
                 wire::kMaxFdsPerFrame);
  }
  if (!fds.empty() && bytes.empty()) return Error(Code::kInvalidArgument, "descriptors need at least one byte");
  iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * wire::kMaxFdsPerFrame)];
  if (!fds.empty()) {
    std::memset(control, 0, sizeof control);
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return static_cast<size_t>(n);
    int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) return size_t{0};
    if (IsPeerClosed(err)) return Error(Code::kUnavailable, "connection closed by the other end ({})", std::strerror(err));
    return ErrnoStatus("sendmsg", err);
  }
}

Status SendAll(int fd, std::span<const uint8_t> bytes, std::span<const int> fds, Deadline deadline, size_t* sent) {
  size_t done = 0;
  if (sent) *sent = 0;
  while (done < bytes.size()) {
    auto n = SendSome(fd, bytes.subspan(done), done == 0 ? fds : std::span<const int>());
    if (!n.ok()) return n.status();
    done += *n;
    if (sent) *sent = done;
    if (*n == 0) WEFT_RETURN_IF_ERROR(WaitFor(fd, POLLOUT, deadline, "send"));
  }
  return OkStatus();
}

Result<FrameReader::ReadState> FrameReader::ReadOnce(int fd) {
  if (!error_.ok()) return error_;
  Compact();
  size_t old = buf_.size();
  buf_.resize(old + kReadChunk);
  iovec iov{buf_.data() + old, kReadChunk};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kCmsgFds)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  int err = errno;
  buf_.resize(old + (n > 0 ? static_cast<size_t>(n) : 0));

  // Take ownership of every descriptor first, so none leaks whatever happens next.
  std::vector<UniqueFd> fds;
  if (n >= 0) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int received;
        std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        fds.emplace_back(received);
      }
    }
  }
  if (n < 0) {
    if (err == EAGAIN || err == EWOULDBLOCK) return ReadState::kWouldBlock;
    if (IsPeerClosed(err)) return ReadState::kClosed;
    return ErrnoStatus("recvmsg", err);
  }
  if (msg.msg_flags & MSG_CTRUNC) {
    error_ = Error(Code::kProtocol, "more descriptors than a frame may carry (truncated control data)");
    return error_;
  }
  if (n == 0) return ReadState::kClosed;
  if (!fds.empty()) {
    uint64_t begin = consumed_ + (old - start_);
    if (fd_batches_.size() >= kMaxPendingFdBatches) {
      error_ = Error(Code::kProtocol, "too many descriptor batches waiting for their frames");
      return error_;
    }
    fd_batches_.push_back({begin, begin + static_cast<uint64_t>(n), std::move(fds)});
  }
  return ReadState::kData;
}

Status FrameReader::Feed(std::span<const uint8_t> bytes, std::vector<UniqueFd> fds) {
  if (!error_.ok()) return error_;
  if (!fds.empty() && bytes.empty()) {
    error_ = Error(Code::kProtocol, "descriptors arrived without bytes");
    return error_;
  }
  Compact();
  uint64_t begin = consumed_ + buffered();
  buf_.insert(buf_.end(), bytes.begin(), bytes.end());
  if (!fds.empty()) {
    if (fd_batches_.size() >= kMaxPendingFdBatches) {
      error_ = Error(Code::kProtocol, "too many descriptor batches waiting for their frames");
      return error_;
    }
    fd_batches_.push_back({begin, begin + bytes.size(), std::move(fds)});
  }
  return OkStatus();
}

Result<std::optional<ReceivedFrame>> FrameReader::Next() {
  if (!error_.ok()) return error_;
  if (!header_) {
    if (buffered() < wire::kFrameHeaderSize) return std::optional<ReceivedFrame>();
    auto h = wire::DecodeFrameHeader(std::span<const uint8_t>(buf_).subspan(start_, wire::kFrameHeaderSize));
    if (!h.ok()) {
      error_ = h.status();
      return error_;
    }
    if (h->payload_size > max_payload_) {
      error_ = Error(Code::kProtocol, "a {} frame of {} bytes where at most {} are accepted now",
                     wire::MessageTypeName(h->type), h->payload_size, max_payload_);
      return error_;
    }
    header_ = *h;
  }
  size_t total = wire::kFrameHeaderSize + header_->payload_size;
  if (buffered() < total) return std::optional<ReceivedFrame>();

  uint64_t frame_begin = consumed_;
  uint64_t frame_end = consumed_ + total;
  ReceivedFrame frame;
  frame.header = *header_;
  frame.payload.assign(buf_.begin() + static_cast<std::ptrdiff_t>(start_ + wire::kFrameHeaderSize),
                       buf_.begin() + static_cast<std::ptrdiff_t>(start_ + total));
  while (!fd_batches_.empty() && fd_batches_.front().end <= frame_end) {
    FdBatch& batch = fd_batches_.front();
    if (batch.begin > frame_begin || batch.end <= frame_begin) {
      error_ = Error(Code::kProtocol, "{} descriptors arrived in the middle of a {} frame", batch.fds.size(),
                     wire::MessageTypeName(frame.header.type));
      return error_;
    }
    for (UniqueFd& fd : batch.fds) frame.fds.push_back(std::move(fd));
    fd_batches_.pop_front();
  }
  if (frame.fds.size() > wire::kMaxFdsPerFrame) {
    error_ = Error(Code::kProtocol, "{} descriptors on one frame; the limit is {}", frame.fds.size(),
                   wire::kMaxFdsPerFrame);
    return error_;
  }
  start_ += total;
  consumed_ += total;
  header_.reset();
  return std::optional<ReceivedFrame>(std::move(frame));
}

void FrameReader::Compact() {
  if (start_ == buf_.size()) {
    buf_.clear();
    start_ = 0;
  } else if (start_ >= kReadChunk && start_ * 2 >= buf_.size()) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(start_));
    start_ = 0;
  }
}

Status SendTextFrame(int fd, std::string_view text, std::span<const int> fds, Deadline deadline) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(text.data());
  WEFT_ASSIGN_OR_RETURN(auto frame, wire::MakeFrame(wire::MessageType::kHeartbeat, {bytes, text.size()}));
  return SendAll(fd, frame, fds, deadline);
}

Result<ReceivedFrame> ReceiveFrame(int fd, FrameReader& reader, Deadline deadline) {
  for (;;) {
    WEFT_ASSIGN_OR_RETURN(auto next, reader.Next());
    if (next) return std::move(*next);
    WEFT_ASSIGN_OR_RETURN(auto state, reader.ReadOnce(fd));
    if (state == FrameReader::ReadState::kClosed) return Error(Code::kPeerDown, "the other process closed the socket");
    if (state != FrameReader::ReadState::kWouldBlock) continue;
    if (deadline.expired()) return Error(Code::kTimeout, "no frame came before the deadline");
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, 10);
  }
}

}  // namespace weft::net
