// Writes a tiny seed corpus for every fuzz target into <dir>/<target>/: valid encodings, so the
// fuzzers start from the shapes real traffic has instead of having to discover the magic and
// the length prefixes. Generated rather than checked in, so it always matches the code.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "api/bm/pool_state.h"
#include "api/bm/slice_blobs.h"
#include "api/store/object_record.h"
#include "api/store/protocol.h"
#include "wire/control.h"
#include "wire/data.h"

namespace {

using namespace weft;
namespace fs = std::filesystem;

struct Writer {
  fs::path root;
  bool ok = true;

  void Put(const std::string& target, const std::vector<uint8_t>& bytes) {
    fs::path dir = root / target;
    std::error_code ec;
    fs::create_directories(dir, ec);
    size_t n = 0;
    for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); ++it) ++n;
    std::ofstream out(dir / ("seed-" + std::to_string(n)), std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    ok = ok && out.good();
  }

  template <typename T>
  void Message(const std::string& target, const T& m, std::vector<uint8_t>* stream) {
    Put(target, wire::Encode(m));
    auto frame = wire::EncodeFrame(m);
    if (!frame.ok()) return;
    Put("frame_header_fuzz", std::vector<uint8_t>(frame->begin(), frame->begin() + wire::kFrameHeaderSize));
    stream->insert(stream->end(), frame->begin(), frame->end());
  }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus-dir>\n", argv[0]);
    return 2;
  }
  Writer w{argv[1]};
  std::vector<uint8_t> stream;
  // Joins as pool peers send them: a memfd (shm), a device slice (cuda), a network path (tcp's
  // endpoint and region blobs, nested), and
  // a transport this build does not know.
  const wire::TransportBlobs same_node = {{"shm", bm::EncodeShmBlob({0})},
                                          {"cuda", bm::EncodeCudaBlob({1, 2u << 20, 0})},
                                          {"future-rdma", std::string("\x01\x02rkey", 6)}};
  const wire::TransportBlobs over_tcp = {
      {"tcp", bm::EncodePathBlob({std::string("\x01\x08" "10.0.0.1" "\x58\x1b", 12), std::string("\x01\x01\0\0\0", 5),
                                  std::string("\x01\x02\0\0\0", 5)})}};
  w.Message("join_fuzz", wire::Join{"pool", 1u << 20, "host:1", 42, 1u << 20, 3, 2u << 20, 2, same_node}, &stream);
  w.Message("join_fuzz", wire::Join{"pool", 1u << 20, "host:1", 42, 1u << 20, 3, 2u << 20, 0, over_tcp}, &stream);
  w.Message("join_ack_fuzz", wire::JoinAck{{}, 1, 64, 1u << 20, "pool", 2000, 1, 1}, &stream);
  w.Message("join_ack_fuzz", wire::JoinAck{{Code::kMismatch, "pool 'a' vs 'b'"}, 0, 0, 0, "", 0, 0, 0}, &stream);
  w.Message("peer_joined_fuzz", wire::PeerJoined{2, "host:2", 43, 1u << 20, 3, 2u << 20, 2, same_node}, &stream);
  w.Message("peer_joined_fuzz", wire::PeerJoined{2, "host:2", 43, 1u << 20, 3, 2u << 20, 0, over_tcp}, &stream);
  w.Message("peer_gone_fuzz", wire::PeerGone{2, false}, &stream);
  w.Message("heartbeat_fuzz", wire::Heartbeat{}, &stream);
  w.Message("leave_fuzz", wire::Leave{}, &stream);
  w.Message("barrier_enter_fuzz", wire::BarrierEnter{7}, &stream);
  w.Message("barrier_done_fuzz", wire::BarrierDone{7, {Code::kPeerDown, "rank 2 died"}}, &stream);
  w.Message("allgather_enter_fuzz", wire::AllgatherEnter{3, {1, 2, 3, 4}}, &stream);
  w.Message("allgather_done_fuzz", wire::AllgatherDone{3, {}, {{0, {1, 2}}, {1, {}}, {5, {9}}}}, &stream);
  w.Message("call_request_fuzz", wire::CallRequest{99, {0xde, 0xad}}, &stream);
  w.Message("call_reply_fuzz", wire::CallReply{99, {}, {0xbe, 0xef}}, &stream);
  w.Message("call_reply_fuzz", wire::CallReply{100, {Code::kPoolFull, "no room"}, {}}, &stream);
  w.Message("status_request_fuzz", wire::StatusRequest{0, wire::kMaxStatusPeersPerReply}, &stream);
  w.Message("status_request_fuzz", wire::StatusRequest{256, 1}, &stream);
  {
    wire::StatusReply s;
    s.pool_name = "pool";
    s.rank_size = 1u << 20;
    s.max_ranks = 64;
    s.peer_timeout_ms = 2000;
    s.coordinator_host = "node1";
    s.peers_up = 1;
    s.peers_down = 1;
    s.host_usage = {1u << 20, 4096, 1};
    s.peers.push_back({0, "a", wire::PeerState::kUp, 42, "", 12, 3000, 1u << 20, 2u << 20, {1u << 20, 4096, 1},
                       {2u << 20, 0, 0}, {"cuda", "shm", "tcp"}, ""});
    s.peers.push_back({3, "b", wire::PeerState::kDown, 43, "10.0.0.2", 900, 5000, 1u << 20, 0, {}, {}, {"tcp"},
                       "no heartbeat for 2001 ms"});
    s.more = true;
    s.next_rank = 4;
    s.events.push_back({900, 1700000000000ull, Code::kPeerDown, "rank 3 ('b', pid 43) is down"});
    w.Message("status_reply_fuzz", s, &stream);
    wire::StatusReply refused;
    refused.status = {Code::kProtocol, "max_peers 0 is not 1..256"};
    w.Message("status_reply_fuzz", refused, &stream);
  }
  if (auto n = wire::EncodeNotification("peer-a", "layer 7 done"); n.ok()) w.Put("notification_fuzz", *n);
  std::string descriptor =
      R"({"version":2,"name":"10.0.0.1:15001","transports":{"tcp":"AQgAAAAxMC4wLjAuMSiq"},"buffers":[)"
      R"({"addr":140000000000,"length":1048576,"location":"cpu:0","blobs":{"tcp":"AQEAAADvzauJZ0UjAQ=="}}]})";
  w.Put("trans_descriptor_fuzz", std::vector<uint8_t>(descriptor.begin(), descriptor.end()));
  // A transport blob: the target's first byte picks the decoder (tcp, shm, cma; endpoint or region).
  w.Put("transport_blob_fuzz", std::vector<uint8_t>{0, 1, 8, 0, 0, 0, '1', '0', '.', '0', '.', '0', '.', '1', 0x28, 0xaa});
  // Store calls, one of each op; store replies behind the byte that picks their decoder.
  const std::vector<std::string> keys = {"layer0/block7", "k"};
  store::PlaceOptions place;
  place.replicas = 2;
  place.preferred_rank = 1;
  w.Put("store_request_fuzz", store::EncodePutStart(keys, std::vector<uint64_t>{4096, 1}, place, true));
  const std::vector<uint8_t> small(300, 0x5a), tiny{1, 2, 3};
  const std::vector<std::vector<store::Span>> inline_values{{{small.data(), small.size()}, {tiny.data(), 1}},
                                                            {{tiny.data(), tiny.size()}}};
  w.Put("store_request_fuzz", store::EncodePutInline(keys, inline_values, place, false));
  for (auto op : {store::StoreOp::kPutEnd, store::StoreOp::kPutEndOnDisk, store::StoreOp::kPutRevoke,
                  store::StoreOp::kGet, store::StoreOp::kExists, store::StoreOp::kDescribe})
    w.Put("store_request_fuzz", store::EncodeKeysCall(op, keys));
  w.Put("store_request_fuzz", store::EncodeKeysCall(store::StoreOp::kRemove, keys, true));
  w.Put("store_request_fuzz", store::EncodeRemoveRegex("layer0/.*", false));
  w.Put("store_request_fuzz", store::EncodeRemoveAll(true));
  w.Put("store_request_fuzz", store::EncodeStatsCall());
  w.Put("store_request_fuzz", store::EncodePingCall());
  auto reply = [&](uint8_t decoder, std::vector<uint8_t> bytes) {
    bytes.insert(bytes.begin(), decoder);
    w.Put("store_reply_fuzz", bytes);
  };
  store::KeyResult found;
  found.size = 4096;
  found.replicas = {{0, 0x200000001000ull}, {1, 0x200100000000ull}};
  found.lease_ms = 10000;
  found.exists = true;
  store::KeyResult busy;
  busy.status = Status(Code::kBusy, "leased");
  reply(0, store::EncodeKeyResults(std::vector<store::KeyResult>{found, busy}));
  reply(1, store::EncodeCount(3));
  reply(2, store::EncodeStats({5, 1, 20480, 1u << 30, 1u << 20, 2, 4096}));
  store::KeyResult described = found;  // a describe's answer: no lease, no exists, a disk copy too
  described.lease_ms = 0;
  described.exists = false;
  described.id = 9;
  described.disk_rank = 1;
  store::KeyResult missing;
  missing.status = Status(Code::kNotFound, "no object 'k'");
  reply(3, store::EncodeKeyResults(std::vector<store::KeyResult>{described, missing}));
  store::KeyResult written;  // an inline put's answers: written and ended, placed for the writer, refused
  written.replicas = {{0, 0x200000001000ull}};
  written.id = 12;
  written.exists = true;
  store::KeyResult placed = written;
  placed.exists = false;
  placed.replicas.push_back({1, 0x200100000000ull});
  store::KeyResult exists;
  exists.status = Status(Code::kAlreadyExists, "'k' exists (upsert replaces it)");
  reply(4, store::EncodeKeyResults(std::vector<store::KeyResult>{written, placed, exists}));
  std::vector<uint8_t> old_stats = store::EncodeStats({5, 1, 20480, 1u << 30, 1u << 20, 2, 4096, 1});
  old_stats.resize(8 * sizeof(uint64_t));  // a master older than inline puts
  reply(2, old_stats);
  // Object records of the failover journal: a pending put, and an object evicted to a disk.
  store::ObjectRecord record;
  record.key = "layer0/block7";
  record.complete = false;
  record.writer = 1;
  record.size = 4096;
  record.id = 12;
  record.replicas = {{1, 0x200100000000ull}, {0, 0x200000001000ull}};
  record.soft_pin = true;
  w.Put("store_record_fuzz", store::EncodeObjectRecord(record));
  record.complete = true;
  record.replicas.clear();
  record.disk_rank = 1;
  record.hard_pin = true;
  w.Put("store_record_fuzz", store::EncodeObjectRecord(record));
  // HA journal entries: a key length byte, the key relative to the state prefix, the value.
  auto entry = [&](const std::string& key, const std::vector<uint8_t>& value) {
    std::vector<uint8_t> bytes{static_cast<uint8_t>(key.size())};
    bytes.insert(bytes.end(), key.begin(), key.end());
    bytes.insert(bytes.end(), value.begin(), value.end());
    w.Put("pool_state_entry_fuzz", bytes);
  };
  entry("o/layer0/block7", store::EncodeObjectRecord(record));
  const std::string member = bm::EncodeMember({"node-1", 1ull << 30, 0});
  entry("m/00000001", std::vector<uint8_t>(member.begin(), member.end()));
  // HTTP heads as the directory's clients send them (first byte: the limits, 0x03 = 512 bytes).
  for (std::string head : {std::string("GET /metadata?key=mooncake%2Fram%2Fa HTTP/1.1\r\nHost: h\r\n\r\n"),
                           std::string("POST /v1/kv/put HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n{}"),
                           std::string("PUT /metadata?key=k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")}) {
    head.insert(head.begin(), '\x03');
    w.Put("http_head_fuzz", std::vector<uint8_t>(head.begin(), head.end()));
  }
  // The reassembler's input also spends bytes on read sizes; the plain stream is still a start.
  w.Put("frame_reader_fuzz", stream);
  if (!w.ok) {
    std::fprintf(stderr, "could not write the corpus under %s\n", argv[1]);
    return 1;
  }
  return 0;
}
