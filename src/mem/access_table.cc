#include "mem/access_table.h"

namespace weft::mem {

Status AccessTable::Register(const SegmentEntry& entry) {
  if (!entry.base && entry.size != 0) return Error(Code::kInvalidArgument, "segment {} has a null base", entry.id);
  auto slot = std::make_shared<Slot>();
  slot->entry = entry;
  slot->permissions.store(entry.permissions);
  std::unique_lock lock(mu_);
  if (slots_.count(entry.id)) return Error(Code::kAlreadyExists, "segment {} is already registered", entry.id);
  slots_.emplace(entry.id, std::move(slot));
  return OkStatus();
}

Status AccessTable::Unregister(uint32_t id) {
  std::shared_ptr<Slot> slot;
  {
    std::unique_lock lock(mu_);
    auto it = slots_.find(id);
    if (it == slots_.end() || it->second->removed.load()) return Error(Code::kNotFound, "segment {} is not registered", id);
    slot = it->second;
    slot->removed.store(true);  // Find refuses from now on
  }
  {
    std::unique_lock lock(drain_mu_);
    drained_.wait(lock, [&] { return slot->pins.load() == 0; });
  }
  std::unique_lock lock(mu_);
  auto it = slots_.find(id);
  if (it != slots_.end() && it->second == slot) slots_.erase(it);
  return OkStatus();
}

Status AccessTable::SetPermissions(uint32_t id, uint32_t permissions) {
  std::shared_lock lock(mu_);
  auto it = slots_.find(id);
  if (it == slots_.end() || it->second->removed.load()) return Error(Code::kNotFound, "segment {} is not registered", id);
  it->second->permissions.store(permissions);
  return OkStatus();
}

Result<uint8_t*> AccessTable::Find(uint32_t segment_id, uint64_t access_key, uint64_t offset, uint64_t len,
                                   bool write) {
  std::shared_lock lock(mu_);
  auto it = slots_.find(segment_id);
  if (it == slots_.end() || it->second->removed.load())
    return Error(Code::kNotFound, "segment {} is not registered at this peer", segment_id);
  Slot& s = *it->second;
  if (access_key != s.entry.access_key)
    return Error(Code::kPermissionDenied, "wrong access key for segment {}", segment_id);
  uint32_t need = write ? kWrite : kRead;
  if ((s.permissions.load() & need) == 0)
    return Error(Code::kPermissionDenied, "segment {} does not allow {}", segment_id, write ? "writes" : "reads");
  if (offset > s.entry.size || len > s.entry.size - offset)
    return Error(Code::kOutOfRange, "[{}, +{}) runs past the end of segment {} ({} bytes)", offset, len, segment_id,
                 s.entry.size);
  s.pins.fetch_add(1);
  return s.entry.base + offset;
}

void AccessTable::Release(uint32_t segment_id) {
  std::shared_ptr<Slot> slot;
  {
    std::shared_lock lock(mu_);
    auto it = slots_.find(segment_id);
    if (it == slots_.end()) return;
    slot = it->second;
  }
  if (slot->pins.fetch_sub(1) == 1 && slot->removed.load()) {
    std::lock_guard lock(drain_mu_);
    drained_.notify_all();
  }
}

size_t AccessTable::size() const {
  std::shared_lock lock(mu_);
  size_t n = 0;
  for (auto& [id, s] : slots_)
    if (!s->removed.load()) ++n;
  return n;
}

bool AccessTable::IsDevice(uint32_t segment_id) {
  std::shared_lock lock(mu_);
  auto it = slots_.find(segment_id);
  return it != slots_.end() && it->second->entry.device;
}

}  // namespace weft::mem
