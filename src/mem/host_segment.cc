#include "mem/host_segment.h"

#include <fcntl.h>
#include <numa.h>
#include <numaif.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/log.h"

namespace weft::mem {
namespace {

uint64_t PageRound(uint64_t size) {
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  return (size + page - 1) / page * page;
}

Status BindToNode(void* addr, uint64_t size, int node) {
  if (numa_available() < 0) return Error(Code::kNotSupported, "NUMA is not available on this machine; set numa_node=-1");
  if (node > numa_max_node())
    return Error(Code::kInvalidArgument, "numa_node {} does not exist (this machine has nodes 0..{})", node,
                 numa_max_node());
  unsigned long mask[16] = {};
  mask[node / (8 * sizeof(unsigned long))] |= 1ul << (node % (8 * sizeof(unsigned long)));
  if (mbind(addr, size, MPOL_BIND, mask, sizeof(mask) * 8, MPOL_MF_MOVE) != 0)
    return ErrnoStatus("mbind of the host segment", errno);
  return OkStatus();
}

}  // namespace

void PopulateWrite(void* p, uint64_t len) {
  constexpr uint64_t kChunk = 32ull << 20;
  auto* at = static_cast<uint8_t*>(p);
  for (uint64_t done = 0; done < len; done += kChunk)
    madvise(at + done, std::min(kChunk, len - done), MADV_POPULATE_WRITE);
}

uint64_t RandomAccessKey() {
  uint64_t key = 0;
  while (key == 0) {
    if (getrandom(&key, sizeof key, 0) != static_cast<ssize_t>(sizeof key)) key = 0;
  }
  return key;
}

HostSegment::HostSegment(int fd, uint8_t* data, uint64_t size, bool fixed)
    : fd_(fd), data_(data), size_(size), fixed_(fixed) {}

HostSegment::~HostSegment() {
  if (fixed_) {
    // Put the reservation back so nothing else lands inside the pool window.
    mmap(data_, PageRound(size_), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
  } else {
    munmap(data_, PageRound(size_));
  }
  close(fd_);
}

Result<std::unique_ptr<HostSegment>> HostSegment::Create(const std::string& name, uint64_t size, int numa_node) {
  if (size == 0) return Error(Code::kInvalidArgument, "a host segment needs a positive size");
  const uint64_t mapped = PageRound(size);
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) return ErrnoStatus("memfd_create", errno);
  if (ftruncate(fd, static_cast<off_t>(mapped)) != 0) {
    Status s = ErrnoStatus("ftruncate of the host segment", errno);
    close(fd);
    return s;
  }
  void* p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    Status s = ErrnoStatus("mmap of the host segment", errno);
    close(fd);
    return s;
  }
  if (numa_node >= 0) {
    Status s = BindToNode(p, mapped, numa_node);
    if (!s.ok()) {
      munmap(p, mapped);
      close(fd);
      return s;
    }
  }
  // Touch every page now so that the first copies do not pay for page faults, and so that a
  // machine without enough memory fails here (SIGBUS later would kill the process).
  if (fallocate(fd, 0, 0, static_cast<off_t>(mapped)) != 0 && errno != EOPNOTSUPP) {
    Status s = Error(Code::kPoolFull, "cannot back a {}-byte host segment: {}; lower rank_size", mapped,
                     std::strerror(errno));
    munmap(p, mapped);
    close(fd);
    return s;
  }
  PopulateWrite(p, mapped);
  auto seg = std::unique_ptr<HostSegment>(new HostSegment(fd, static_cast<uint8_t*>(p), size, false));
  seg->access_key_ = RandomAccessKey();
  return seg;
}

Result<std::unique_ptr<HostSegment>> HostSegment::Import(int fd, uint64_t size, void* at) {
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    Status s = ErrnoStatus("fstat of a received segment", errno);
    close(fd);
    return s;
  }
  if (size == 0 || static_cast<uint64_t>(st.st_size) < size) {
    close(fd);
    return Error(Code::kOutOfRange, "received segment has {} bytes, descriptor says {}", st.st_size, size);
  }
  const uint64_t mapped = PageRound(size);
  int flags = MAP_SHARED | (at ? MAP_FIXED : 0);
  void* p = mmap(at, mapped, PROT_READ | PROT_WRITE, flags, fd, 0);
  if (p == MAP_FAILED) {
    Status s = ErrnoStatus("mmap of a received segment", errno);
    close(fd);
    return s;
  }
  PopulateWrite(p, mapped);
  return std::unique_ptr<HostSegment>(new HostSegment(fd, static_cast<uint8_t*>(p), size, at != nullptr));
}

Result<std::unique_ptr<VaReservation>> VaReservation::Reserve(uint64_t addr, uint64_t size) {
  void* want = reinterpret_cast<void*>(addr);
  void* p = mmap(want, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
  if (p == MAP_FAILED) {
    return Error(Code::kUnavailable, "the VA window [{:#x}, {:#x}) cannot be reserved: {}", addr, addr + size,
                 std::strerror(errno));
  }
  if (p != want) {  // kernels before 4.17 ignore MAP_FIXED_NOREPLACE and treat it as a hint
    munmap(p, size);
    return Error(Code::kUnavailable, "the VA window at {:#x} is taken", addr);
  }
  return std::unique_ptr<VaReservation>(new VaReservation(addr, size));
}

VaReservation::~VaReservation() { munmap(reinterpret_cast<void*>(addr_), size_); }

}  // namespace weft::mem
