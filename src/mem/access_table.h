// The owner-side check every remote access goes through before the TCP server touches memory:
// segment id -> (base, size, access key, permissions). The RDMA MPT/MTT idea (DESIGN.md, mem):
// a request names a segment and a 64-bit key; the key, the permission and the bounds are
// checked on every request.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>

#include "base/result.h"
#include "mem/permission.h"

namespace weft::mem {

// What the server asks before it reads or writes segment memory. Implementations are called
// from the server's progress threads concurrently.
class SegmentAccess {
 public:
  virtual ~SegmentAccess() = default;
  // The address of [offset, offset+len) of the segment, after checking:
  //   unknown segment -> NOT_FOUND; wrong key or missing permission -> PERMISSION_DENIED;
  //   out of bounds -> OUT_OF_RANGE. Messages never contain the key.
  // A successful Find pins the segment until the matching Release.
  virtual Result<uint8_t*> Find(uint32_t segment_id, uint64_t access_key, uint64_t offset, uint64_t len,
                                bool write) = 0;
  // Called exactly once for every successful Find, after the server stopped touching the bytes
  // (the payload was sent or received, or the connection closed).
  virtual void Release(uint32_t segment_id) {}
  // Whether the segment's memory is on a device (served through TcpServerOptions::device_copy).
  // Asked only while the segment is pinned by a successful Find.
  virtual bool IsDevice(uint32_t segment_id) { return false; }
};

struct SegmentEntry {
  uint32_t id = 0;
  uint8_t* base = nullptr;
  uint64_t size = 0;
  uint64_t access_key = 0;
  uint32_t permissions = kReadWrite;
  bool device = false;  // base is device memory (see SegmentAccess::IsDevice)
};

// A thread-safe table of segments. Unregister waits until no request uses the segment any more
// (the server releases a segment at the latest when a stalled connection times out), so the
// owner may free the memory as soon as Unregister returns.
class AccessTable : public SegmentAccess {
 public:
  AccessTable() = default;
  ~AccessTable() override = default;
  AccessTable(const AccessTable&) = delete;
  AccessTable& operator=(const AccessTable&) = delete;

  // ALREADY_EXISTS for an id in use; INVALID_ARGUMENT for a null base with a non-zero size.
  Status Register(const SegmentEntry& entry);
  // NOT_FOUND for an unknown id. New requests get NOT_FOUND at once; the call returns once the
  // requests in flight have finished with the memory.
  Status Unregister(uint32_t id);
  // Changes the permissions of a registered segment (NOT_FOUND if unknown).
  Status SetPermissions(uint32_t id, uint32_t permissions);

  Result<uint8_t*> Find(uint32_t segment_id, uint64_t access_key, uint64_t offset, uint64_t len,
                        bool write) override;
  void Release(uint32_t segment_id) override;
  bool IsDevice(uint32_t segment_id) override;

  size_t size() const;

 private:
  struct Slot {
    SegmentEntry entry;
    std::atomic<uint32_t> permissions{0};
    std::atomic<int64_t> pins{0};
    std::atomic<bool> removed{false};
  };
  mutable std::shared_mutex mu_;
  std::unordered_map<uint32_t, std::shared_ptr<Slot>> slots_;
  std::mutex drain_mu_;
  std::condition_variable drained_;
};

}  // namespace weft::mem
