// Before a Python int that is no GVA is used as a local pointer, the range it names must be
// mapped in this process: a mistyped GVA (one past the pool's window) or any other wild int
// would otherwise be dereferenced by a copy and crash the interpreter. Included by
// ext_common.h (Resolve, LengthOf).
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>


namespace weft::pyext {

// Whether every page of [addr, addr + len) lies in a mapping of this process. msync(MS_ASYNC)
// does no I/O on Linux; it walks the VMAs of the range and fails ENOMEM at a hole, so one
// system call answers for a range of any size. Mapped device memory (CUDA reserves unified
// virtual addresses in the process) counts as mapped: the engine tells host from device.
inline bool RangeIsMapped(uint64_t addr, uint64_t len) {
  static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  if (len == 0) len = 1;
  if (len > UINT64_MAX - addr) return false;
  const uint64_t first = addr & ~(page - 1);
  const uint64_t last = (addr + len - 1) & ~(page - 1);
  if (::msync(reinterpret_cast<void*>(first), last - first + page, MS_ASYNC) == 0) return true;
  // EINVAL/EBUSY would be about the flags or locked pages, not holes: only ENOMEM says unmapped.
  return errno != ENOMEM;
}


}  // namespace weft::pyext
