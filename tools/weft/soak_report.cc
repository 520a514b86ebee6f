#include "tools/weft/soak_report.h"

#include <fmt/format.h>

#include <weft/config.h>

namespace weft::tools::soak {
namespace {

constexpr uint32_t kKinds = static_cast<uint32_t>(OpKind::kCount);
constexpr uint32_t kFaults = static_cast<uint32_t>(Fault::kCount);

std::string FaultsLine(const ChaosReport& c) {
  std::string out;
  for (uint32_t f = 0; f < kFaults; ++f) {
    if (c.injected[f] == 0) continue;
    out += fmt::format("{}{} {}/{}", out.empty() ? "" : ", ", FaultName(static_cast<Fault>(f)), c.answered[f],
                       c.injected[f]);
  }
  return out.empty() ? "none" : out;
}

nlohmann::json PhaseJson(const PhaseResult& p) {
  nlohmann::json ops, errors = nlohmann::json::object(), injected, answered;
  for (uint32_t k = 0; k < kKinds; ++k) ops[OpKindName(static_cast<OpKind>(k))] = p.totals.ops[k];
  ops["total"] = p.totals.all_ops();
  for (uint32_t c = 0; c < kCodes; ++c)
    if (p.totals.errors[c]) errors[std::string(CodeName(static_cast<Code>(c)))] = p.totals.errors[c];
  for (uint32_t f = 0; f < kFaults; ++f) {
    injected[FaultName(static_cast<Fault>(f))] = p.chaos.injected[f];
    answered[FaultName(static_cast<Fault>(f))] = p.chaos.answered[f];
  }
  const uint64_t n = p.chaos.all_answered();
  return {{"transport", p.transport},
          {"where", p.where},
          {"seconds", p.seconds},
          {"ops", ops},
          {"bytes", p.totals.bytes},
          {"errors", errors},
          {"faults",
           {{"injected", injected},
            {"answered", answered},
            {"unanswered", p.chaos.unanswered},
            {"expelled_restarts", p.chaos.expelled_restarts},
            {"crashes", p.chaos.crashes},
            {"recovery_ms_max", p.chaos.recovery_ms_max},
            {"recovery_ms_mean", n ? p.chaos.recovery_ms_sum / static_cast<double>(n) : 0.0}}},
          {"mismatches", p.totals.mismatches + p.chaos.probe_mismatches},
          {"inconclusive", p.totals.inconclusive},
          {"hangs", p.hangs.size()},
          {"hang_details", p.hangs},
          {"mismatch_details", p.mismatch_notes},
          {"notes", p.chaos.notes},
          {"end_problems", p.end_problems},
          {"setup_error", p.setup_error},
          {"ok", p.ok()}};
}

void PrintDetails(const PhaseResult& p) {
  if (!p.setup_error.empty()) fmt::print("  [{}] could not run: {}\n", p.transport, p.setup_error);
  for (const auto& h : p.hangs) fmt::print("  [{}] HANG: {}\n", p.transport, h);
  for (const auto& m : p.mismatch_notes) fmt::print("  [{}] MISMATCH: {}\n", p.transport, m);
  for (const auto& n : p.chaos.notes) fmt::print("  [{}] {}\n", p.transport, n);
  for (const auto& e : p.end_problems) fmt::print("  [{}] {}\n", p.transport, e);
}

}  // namespace

std::string HumanBytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", n) : fmt::format("{:.2f} {}", v, units[u]);
}

std::string ErrorsByCode(const uint64_t (&errors)[kCodes]) {
  std::string out;
  for (uint32_t c = 0; c < kCodes; ++c)
    if (errors[c]) out += fmt::format("{}{} {}", out.empty() ? "" : ", ", CodeName(static_cast<Code>(c)), errors[c]);
  return out.empty() ? "none" : out;
}

std::string ProgressLine(const std::string& transport, double elapsed_s, const Totals& t, const ChaosReport& c,
                         size_t hangs) {
  const auto secs = static_cast<uint64_t>(elapsed_s);
  return fmt::format(
      "weft soak [{}] {:02}:{:02}: ops {} (copy {}, batch {}, async {}), {}, errors: {}; faults answered/injected: "
      "{}; mismatches {}, hangs {}",
      transport, secs / 60, secs % 60, t.all_ops(), t.ops[0], t.ops[1], t.ops[2], HumanBytes(t.bytes),
      ErrorsByCode(t.errors), FaultsLine(c), t.mismatches + c.probe_mismatches, hangs);
}

bool PrintReport(const std::vector<PhaseResult>& phases, const SoakSettings& s) {
  fmt::print("\nweft soak: {} peers x {} threads, ops of 1 B..{}, deadline {} ms, seed {}\n", s.peers, s.threads,
             FormatBytes(s.max_op), s.deadline_ms, s.seed);
  fmt::print("{:<9} {:>7} {:>10} {:>11} {:>8} {:>9} {:>10} {:>6}  {}\n", "transport", "seconds", "ops", "bytes",
             "errors", "faults a/i", "mismatches", "hangs", "result");
  fmt::print("{}\n", std::string(90, '-'));
  bool ok = true;
  for (const PhaseResult& p : phases) {
    ok &= p.ok();
    fmt::print("{:<9} {:>7.0f} {:>10} {:>11} {:>8} {:>4}/{:<4} {:>10} {:>6}  {}\n", p.transport, p.seconds,
               p.totals.all_ops(), HumanBytes(p.totals.bytes), p.totals.all_errors(), p.chaos.all_answered(),
               p.chaos.all_injected(), p.totals.mismatches + p.chaos.probe_mismatches, p.hangs.size(),
               p.ok() ? "ok" : "FAILED");
  }
  fmt::print("\n");
  for (const PhaseResult& p : phases) {
    const uint64_t n = p.chaos.all_answered();
    fmt::print("[{}] peers on {}\n", p.transport, p.where.empty() ? "-" : p.where);
    fmt::print("[{}] ops by kind: copy {}, batch {}, async {}; inconclusive (an end's peer restarted mid-op) {}\n",
               p.transport, p.totals.ops[0], p.totals.ops[1], p.totals.ops[2], p.totals.inconclusive);
    fmt::print("[{}] errors by code: {}\n", p.transport, ErrorsByCode(p.totals.errors));
    fmt::print("[{}] faults answered/injected: {}; unanswered {}; expelled peers restarted {}; crashes {}; "
               "recovery mean {:.0f} ms, max {:.0f} ms\n",
               p.transport, FaultsLine(p.chaos), p.chaos.unanswered, p.chaos.expelled_restarts, p.chaos.crashes,
               n ? p.chaos.recovery_ms_sum / static_cast<double>(n) : 0.0, p.chaos.recovery_ms_max);
    PrintDetails(p);
  }
  fmt::print("weft soak: {}\n", ok ? "PASSED (no mismatch, no hang, every fault answered)" : "FAILED");
  return ok;
}

nlohmann::json ReportJson(const std::vector<PhaseResult>& phases, const SoakSettings& s) {
  nlohmann::json j;
  j["peers"] = s.peers;
  j["threads"] = s.threads;
  j["seed"] = s.seed;
  j["max_op"] = s.max_op;
  j["deadline_ms"] = s.deadline_ms;
  j["chaos_interval_ms"] = s.chaos_interval_ms;
  bool ok = true;
  for (const PhaseResult& p : phases) {
    j["phases"].push_back(PhaseJson(p));
    ok &= p.ok();
  }
  j["ok"] = ok;
  return j;
}

}  // namespace weft::tools::soak
