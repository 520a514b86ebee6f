// The object record codec (object_record.h), on the store protocol's wire codec.
#include "api/store/object_record.h"

#include "base/status.h"
#include "wire/codec.h"

namespace weft::store {
namespace {

constexpr uint8_t kRecordVersion = 1;
constexpr size_t kReplicaBytes = 4 + 8;  // for Reader::Count: a replica's encoding

Status ReadReplicas(wire::Reader& r, std::vector<Replica>& replicas) {
  uint32_t n = 0;
  WEFT_RETURN_IF_ERROR(r.Count(n, kReplicaBytes, kMaxReplicas));
  replicas.resize(n);
  for (Replica& replica : replicas) {
    WEFT_RETURN_IF_ERROR(r.U32(replica.rank));
    WEFT_RETURN_IF_ERROR(r.U64(replica.gva));
  }
  return OkStatus();
}

// A record the master could never have written is refused here, so that Restore and whatever
// else reads the journal need not guess at its meaning.
Status CheckMeaning(const ObjectRecord& rec) {
  if (rec.key.empty()) return Error(Code::kProtocol, "an object record with an empty key");
  if (rec.size == 0) return Error(Code::kProtocol, "object record '{}' of 0 bytes", rec.key);
  if (rec.disk_rank < -1) return Error(Code::kProtocol, "object record '{}' on disk rank {}", rec.key, rec.disk_rank);
  if (rec.replicas.empty() && (!rec.complete || rec.disk_rank < 0))
    return Error(Code::kProtocol, "object record '{}' lives nowhere (no replica, no disk copy)", rec.key);
  return OkStatus();
}

}  // namespace

std::vector<uint8_t> EncodeObjectRecord(const ObjectRecord& rec) {
  wire::Writer w;
  w.U8(kRecordVersion);
  w.String(rec.key);
  w.Bool(rec.complete);
  w.U32(rec.writer);
  w.U64(rec.size);
  w.U64(rec.id);
  w.I32(rec.disk_rank);
  w.U32(static_cast<uint32_t>(rec.replicas.size()));
  for (const Replica& replica : rec.replicas) {
    w.U32(replica.rank);
    w.U64(replica.gva);
  }
  w.Bool(rec.hard_pin);
  w.Bool(rec.soft_pin);
  return w.Take();
}

Result<ObjectRecord> DecodeObjectRecord(std::span<const uint8_t> bytes) {
  wire::Reader r(bytes);
  uint8_t version = 0;
  WEFT_RETURN_IF_ERROR(r.U8(version));
  if (version != kRecordVersion)
    return Error(Code::kProtocol, "object record version {} (this master reads {})", version, kRecordVersion);
  ObjectRecord rec;
  WEFT_RETURN_IF_ERROR(r.String(rec.key, kMaxKeyBytes));
  WEFT_RETURN_IF_ERROR(r.Bool(rec.complete));
  WEFT_RETURN_IF_ERROR(r.U32(rec.writer));
  WEFT_RETURN_IF_ERROR(r.U64(rec.size));
  WEFT_RETURN_IF_ERROR(r.U64(rec.id));
  WEFT_RETURN_IF_ERROR(r.I32(rec.disk_rank));
  WEFT_RETURN_IF_ERROR(ReadReplicas(r, rec.replicas));
  WEFT_RETURN_IF_ERROR(r.Bool(rec.hard_pin));
  WEFT_RETURN_IF_ERROR(r.Bool(rec.soft_pin));
  WEFT_RETURN_IF_ERROR(r.ExpectEnd());
  WEFT_RETURN_IF_ERROR(CheckMeaning(rec));
  return rec;
}

}  // namespace weft::store
