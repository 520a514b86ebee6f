// The etcd:// directory against an etcd with authentication enabled (a private etcd-server, its
// simple tokens living 1 s): a user's calls, leases, guarded commits and watches work and outlive
// their token; no user, a wrong password or a user without permission get UNAUTHENTICATED or
// PERMISSION_DENIED naming what to set. Skipped where etcd is not installed (fails in CI).
#include <gtest/gtest.h>

#include <httplib.h>

#include <atomic>
#include <thread>

#include <nlohmann/json.hpp>

#include "meta/base64.h"
#include "meta/directory.h"
#include "support/etcd_process.h"

namespace weft::meta {
namespace {

using etcd_test::EtcdProcess;
using etcd_test::FindEtcd;
using etcd_test::InCi;
using json = nlohmann::json;

// One call to etcd's JSON gateway for the set-up (users, roles, auth enable).
json Gateway(uint16_t port, const std::string& path, const json& body, const std::string& token = "") {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(std::chrono::seconds(10));
  httplib::Headers headers;
  if (!token.empty()) headers.emplace("Authorization", token);
  auto r = c.Post(path, headers, body.dump(), "application/json");
  if (!r) return json{{"error", "no answer"}};
  if (r->status != 200) return json{{"error", fmt::format("HTTP {} {}", r->status, r->body)}};
  return json::parse(r->body, nullptr, false);
}

class EtcdAuthTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (FindEtcd().empty()) return;
    etcd_ = new EtcdProcess;
    Status s = etcd_->Start({"--auth-token-ttl=1"});
    if (!s.ok()) {
      start_error_ = s.ToString();
      delete etcd_;
      etcd_ = nullptr;
      return;
    }
    uint16_t port = etcd_->port();
    Gateway(port, "/v3/auth/user/add", {{"name", "root"}, {"password", "root-pw"}});
    Gateway(port, "/v3/auth/role/add", {{"name", "root"}});
    Gateway(port, "/v3/auth/user/grant", {{"user", "root"}, {"role", "root"}});
    Gateway(port, "/v3/auth/user/add", {{"name", "weft"}, {"password", "weft-pw"}});
    Gateway(port, "/v3/auth/role/add", {{"name", "weft-rw"}});
    json granted = Gateway(port, "/v3/auth/role/grant",
            {{"name", "weft-rw"},
             {"perm", {{"permType", "READWRITE"}, {"key", Base64Encode("/weft/")}, {"range_end", Base64Encode("/weft0")}}}});
    if (granted.contains("error")) start_error_ = "grant permission: " + granted.dump();
    Gateway(port, "/v3/auth/user/grant", {{"user", "weft"}, {"role", "weft-rw"}});
    Gateway(port, "/v3/auth/user/add", {{"name", "stranger"}, {"password", "stranger-pw"}});
    json enabled = Gateway(port, "/v3/auth/enable", json::object());
    if (enabled.contains("error")) start_error_ = "auth enable: " + enabled.dump();
  }

  static void TearDownTestSuite() {
    delete etcd_;
    etcd_ = nullptr;
  }

  void SetUp() override {
    if (FindEtcd().empty()) {
      if (InCi()) FAIL() << "etcd is not installed; scripts/install-deps.sh installs etcd-server";
      GTEST_SKIP() << "etcd is not installed (apt-get install etcd-server, or scripts/install-deps.sh)";
    }
    ASSERT_NE(etcd_, nullptr) << "could not start etcd: " << start_error_;
    ASSERT_TRUE(start_error_.empty()) << start_error_;
  }

  std::unique_ptr<Directory> Open(const std::string& user, const std::string& password) {
    DirectoryOptions options;
    options.etcd_user = user;
    options.etcd_password = password;
    auto d = OpenDirectory(fmt::format("etcd://127.0.0.1:{}", etcd_->port()), options);
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    return d.ok() ? std::move(d).value() : nullptr;
  }

  static EtcdProcess* etcd_;
  static std::string start_error_;
};

