// Revocation for regions that peers reach by mapping (shm, cuda IPC): each exported region has a
// control page, a memfd of its own that the owner and its peers map. A peer counts its ops in
// it around each copy (Enter/Exit) and sees the owner's withdrawal there; the owner's Withdraw
// marks the region withdrawn and waits for the ops in flight. So a region is never written
// through a stale mapping after its owner took it back.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "base/result.h"
#include "wire/codec.h"

namespace weft::transport {

// The owner's side.
class OwnerControl {
 public:
  static Result<std::unique_ptr<OwnerControl>> Create();
  ~OwnerControl();
  // What a peer needs to map it: fd number, device and inode (appended to a region blob).
  Status Describe(wire::Writer& w) const;
  // Marks it withdrawn and waits (at most 10 s: a peer that died inside an op never exits) for
  // the peers' ops in flight.
  void Withdraw();

 private:
  OwnerControl() = default;
  int fd_ = -1;
  void* map_ = nullptr;
};

// The control pages of the regions one transport exported, by region id. Destroying it
// withdraws every region left.
class ExportedControls {
 public:
  ExportedControls() = default;
  ~ExportedControls();
  ExportedControls(const ExportedControls&) = delete;
  ExportedControls& operator=(const ExportedControls&) = delete;
  void Add(uint64_t region_id, std::unique_ptr<OwnerControl> control);
  // Withdraws the region (OwnerControl::Withdraw); no-op for an unknown id.
  void Withdraw(uint64_t region_id);

 private:
  std::mutex mu_;
  std::map<uint64_t, std::unique_ptr<OwnerControl>> controls_;
};

// A peer's side: the owner's control page, mapped here.
class PeerControl {
 public:
  // Reads what OwnerControl::Describe wrote and maps the page of process `pid`.
  static Result<std::unique_ptr<PeerControl>> Open(uint32_t pid, wire::Reader& r, std::string_view transport);
  ~PeerControl();
  // NOT_FOUND once the owner withdrew the region; otherwise the op is counted until Exit.
  Status Enter() const;
  void Exit() const;
  // PEER_DOWN once the owner's process has exited. A killed owner withdraws nothing, and the
  // mapping outlives it (the memory is kept for us), so a copy into it would "succeed" into memory
  // nobody will read: the engine asks this after each batch's mapped copies.
  Status OwnerAlive() const;
  // The owner's process id (regions of one owner share it: their liveness is asked once a batch).
  uint32_t pid() const { return pid_; }

 private:
  PeerControl() = default;
  void* map_ = nullptr;
  uint32_t pid_ = 0;
  int pidfd_ = -1;  // readable once the owner exited (pidfd_open); -1 where the kernel has none
};

// Opens a peer's file by its fd number (/proc/<pid>/fd/<n>) and checks it is the file the blob
// names (device and inode) and holds at least need_bytes. The fd, or UNAVAILABLE with why.
Result<int> OpenPeerFile(uint32_t pid, int32_t fd, uint64_t dev, uint64_t ino, uint64_t need_bytes,
                         std::string_view transport);

}  // namespace weft::transport
