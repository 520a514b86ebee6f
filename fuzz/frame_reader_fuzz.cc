// Fuzzes net::FrameReader, the reassembler every control connection runs: the input is cut into
// reads of fuzzer-chosen sizes, some carrying descriptors, and every frame that comes out must
// match its header and carry at most kMaxFdsPerFrame descriptors. Frames that come out are also
// decoded as their type says, so the whole receive path is covered.
#include <fuzzer/FuzzedDataProvider.h>
#include <sys/eventfd.h>

#include "net/unix_socket.h"
#include "wire/control.h"

namespace {

using namespace weft;

void DecodeAs(const net::ReceivedFrame& f) {
  std::span<const uint8_t> p(f.payload);
  switch (f.header.type) {
    case wire::MessageType::kJoin: (void)wire::Decode<wire::Join>(p); break;
    case wire::MessageType::kJoinAck: (void)wire::Decode<wire::JoinAck>(p); break;
    case wire::MessageType::kPeerJoined: (void)wire::Decode<wire::PeerJoined>(p); break;
    case wire::MessageType::kPeerGone: (void)wire::Decode<wire::PeerGone>(p); break;
    case wire::MessageType::kHeartbeat: (void)wire::Decode<wire::Heartbeat>(p); break;
    case wire::MessageType::kHeartbeatAck: (void)wire::Decode<wire::HeartbeatAck>(p); break;
    case wire::MessageType::kLeave: (void)wire::Decode<wire::Leave>(p); break;
    case wire::MessageType::kBarrierEnter: (void)wire::Decode<wire::BarrierEnter>(p); break;
    case wire::MessageType::kBarrierDone: (void)wire::Decode<wire::BarrierDone>(p); break;
    case wire::MessageType::kAllgatherEnter: (void)wire::Decode<wire::AllgatherEnter>(p); break;
    case wire::MessageType::kAllgatherDone: (void)wire::Decode<wire::AllgatherDone>(p); break;
    case wire::MessageType::kCallRequest: (void)wire::Decode<wire::CallRequest>(p); break;
    case wire::MessageType::kCallReply: (void)wire::Decode<wire::CallReply>(p); break;
    case wire::MessageType::kStatusRequest: (void)wire::Decode<wire::StatusRequest>(p); break;
    case wire::MessageType::kStatusReply: (void)wire::Decode<wire::StatusReply>(p); break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  net::FrameReader reader;
  while (in.remaining_bytes() > 0) {
    const size_t chunk = in.ConsumeIntegralInRange<size_t>(0, 4096);
    const bool with_fds = in.ConsumeIntegralInRange<uint8_t>(0, 7) == 0;
    const uint8_t nfds = with_fds ? in.ConsumeIntegralInRange<uint8_t>(1, 10) : 0;
    std::vector<uint8_t> bytes = in.ConsumeBytes<uint8_t>(chunk);
    std::vector<net::UniqueFd> fds;
    for (uint8_t i = 0; i < nfds; ++i) fds.emplace_back(::eventfd(0, EFD_CLOEXEC));
    if (!reader.Feed(bytes, std::move(fds)).ok()) return 0;
    for (;;) {
      auto f = reader.Next();
      if (!f.ok()) {
        if (f.status().code() != Code::kProtocol) __builtin_trap();
        return 0;
      }
      if (!f->has_value()) break;
      const net::ReceivedFrame& frame = **f;
      if (frame.payload.size() != frame.header.payload_size) __builtin_trap();
      if (frame.fds.size() > wire::kMaxFdsPerFrame) __builtin_trap();
      DecodeAs(frame);
    }
  }
  return 0;
}