EtcdProcess* EtcdAuthTest::etcd_ = nullptr;
std::string EtcdAuthTest::start_error_;

TEST_F(EtcdAuthTest, AUsersCallsWorkAndOutliveTheirToken) {
  auto dir = Open("weft", "weft-pw");
  ASSERT_NE(dir, nullptr);
  EXPECT_NE(dir->Describe().find("as user weft"), std::string::npos) << dir->Describe();
  EXPECT_EQ(dir->Describe().find("weft-pw"), std::string::npos);
  std::atomic<int> seen{0};
  auto watch = dir->Watch("/weft/auth/", [&](const WatchEvent& e) {
    if (e.kind == WatchEvent::Kind::kPut) seen++;
  });
  ASSERT_TRUE(watch.ok()) << watch.status().ToString();
  ASSERT_TRUE(dir->Put("/weft/auth/a", "1").ok());
  auto lease = dir->Grant(std::chrono::seconds(30));
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  ASSERT_TRUE(dir->Put("/weft/auth/leader", "me", *lease).ok());
  // Tokens live 1 s: every call below needs a new one, the watch's stream too.
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  auto got = dir->Get("/weft/auth/a");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, "1");
  ASSERT_TRUE(dir->KeepAlive(*lease).ok());
  std::vector<DirectoryWrite> writes = {{"/weft/auth/b", std::string("2")}};
  WriteGuard guard{"/weft/auth/leader", *lease};
  Status c = dir->Commit(writes, guard);
  ASSERT_TRUE(c.ok()) << c.ToString();
  auto listed = dir->List("/weft/auth/");
  ASSERT_TRUE(listed.ok()) << listed.status().ToString();
  EXPECT_EQ(listed->size(), 3u);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  ASSERT_TRUE(dir->Put("/weft/auth/c", "3").ok());
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (seen < 4 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(seen.load(), 4);  // a, leader, b (the commit), c: none lost across token expiry
}

TEST_F(EtcdAuthTest, NoUserOrAWrongPasswordIsUnauthenticatedAndSaysWhatToSet) {
  auto anonymous = Open("", "");
  ASSERT_NE(anonymous, nullptr);
  Status s = anonymous->Put("/weft/auth/x", "1");
  EXPECT_EQ(s.code(), Code::kUnauthenticated) << s.ToString();
  EXPECT_NE(s.message().find("WEFT_ETCD_USER"), std::string::npos) << s.ToString();
  auto wrong = Open("weft", "not-the-password");
  ASSERT_NE(wrong, nullptr);
  auto g = wrong->Get("/weft/auth/a");
  EXPECT_EQ(g.status().code(), Code::kUnauthenticated) << g.status().ToString();
  EXPECT_EQ(g.status().message().find("not-the-password"), std::string::npos);
}

TEST_F(EtcdAuthTest, AUserWithoutPermissionIsRefused) {
  auto stranger = Open("stranger", "stranger-pw");
  ASSERT_NE(stranger, nullptr);
  Status s = stranger->Put("/weft/auth/y", "1");
  EXPECT_EQ(s.code(), Code::kPermissionDenied) << s.ToString();
  auto weft_dir = Open("weft", "weft-pw");
  ASSERT_NE(weft_dir, nullptr);
  EXPECT_EQ(weft_dir->Get("/weft/auth/y").status().code(), Code::kNotFound);  // nothing was written
}

TEST_F(EtcdAuthTest, TheUserComesFromTheEnvironmentWhenNotGiven) {
  setenv("WEFT_ETCD_USER", "weft", 1);
  setenv("WEFT_ETCD_PASSWORD", "weft-pw", 1);
  auto dir = Open("", "");
  unsetenv("WEFT_ETCD_USER");
  unsetenv("WEFT_ETCD_PASSWORD");
  ASSERT_NE(dir, nullptr);
  Status s = dir->Put("/weft/auth/env", "1");
  EXPECT_TRUE(s.ok()) << s.ToString();
}

}  // namespace
}  // namespace weft::meta
