// The eight collectives on device buffers: which buffers a call may name, the call's
// description that every rank's kernel compares, and the launch on the team's device heap
// (device_heap.h). collectives.cc sends a call here when any of its buffers is GPU memory.
#pragma once

#include <initializer_list>

#include "api/symm/team_impl.h"

namespace weft::symm {

// Whether a call on these buffers runs on the device path (any of them is GPU memory, or lies in
// the device heap). False on a team without a device heap.
bool OnDevice(const Team::Impl& t, std::initializer_list<const void*> buffers);

struct DeviceCall {
  Kind kind;
  const void* send;  // for broadcast: its buffer
  void* recv;
  uint64_t count;
  DType dtype;
  ReduceOp op;
  uint32_t root;
};

// Runs the call as one kernel; a rank whose own arguments are bad still takes part (the others
// get MISMATCH) and returns why. With t.device_async it returns once the kernel is launched
// (after waiting for the oldest launch when kMaxInFlight are in flight); the launch's outcome
// comes from DeviceSynchronize.
Status DeviceCollective(Team::Impl& t, const DeviceCall& call, Deadline deadline);

// Waits for every launch of the team still in flight; the first failure among the launches
// waited for since the last call (a rank's own refused call not counted: it was told), or OK.
Status DeviceSynchronize(Team::Impl& t, Deadline deadline);

inline constexpr size_t kMaxInFlight = 32;  // a team's asynchronous launches at once

}  // namespace weft::symm
