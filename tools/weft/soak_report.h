// What `weft soak` prints: a progress line while it runs, the final table, and the JSON report.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tools/weft/soak_run.h"

namespace weft::tools::soak {

// "1.25 GiB".
std::string HumanBytes(uint64_t bytes);
// "PEER_DOWN 12, TIMEOUT 3" (or "none").
std::string ErrorsByCode(const uint64_t (&errors)[kCodes]);
std::string ProgressLine(const std::string& transport, double elapsed_s, const Totals& t, const ChaosReport& c,
                         size_t hangs);
// The table, the details of anything that failed, and the verdict; true when every phase passed.
bool PrintReport(const std::vector<PhaseResult>& phases, const SoakSettings& s);
nlohmann::json ReportJson(const std::vector<PhaseResult>& phases, const SoakSettings& s);

}  // namespace weft::tools::soak
