#include "transport/cuda/copy_plan.h"

#include <algorithm>

namespace weft::transport::cuda {

const char* LinkName(Link l) {
  switch (l) {
    case Link::kHostToDevice: return "host->device";
    case Link::kDeviceToHost: return "device->host";
    case Link::kSameDevice: return "same device";
    case Link::kPeerDevice: return "peer device";
    case Link::kStaged: return "staged";
  }
  return "?";
}

const char* MethodName(Method m) { return m == Method::kKernel ? "copy kernel" : "copy engine"; }

double CostModel::CopyEngineNanos(Link link, uint64_t items, uint64_t bytes) const {
  if (items == 0) return 0;
  return ce_latency_ns + static_cast<double>(items - 1) * ce_submit_ns +
         static_cast<double>(bytes) / ce_gbps[static_cast<int>(link)];
}

double CostModel::KernelNanos(Link link, uint64_t items, uint64_t bytes) const {
  const double gbps = kernel_gbps[static_cast<int>(link)];
  if (items == 0) return 0;
  if (gbps <= 0) return 1e30;  // the kernel cannot do this link
  return kernel_latency_ns + static_cast<double>(items) * kernel_per_desc_ns + static_cast<double>(bytes) / gbps;
}

BatchPlan PlanBatch(std::span<const PlanItem> items, const CostModel& model) {
  BatchPlan plan;
  struct Candidate {
    std::vector<uint32_t> idx;
    uint64_t bytes = 0;
    uint64_t link_bytes[kLinkCount] = {};
  };
  // A handful of GPUs at most: a vector searched from the last hit beats a map per item.
  std::vector<std::pair<int, Candidate>> by_device;
  size_t last = 0;
  auto candidate = [&](int device) -> Candidate& {
    if (last < by_device.size() && by_device[last].first == device) return by_device[last].second;
    for (last = 0; last < by_device.size(); ++last)
      if (by_device[last].first == device) return by_device[last].second;
    by_device.emplace_back(device, Candidate{});
    return by_device.back().second;
  };
  for (uint32_t i = 0; i < items.size(); ++i) {
    const PlanItem& it = items[i];
    if (it.device < 0) continue;  // failed before planning
    if (it.kernel_ok && it.len < model.kernel_max_item && model.kernel_gbps[static_cast<int>(it.link)] > 0) {
      Candidate& c = candidate(it.device);
      c.idx.push_back(i);
      c.bytes += it.len;
      c.link_bytes[static_cast<int>(it.link)] += it.len;
    } else {
      plan.copy_engine.push_back(i);
    }
  }
  // By device: deterministic plans for tests and logs.
  std::sort(by_device.begin(), by_device.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [device, c] : by_device) {
    // Cost both ways with the per-link times summed (one kernel moves all links at once, bounded
    // by the slowest; summing is the conservative estimate).
    double ce = 0, kernel = model.kernel_latency_ns + static_cast<double>(c.idx.size()) * model.kernel_per_desc_ns;
    ce = model.ce_latency_ns + static_cast<double>(c.idx.size() - 1) * model.ce_submit_ns;
    for (int l = 0; l < kLinkCount; ++l) {
      if (!c.link_bytes[l]) continue;
      ce += static_cast<double>(c.link_bytes[l]) / model.ce_gbps[l];
      kernel += static_cast<double>(c.link_bytes[l]) / model.kernel_gbps[l];
    }
    if (c.idx.size() >= 2 && kernel < ce) {
      plan.kernel.push_back(KernelGroup{device, std::move(c.idx), c.bytes});
    } else {
      plan.copy_engine.insert(plan.copy_engine.end(), c.idx.begin(), c.idx.end());
    }
  }
  std::sort(plan.copy_engine.begin(), plan.copy_engine.end());
  return plan;
}

void PackDescriptors(uint64_t dst, uint64_t src, uint64_t len, uint32_t max_chunk, std::vector<DeviceCopyDesc>& out) {
  if (max_chunk < 16) max_chunk = 16;
  max_chunk &= ~15u;
  for (uint64_t off = 0; off < len; off += max_chunk) {
    const uint64_t n = std::min<uint64_t>(max_chunk, len - off);
    out.push_back(DeviceCopyDesc{dst + off, src + off, static_cast<uint32_t>(n), 0});
  }
}

uint32_t ChooseChunk(uint64_t total_bytes, uint64_t items, int sm_count) {
  // Aim at about 8 chunks per SM so the persistent blocks balance, within [4 KiB, 256 KiB].
  const uint64_t target = std::max<uint64_t>(1, static_cast<uint64_t>(std::max(sm_count, 1)) * 8);
  uint64_t chunk = total_bytes / target;
  chunk = std::clamp<uint64_t>(chunk, 4 << 10, 256 << 10);
  return static_cast<uint32_t>(chunk & ~uint64_t{15});
}

uint32_t ChooseGrid(uint64_t descs, int sms, int blocks_per_sm) {
  const uint64_t cap = static_cast<uint64_t>(std::max(sms, 1)) * static_cast<uint64_t>(std::max(blocks_per_sm, 1));
  return static_cast<uint32_t>(std::max<uint64_t>(1, std::min(descs, cap)));
}

PageLaunch PlanPages(uint64_t page_bytes, uint64_t pages, int sms, int blocks_per_sm, uint32_t max_chunk) {
  PageLaunch out;
  if (page_bytes == 0 || pages == 0) return out;
  uint64_t chunk = std::max<uint32_t>(16, max_chunk & ~15u);
  // A unit count per page that fits 32 bits: only pages over 64 TiB need larger units.
  const uint64_t min_chunk = (page_bytes + UINT32_MAX - 1) / UINT32_MAX;
  if (chunk < min_chunk) chunk = (min_chunk + 15) & ~uint64_t{15};
  if (page_bytes <= chunk) chunk = page_bytes;  // a page is one unit, of any length
  out.chunk = static_cast<uint32_t>(std::min<uint64_t>(chunk, UINT32_MAX & ~15u));
  out.chunks_per_page = static_cast<uint32_t>((page_bytes + out.chunk - 1) / out.chunk);
  out.units = pages * out.chunks_per_page;
  out.grid = ChooseGrid(out.units, sms, blocks_per_sm);
  return out;
}

}  // namespace weft::transport::cuda
