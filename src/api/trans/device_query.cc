#include "api/trans/device_query.h"

#include "api/cuda_availability.h"

#if WEFT_HAVE_CUDA
#include "mem/cuda/host_device_copy.h"
#endif

namespace weft::trans {

// One answer for "is a GPU usable, and if not why" across the front ends: the same probe as
// weft.cuda_status() and the pool's device slices.
Status DevicesUsable() { return CudaUsable(); }

#if WEFT_HAVE_CUDA
int DeviceOfPointer(const void* p) { return mem::cuda::DeviceOfPointer(p); }
Status SynchronizeStream(uint64_t stream) {
  WEFT_RETURN_IF_ERROR(DevicesUsable());
  return mem::cuda::SynchronizeStream(stream);
}
#else
int DeviceOfPointer(const void*) { return -1; }
Status SynchronizeStream(uint64_t) { return DevicesUsable(); }
#endif

}  // namespace weft::trans
