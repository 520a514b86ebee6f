// `weft bench`: placeholder until the benchmark lands.
#include "tools/weft/commands.h"

namespace weft::tools {
void AddBench(CLI::App& app, Runner* run) {}
}  // namespace weft::tools
