// The directory a test runs on, local (the in-process MemoryStore) or a private etcd started once
// per test binary (support/etcd_process.h). Without the etcd binary the etcd cases skip with a
// message, except under CI=true, where they fail.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>

#include "meta/directory.h"
#include "support/etcd_process.h"

namespace weft::etcd_test {

enum class Backend { kLocal, kEtcd };

inline std::string BackendName(const ::testing::TestParamInfo<Backend>& info) {
  return info.param == Backend::kLocal ? "Local" : "Etcd";
}

// The URL of `backend`, starting the suite's etcd on first use (kept in `etcd`: the suite deletes
// it in TearDownTestSuite). Empty after a skip or a failure: the test's body then does not run.
inline std::string TestDirectoryUrl(Backend backend, EtcdProcess*& etcd) {
  if (backend == Backend::kLocal) return "local";
  if (FindEtcd().empty()) {
    // FAIL and GTEST_SKIP return from the lambda only, but mark the test: its body does not run.
    if (InCi()) [] { FAIL() << "etcd is not installed; scripts/install-deps.sh installs etcd-server"; }();
    else [] { GTEST_SKIP() << "etcd is not installed (apt-get install etcd-server, or scripts/install-deps.sh); "
                         "skipping the etcd backend"; }();
    return {};
  }
  if (etcd == nullptr) {
    auto* started = new EtcdProcess;
    Status s = started->Start();
    if (!s.ok()) {
      delete started;
      [&] { FAIL() << "could not start etcd: " << s.ToString(); }();
      return {};
    }
    etcd = started;
  }
  return fmt::format("etcd://127.0.0.1:{}", etcd->port());
}

}  // namespace weft::etcd_test
