// Unix stream sockets for the control plane: listen, connect with a deadline, send a whole
// frame with file descriptors attached (SCM_RIGHTS), and reassemble frames from the byte
// stream together with the descriptors that came with them.
//
// Descriptor placement rule, which both ends follow: the descriptors of a frame ride on the
// sendmsg that carries the frame's first bytes, and that sendmsg carries bytes of no other
// frame. Linux stops a stream recvmsg right after the first segment with descriptors, so the
// descriptors a recvmsg returns belong to the frame that holds the last byte it returned.
//
// Every socket made here is non-blocking and close-on-exec; sends use MSG_NOSIGNAL, so a
// closed peer is an error value, never SIGPIPE.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/byte_buffer.h"
#include "base/clock.h"
#include "base/result.h"
#include "wire/control.h"

namespace weft::net {

// Owns a file descriptor; closes it once.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.Release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) Reset(o.Release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void Reset(int fd = -1);
  // A close-on-exec duplicate.
  Result<UniqueFd> Dup() const;

 private:
  int fd_ = -1;
};

// Binds and listens on `path`. An existing file there is replaced only if it is a socket that
// no server answers on; ALREADY_EXISTS if one does (or if the path is not a socket).
// INVALID_ARGUMENT if the path does not fit in sockaddr_un. The socket file is made 0600.
Result<UniqueFd> ListenUnix(const std::string& path, int backlog = 128);

// UNAVAILABLE if nothing listens at `path`; TIMEOUT if the server's backlog stays full past
// the deadline.
Result<UniqueFd> ConnectUnix(const std::string& path, Deadline deadline);

// One pending connection, or an invalid UniqueFd when there is none right now.
Result<UniqueFd> AcceptUnix(int listen_fd);

// One sendmsg without blocking: the bytes accepted (0 if the socket is full). The fds, if any,
// ride along and are sent iff the return is > 0. UNAVAILABLE if the other end has closed.
Result<size_t> SendSome(int fd, std::span<const uint8_t> bytes, std::span<const int> fds);

// Sends all bytes (fds on the first sendmsg), waiting for room until the deadline. On error
// *sent says how many bytes went out: if it is neither 0 nor bytes.size() the stream is torn
// and the connection must be dropped.
Status SendAll(int fd, std::span<const uint8_t> bytes, std::span<const int> fds, Deadline deadline,
               size_t* sent = nullptr);

struct ReceivedFrame {
  wire::FrameHeader header;
  std::vector<uint8_t> payload;
  std::vector<UniqueFd> fds;  // received with the frame (SCM_RIGHTS), owned now
};

class FrameReader;

// A side channel between two processes of one tool or test (passing a device segment's fd with
// a short text): the text goes as the payload of one control frame, the fds ride along.
Status SendTextFrame(int fd, std::string_view text, std::span<const int> fds, Deadline deadline);
// The next whole frame on a socket, waiting for it until the deadline (TIMEOUT); PEER_DOWN when
// the other end closed first.
Result<ReceivedFrame> ReceiveFrame(int fd, FrameReader& reader, Deadline deadline);

// Reassembles frames from a stream. Bytes come from ReadOnce (a socket) or Feed (tests and
// fuzzing). A bad header is reported as soon as its 12 bytes are in, before any payload is
// buffered, so a garbage sender is found at once and cannot make us allocate more than one
// frame's worth.
class FrameReader {
 public:
  enum class ReadState { kData, kWouldBlock, kClosed };

  // One recvmsg (MSG_CMSG_CLOEXEC). IO on a socket error; PROTOCOL if descriptors were cut off
  // (MSG_CTRUNC) or too many are waiting for their frame.
  Result<ReadState> ReadOnce(int fd);
  // As if one recvmsg had returned these bytes and descriptors.
  Status Feed(std::span<const uint8_t> bytes, std::vector<UniqueFd> fds = {});

  // The next complete frame; nullopt if more bytes are needed; PROTOCOL for a malformed header
  // or descriptors that arrived in the middle of a frame. After an error the stream is unusable.
  Result<std::optional<ReceivedFrame>> Next();

  size_t buffered() const { return buf_.size() - start_; }
  // Frames declaring a larger payload are PROTOCOL as soon as their header is in (default and
  // ceiling: wire::kMaxFramePayload). A server lowers it for connections it has not admitted yet,
  // so that a stranger cannot make it buffer a large frame.
  void set_max_payload(uint32_t bytes) { max_payload_ = bytes; }

 private:
  struct FdBatch {
    uint64_t begin;  // stream offsets of the bytes of the recvmsg that brought them
    uint64_t end;
    std::vector<UniqueFd> fds;
  };

  void Compact();

  ByteBuffer buf_;  // grown by a read chunk before each recvmsg: not zeroed first
  size_t start_ = 0;        // index in buf_ of the first unconsumed byte
  uint64_t consumed_ = 0;   // stream offset of buf_[start_]
  std::optional<wire::FrameHeader> header_;  // of the frame being reassembled
  uint32_t max_payload_ = wire::kMaxFramePayload;
  std::deque<FdBatch> fd_batches_;
  Status error_;
};

}  // namespace weft::net
