// Fuzzes wire::Decode<PeerJoined> and then, as a pool peer does, its transport blobs
// (api/bm/slice_blobs.h) with the descriptor count it announces: every blob is read, skipped
// as unknown or refused with PROTOCOL naming its transport, and one that reads re-encodes to
// the same bytes.
#include "api/bm/slice_blobs.h"
#include "fuzz_decode.h"

namespace {

using namespace weft;

template <typename T, typename Encode>
void CheckBlob(const Result<T>& blob, const wire::TransportBlobs& blobs, std::string_view name, Encode encode) {
  if (blob.ok()) {
    if (encode(*blob) != blobs.at(std::string(name))) __builtin_trap();
    return;
  }
  const bool absent = blobs.count(std::string(name)) == 0;
  if (blob.status().code() != (absent ? Code::kNotFound : Code::kProtocol)) __builtin_trap();
  if (!absent && blob.status().message().find(name) == std::string::npos) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::DecodeRoundTrip<wire::PeerJoined>(data, size);
  auto m = wire::Decode<wire::PeerJoined>({data, size});
  if (!m.ok()) return 0;
  // A pool peer on transport=tcp reads the "tcp" path blob; any other path name reads the same.
  bm::PeerSliceBlobs read = bm::ReadPeerSlices(m->transports, m->fd_count, m->device_size, "tcp");
  CheckBlob(read.shm, m->transports, bm::kShmBlob, bm::EncodeShmBlob);
  CheckBlob(read.path, m->transports, "tcp", bm::EncodePathBlob);
  // A cuda blob for another size than the join's reads but is refused: only check the format.
  auto cuda = m->transports.find(std::string(bm::kCudaBlob));
  if (cuda != m->transports.end()) {
    auto alone = bm::DecodeCudaBlob(cuda->second, m->fd_count);
    CheckBlob(alone, m->transports, bm::kCudaBlob, bm::EncodeCudaBlob);
    if (read.cuda.ok() && !(alone.ok() && *alone == *read.cuda)) __builtin_trap();
  }
  return 0;
}
