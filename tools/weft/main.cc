// weft: one CLI for the fabric (demo, bench, meta, status, route, config, soak).
#include <cstdio>

#include "tools/weft/commands.h"

int main(int argc, char** argv) {
  // Line by line even into a pipe: progress reaches whoever reads it (a test, a log collector) as
  // it happens, and what was printed survives a process that dies without flushing.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  CLI::App app{"weft: a memory fabric for GPU clusters"};
  app.require_subcommand(1);
  weft::tools::Runner run;
  weft::tools::AddDemo(app, &run);
  weft::tools::AddBench(app, &run);
  weft::tools::AddMeta(app, &run);
  weft::tools::AddStoreMaster(app, &run);
  weft::tools::AddRoute(app, &run);
  weft::tools::AddStatus(app, &run);
  weft::tools::AddConfig(app, &run);
  weft::tools::AddBenchGpu(app, &run);
  weft::tools::AddBenchTcp(app, &run);
  weft::tools::AddTrans(app, &run);
  weft::tools::AddBenchUcx(app, &run);
  weft::tools::AddBenchStore(app, &run);
  weft::tools::AddBenchColl(app, &run);
  weft::tools::AddBenchCoordinator(app, &run);
  weft::tools::AddSoak(app, &run);
  CLI11_PARSE(app, argc, argv);
  return run ? run() : 2;
}
