// Fuzzes the transports' blob decoders (transport/blob.h): the endpoint and region blobs that a
// peer advertises in its descriptor reach Connect and ImportRegion unchecked. The first byte
// picks the transport and the blob kind; anything must fail with PROTOCOL or UNAVAILABLE (a
// well-formed blob naming something that is not there), never crash or map foreign memory.
#include <unistd.h>

#include <string_view>

#include "transport/cma/cma_transport.h"
#include "transport/shm/shm_transport.h"
#include "transport/tcp/tcp_transport.h"
#include "wire/codec.h"

namespace {

using namespace weft;

// A link to this very process, so region blobs are decoded against a live peer.
std::string SelfEndpoint(const std::string& node) {
  wire::Writer w;
  w.U8(1);
  w.String(node);
  w.U32(static_cast<uint32_t>(::getpid()));
  return std::string(w.buffer().begin(), w.buffer().end());
}

bool Expected(const Status& s) {
  return s.ok() || s.code() == Code::kProtocol || s.code() == Code::kUnavailable;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static transport::ShmTransport shm("fuzz-node");
  static transport::CmaTransport cma("fuzz-node");
  static transport::tcp::TcpTransport tcp(transport::tcp::TcpTransportOptions{});
  transport::Transport* which[] = {&tcp, &shm, &cma};
  transport::Transport* t = which[(data[0] >> 1) % 3];
  const bool region = data[0] & 1;
  std::string_view blob(reinterpret_cast<const char*>(data + 1), size - 1);
  if (!region) {
    auto link = t->Connect(blob);
    if (!Expected(link.status())) __builtin_trap();
    return 0;
  }
  // tcp's endpoint blob format differs: a host and a port.
  wire::Writer w;
  w.U8(1);
  w.String("127.0.0.1");
  w.U16(9);
  std::string endpoint = t == &tcp ? std::string(w.buffer().begin(), w.buffer().end()) : SelfEndpoint("fuzz-node");
  auto link = t->Connect(endpoint);
  if (!link.ok()) __builtin_trap();
  auto imported = t->ImportRegion(**link, 0x1000, 4096, blob);
  if (!Expected(imported.status())) __builtin_trap();
  return 0;
}
