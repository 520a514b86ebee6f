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
// get MISMATCH) and returns why.
Status DeviceCollective(Team::Impl& t, const DeviceCall& call, Deadline deadline);

}  // namespace weft::symm
