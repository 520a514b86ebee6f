// weft._weft's CUDA probe: cuda_available(), cuda_status() and what the build holds. A file of its
// own so that the Pool and TransferEngine bindings (weft_ext.cc, trans_ext.cc) are not touched by
// it. The answer comes from weft::ProbeCuda (src/api/cuda_availability.h), the same probe that
// decides whether a pool may create a device slice, so Python never says "available" where a
// device call would then be refused.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include <string>

#include "api/cuda_availability.h"

namespace nb = nanobind;

namespace {

// The first probe initialises the CUDA runtime (driver load, device enumeration: up to seconds on
// a machine with many GPUs), so other Python threads run meanwhile.
weft::CudaAvailability Probe() {
  nb::gil_scoped_release release;
  return weft::ProbeCuda();
}

}  // namespace

void BindCuda(nb::module_& m) {
  m.def(
      "cuda_available", [] { return Probe().available(); },
      "True when this build has CUDA and the CUDA runtime finds a GPU; cuda_status() says why not.");
  m.def(
      "cuda_status", [] { return Probe().ToString(); },
      "Why CUDA is or is not usable, starting with one of 'available', 'not built', 'no driver', 'no GPU', "
      "e.g. 'available: 2 CUDA GPUs' or 'no driver: libcuda.so.1 cannot be loaded ...'.");
  // Facts of the build, not of the machine (for tests and bug reports). Importing must not probe:
  // initialising CUDA before a fork leaves the child unable to use it.
  m.attr("cuda_built") = weft::CudaBuilt();
#ifdef WEFT_CUDA_ARCHITECTURES
  m.attr("cuda_architectures") = std::string(WEFT_CUDA_ARCHITECTURES);
#else
  m.attr("cuda_architectures") = std::string();
#endif
}
