#include "engine/copy_failures.h"

#include <fmt/format.h>

namespace weft::engine {

CopyFailures::CopyFailures(MetricsRegistry& registry)
    : registry_(registry), total_(registry.counter("weft_copy_failures_total", "Copies that ended with an error")) {}

void CopyFailures::Count(const Status& s) {
  if (s.ok()) return;
  total_->Add();
  const auto code = static_cast<size_t>(s.code());
  if (code >= by_code_.size()) return;  // a code newer than this build: counted in the total only
  Counter* c = by_code_[code].load(std::memory_order_acquire);
  if (!c) {
    // The registry hands out one series per name, so two threads racing here get the same one.
    c = registry_.counter(fmt::format("weft_copy_errors_total{{code=\"{}\"}}", CodeName(s.code())),
                          "Copies that ended with an error, by error code");
    by_code_[code].store(c, std::memory_order_release);
  }
  c->Add();
}

void CopyFailures::CountAll(std::span<const Status> results) {
  for (const Status& s : results) Count(s);
}

}  // namespace weft::engine
