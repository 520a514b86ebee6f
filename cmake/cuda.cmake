# CUDA support (issue 5): built when nvcc is found, skipped otherwise.
#
# Result: WEFT_HAVE_CUDA (0/1, also a compile definition everywhere) and, when 1, the static
# library weft_cuda (src/mem/cuda, src/transport/cuda, and the symmetric heap kernel of
# src/api/symm/cuda). weft_cuda links the static CUDA runtime
# only, never libcuda: the driver is reached through cudaGetDriverEntryPointByVersion, so the
# same binaries start on machines without a GPU or driver and simply skip the device paths.
include(CheckLanguage)

option(WEFT_ENABLE_CUDA "Build the CUDA paths when nvcc is found" ON)
option(WEFT_GPU_BUNDLE "Link libstdc++/libgcc statically so binaries run on the GPU machine's image" OFF)

# nvcc is usually not on PATH (/usr/local/cuda/bin); look there before giving up.
if(NOT WEFT_ENABLE_CUDA)
  set(CMAKE_CUDA_COMPILER "" CACHE FILEPATH "CUDA compiler" FORCE)
elseif(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc CACHE FILEPATH "CUDA compiler")
endif()
if(WEFT_ENABLE_CUDA)
  check_language(CUDA)
endif()

set(WEFT_HAVE_CUDA 0)
if(CMAKE_CUDA_COMPILER)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90)  # H100 / H200: sm_90 machine code, no PTX JIT at start
  endif()
  enable_language(CUDA)
  # CUDA sources are C++17: CMake 3.25 knows no CUDA20 dialect for nvcc. They include only
  # headers that are C++17 (copy_desc.h, copy_kernel.h); the rest of weft_cuda is C++20 host code.
  set(CMAKE_CUDA_STANDARD 17)
  find_package(CUDAToolkit REQUIRED)
  set(WEFT_HAVE_CUDA 1)
endif()
add_compile_definitions(WEFT_HAVE_CUDA=${WEFT_HAVE_CUDA})
message(STATUS "weft: CUDA support ${WEFT_HAVE_CUDA} (${CMAKE_CUDA_COMPILER})")

if(WEFT_GPU_BUNDLE)
  add_link_options(-static-libstdc++ -static-libgcc)
endif()

if(WEFT_HAVE_CUDA)
  file(GLOB weft_cuda_srcs CONFIGURE_DEPENDS
       ${CMAKE_CURRENT_SOURCE_DIR}/src/mem/cuda/*.cc
       ${CMAKE_CURRENT_SOURCE_DIR}/src/transport/cuda/*.cc
       ${CMAKE_CURRENT_SOURCE_DIR}/src/transport/cuda/*.cu
       ${CMAKE_CURRENT_SOURCE_DIR}/src/api/symm/cuda/*.cu)
  add_library(weft_cuda STATIC ${weft_cuda_srcs})
  target_include_directories(weft_cuda PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/src ${CMAKE_CURRENT_SOURCE_DIR}/include)
  # weft_transport is defined later in the top-level file; CMake resolves the name at generation.
  target_link_libraries(weft_cuda PUBLIC weft_transport CUDA::cudart_static)
  # The warning flags of the top-level file are for the host compiler only.
  target_compile_options(weft_cuda PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall>)
endif()
