// Host segments: DRAM from memfd, shareable with same-node peers by passing the fd.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "base/result.h"
#include "mem/permission.h"

namespace weft::mem {


// A fresh random 64-bit key from getrandom(2); never 0.
uint64_t RandomAccessKey();

// Faults every page of the mapping [p, p + len) in for writing (MADV_POPULATE_WRITE), a chunk per
// call: one call over a whole segment holds the process's mmap lock until the last page is in
// (seconds for a GiB on a slow VM), and every other thread of the process that maps memory
// meanwhile (a new malloc arena, a thread stack) waits that long. A heartbeat thread waiting so
// once got its peer declared dead.
void PopulateWrite(void* p, uint64_t len);

class HostSegment {
 public:
  // A new memfd of `size` bytes (rounded up to the page size), mapped shared and pre-faulted.
  // numa_node >= 0 binds the pages to that node (INVALID_ARGUMENT if it does not exist).
  static Result<std::unique_ptr<HostSegment>> Create(const std::string& name, uint64_t size, int numa_node);
  // Maps a segment received from a peer. Takes ownership of fd in all cases. size must not
  // exceed the file's size (OUT_OF_RANGE otherwise). When `at` is not null the mapping is
  // placed there with MAP_FIXED (the caller reserved that range).
  static Result<std::unique_ptr<HostSegment>> Import(int fd, uint64_t size, void* at = nullptr);
  ~HostSegment();
  HostSegment(const HostSegment&) = delete;
  HostSegment& operator=(const HostSegment&) = delete;

  int fd() const { return fd_; }
  uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  uint64_t access_key() const { return access_key_; }
  uint32_t permissions() const { return permissions_; }

 private:
  HostSegment(int fd, uint8_t* data, uint64_t size, bool fixed);
  int fd_;
  uint8_t* data_;
  uint64_t size_;
  bool fixed_;  // mapped inside a reservation: unmapping restores the reservation
  uint64_t access_key_ = 0;
  uint32_t permissions_ = kReadWrite;
};

// A reserved range of virtual addresses (PROT_NONE) at a fixed address, for unified-VA mode.
class VaReservation {
 public:
  // UNAVAILABLE when the range is already (partly) taken in this process.
  static Result<std::unique_ptr<VaReservation>> Reserve(uint64_t addr, uint64_t size);
  ~VaReservation();
  uint64_t addr() const { return addr_; }
  uint64_t size() const { return size_; }

 private:
  VaReservation(uint64_t addr, uint64_t size) : addr_(addr), size_(size) {}
  uint64_t addr_;
  uint64_t size_;
};

}  // namespace weft::mem
