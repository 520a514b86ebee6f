#include "api/trans/device_query.h"

#if WEFT_HAVE_CUDA
#include "mem/cuda/host_device_copy.h"
#endif

namespace weft::trans {

#if WEFT_HAVE_CUDA
Status DevicesUsable() { return mem::cuda::DevicesUsable(); }
int DeviceOfPointer(const void* p) { return mem::cuda::DeviceOfPointer(p); }
Status SynchronizeStream(uint64_t stream) { return mem::cuda::SynchronizeStream(stream); }
#else
Status DevicesUsable() {
  return Status(Code::kNotSupported,
                "this build of weft has no CUDA (it was built without the CUDA toolkit): use a build with CUDA "
                "to register GPU memory");
}
int DeviceOfPointer(const void*) { return -1; }
Status SynchronizeStream(uint64_t) { return DevicesUsable(); }
#endif

}  // namespace weft::trans
