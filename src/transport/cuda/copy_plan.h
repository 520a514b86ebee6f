// The CPU side of the CUDA paths, in plain C++ so it is unit-tested without a GPU: the cost
// model that chooses between the copy engine and the copy kernel, the batch planner, and the
// packing of (dst, src, len) descriptors for the copy kernel.
//
// The numbers in CostModel's defaults were measured on an H100 (docs/gpu.md, `weft bench-gpu`);
// they only have to be right enough to pick the faster path, and where the two paths are close
// the copy engine wins because it leaves the SMs to the application.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "transport/cuda/copy_desc.h"

namespace weft::transport::cuda {

// How the bytes of one copy travel.
enum class Link : uint8_t {
  kHostToDevice = 0,  // pinned host memory -> HBM over PCIe
  kDeviceToHost = 1,  // HBM -> pinned host memory
  kSameDevice = 2,    // HBM -> HBM of one GPU
  kPeerDevice = 3,    // HBM -> HBM of another GPU with peer access (NVLink or PCIe P2P)
  kStaged = 4,        // through host memory the driver stages (pageable host memory, GPUs without peer access)
};
inline constexpr int kLinkCount = 5;
const char* LinkName(Link l);

enum class Method : uint8_t { kCopyEngine = 0, kKernel = 1 };
const char* MethodName(Method m);

struct CostModel {
  // Time from submit to completion of a tiny copy, including the stream synchronisation
  // (H200: 8.6-10 us device to device, 5.4-6.5 us to or from pinned host memory).
  double ce_latency_ns = 8600;
  // Time each further cudaMemcpyAsync of a batch adds (H200: 3.5-4.4 us for small device
  // copies, which the copy engine runs one after the other).
  double ce_submit_ns = 4000;
  // A batch of the copy kernel: descriptor upload + launch + completion (H200: 11 us).
  double kernel_latency_ns = 11000;
  // Host time per descriptor (packing, upload over PCIe).
  double kernel_per_desc_ns = 3;
  // Sustained bytes per ns (= GB/s) by link; index with Link. Copy engine then kernel.
  double ce_gbps[kLinkCount] = {53, 53, 1300, 350, 10};
  double kernel_gbps[kLinkCount] = {40, 40, 1350, 350, 0};
  // A piece at least this long never goes to the kernel: the copy engine is as fast there.
  uint64_t kernel_max_item = 4 << 20;

  double CopyEngineNanos(Link link, uint64_t items, uint64_t bytes) const;
  double KernelNanos(Link link, uint64_t items, uint64_t bytes) const;
};

// A copy as the planner sees it.
struct PlanItem {
  Link link;
  int device;        // the GPU that runs the copy (-1 for an item that failed classification)
  bool kernel_ok;    // both ends reachable by that GPU's SMs
  uint64_t len;
};

struct KernelGroup {
  int device;
  std::vector<uint32_t> items;  // indices into the planned items
  uint64_t bytes = 0;
};

struct BatchPlan {
  std::vector<KernelGroup> kernel;      // one kernel launch each
  std::vector<uint32_t> copy_engine;    // one cudaMemcpyAsync each
};

// Splits a batch between the copy engine and one kernel launch per GPU. Per GPU the kernel-
// eligible items (both ends reachable by the SMs, shorter than kernel_max_item, one link kind
// dominating) go to one launch when the model says it is faster than submitting them to the
// copy engine one by one; everything else goes to the copy engine. A single copy always takes
// the copy engine (equal speed, no SMs taken from the application).
BatchPlan PlanBatch(std::span<const PlanItem> items, const CostModel& model);

// Appends the descriptors for copying [src, src+len) to dst, in chunks of at most max_chunk
// bytes so that blocks share a long copy; chunk boundaries keep the copy's alignment (each
// chunk starts max_chunk bytes after the last, and max_chunk is a multiple of 16).
void PackDescriptors(uint64_t dst, uint64_t src, uint64_t len, uint32_t max_chunk, std::vector<DeviceCopyDesc>& out);

// The chunk size for a batch: small enough that every SM gets work, large enough that a block
// amortises reading its descriptor. Result is a multiple of 16 in [4 KiB, 256 KiB].
uint32_t ChooseChunk(uint64_t total_bytes, uint64_t items, int sm_count);

// Blocks for a launch over `descs` descriptors on `sms` multiprocessors (persistent grid: each
// block loops over descriptors).
uint32_t ChooseGrid(uint64_t descs, int sms, int blocks_per_sm);

// The launch of the page kernel for `pages` pages of `page_bytes` (Engine::CopyPages). Pages up
// to max_chunk bytes are one unit each; longer pages are cut into units of max_chunk bytes (a
// multiple of 16, so every unit keeps the page's alignment) so that several blocks share a page.
// `grid` is persistent (ChooseGrid over blocks_per_sm resident blocks); the transport launches one
// block per unit instead unless CudaOptions::page_grid_per_unit is off. Pure arithmetic: O(1) in
// the number of pages.
// 256 KiB: measured on an H200 (bench-gpu, 4096 pages), whole 64 KiB pages ran the kernel at
// 0.81x the large copy against 0.78x in 32 KiB units, whole 256 KiB pages at 0.87x against 0.78x.
inline constexpr uint32_t kPageChunkDefault = 256 << 10;
struct PageLaunch {
  uint32_t chunk = 0;
  uint32_t chunks_per_page = 0;
  uint64_t units = 0;
  uint32_t grid = 0;
};
PageLaunch PlanPages(uint64_t page_bytes, uint64_t pages, int sms, int blocks_per_sm,
                     uint32_t max_chunk = kPageChunkDefault);

}  // namespace weft::transport::cuda
