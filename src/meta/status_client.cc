#include "meta/status_client.h"

#include <poll.h>

#include <cerrno>

#include "net/control_stream.h"
#include "net/unix_socket.h"

namespace weft::meta {

namespace {

// The next frame on the stream, or why none came before the deadline.
Result<net::ReceivedFrame> NextFrame(int sock, net::FrameReader& reader, const std::string& address,
                                     Deadline deadline) {
  for (;;) {
    WEFT_ASSIGN_OR_RETURN(std::optional<net::ReceivedFrame> frame, reader.Next());
    if (frame) return std::move(*frame);
    pollfd p{sock, POLLIN, 0};
    int rc = ::poll(&p, 1, deadline.left_ms_for_poll());
    if (rc < 0 && errno != EINTR) return ErrnoStatus("poll", errno);
    if (rc == 0 && deadline.expired()) {
      return Error(Code::kTimeout, "the coordinator at '{}' did not answer the status request before the deadline",
                   address);
    }
    if (rc <= 0) continue;
    WEFT_ASSIGN_OR_RETURN(auto state, reader.ReadOnce(sock));
    if (state == net::FrameReader::ReadState::kClosed && reader.buffered() == 0) {
      return Error(Code::kUnavailable,
                   "the coordinator at '{}' closed the connection without answering the status request (a "
                   "coordinator older than control protocol {} does not answer it)",
                   address, wire::kControlVersion);
    }
  }
}

Result<wire::StatusReply> AskPage(int sock, net::FrameReader& reader, const StatusQuery& query, uint32_t first_rank) {
  WEFT_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, wire::EncodeFrame(wire::StatusRequest{first_rank, query.page_size}));
  WEFT_RETURN_IF_ERROR(net::SendAll(sock, bytes, {}, query.deadline).Annotate("sending StatusRequest"));
  WEFT_ASSIGN_OR_RETURN(net::ReceivedFrame frame, NextFrame(sock, reader, query.address, query.deadline));
  if (frame.header.type != wire::MessageType::kStatusReply) {
    return Error(Code::kProtocol, "expected StatusReply from the coordinator, got {}",
                 wire::MessageTypeName(frame.header.type));
  }
  WEFT_ASSIGN_OR_RETURN(wire::StatusReply reply, wire::Decode<wire::StatusReply>(frame.payload));
  if (reply.status.code != Code::kOk) return reply.status.ToStatus().Annotate("the coordinator refused");
  // Pages only ever move forward, so a coordinator cannot keep us paging forever.
  if (reply.more && (reply.peers.empty() || reply.next_rank <= reply.peers.back().rank)) {
    return Error(Code::kProtocol, "status pages do not advance (next rank {} after {} rows)", reply.next_rank,
                 reply.peers.size());
  }
  return reply;
}

}  // namespace

Result<wire::StatusReply> QueryPoolStatus(const StatusQuery& query) {
  if (query.page_size == 0 || query.page_size > wire::kMaxStatusPeersPerReply) {
    return Error(Code::kInvalidArgument, "page_size {} is not 1..{}", query.page_size,
                 wire::kMaxStatusPeersPerReply);
  }
  WEFT_ASSIGN_OR_RETURN(net::ControlAddress address, net::ParseControlAddress(query.address));
  // Said here, before ConnectControl would say it of "joining": status does not join.
  if (address.tcp) {
    WEFT_RETURN_IF_ERROR(net::CheckAuthPolicy(query.auth).Annotate(
        fmt::format("asking the coordinator at {} for status", query.address)));
  }
  WEFT_ASSIGN_OR_RETURN(net::UniqueFd sock, net::ConnectControl(address, query.auth, query.deadline));
  net::FrameReader reader;
  WEFT_ASSIGN_OR_RETURN(wire::StatusReply all, AskPage(sock.get(), reader, query, 0));
  while (all.more) {
    WEFT_ASSIGN_OR_RETURN(wire::StatusReply page, AskPage(sock.get(), reader, query, all.next_rank));
    for (wire::StatusPeer& row : page.peers) {
      if (!all.peers.empty() && row.rank <= all.peers.back().rank) {
        return Error(Code::kProtocol, "status row for rank {} came after rank {}", row.rank, all.peers.back().rank);
      }
      all.peers.push_back(std::move(row));
    }
    // The latest figures win; the rows gathered so far stay.
    page.peers = std::move(all.peers);
    all = std::move(page);
  }
  return all;
}

}  // namespace weft::meta
