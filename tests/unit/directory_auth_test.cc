// Who may change the embedded directory (meta/directory_auth.h, DirectoryServer): each attack a
// probe found, against a live transfer engine's descriptor, refused with its documented status and
// the record left as it was; the owner putting its record back when it is changed under it; and
// legitimate clients (weft's own, with the secret) still publishing, renewing and deleting.
//
// Bounds here (kPatience) only decide when a test gives up waiting, never what it asserts about
// speed: everything that "happens soon" is polled for.
#include <gtest/gtest.h>
#include <httplib.h>

#include <chrono>
#include <set>
#include <string>
#include <thread>

#include <weft/transfer_engine.h>

#include "base/random.h"
#include "meta/base64.h"
#include "meta/directory.h"
#include "meta/directory_auth.h"
#include "meta/directory_server.h"
#include "meta/memory_store.h"
#include "meta/p2p_directory.h"

namespace weft::meta {
namespace {

using namespace std::chrono_literals;

constexpr char kSecret[] = "dir-auth-test-secret-7f3a";
constexpr auto kPatience = 30s;

std::string Fresh(const char* what) { return fmt::format("{}-{:016x}", what, FreshSeed()); }

std::unique_ptr<DirectoryServer> StartServer(const std::string& secret) {
  DirectoryServerOptions so;
  so.cluster_secret = secret;
  auto s = DirectoryServer::Start(so);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(s).value() : nullptr;
}

std::unique_ptr<Directory> Open(const std::string& url, const std::string& secret) {
  DirectoryOptions o;
  o.cluster_secret = secret;
  auto d = OpenDirectory(url, o);
  EXPECT_TRUE(d.ok()) << d.status().ToString();
  return d.ok() ? std::move(d).value() : nullptr;
}

trans::TransferEngineOptions EngineOpts(const std::string& url, const std::string& name) {
  trans::TransferEngineOptions o;
  o.local_name = name;
  o.metadata = url;
  o.bind_host = "127.0.0.1";
  o.advertise_host = "127.0.0.1";
  o.auth.cluster_secret = kSecret;
  o.descriptor_lease = 900ms;  // renewed and checked every 300 ms
  o.metadata_timeout = 2000ms;
  return o;
}

std::unique_ptr<trans::TransferEngine> MakeEngine(const trans::TransferEngineOptions& o) {
  auto te = trans::TransferEngine::Create(o);
  EXPECT_TRUE(te.ok()) << te.status().ToString();
  return te.ok() ? std::move(te).value() : nullptr;
}

std::string DescriptorKey(const std::string& name) { return "mooncake/ram/" + name; }

// What a raw request got back: status 0 when it got nothing.
struct Reply {
  int status = 0;
  std::string body;
  explicit operator bool() const { return status != 0; }
  const Reply* operator->() const { return this; }
};

Reply From(const httplib::Result& r) { return r ? Reply{r->status, r->body} : Reply{}; }

// Raw HTTP as an attacker speaks it: no weft client, any header it likes.
struct Raw {
  explicit Raw(uint16_t port) : client("127.0.0.1", port) { client.set_read_timeout(10s); }

  Reply Post(const std::string& path, const std::string& body, const std::string& proof = "") {
    httplib::Headers h;
    if (!proof.empty()) h.emplace(std::string(kDirectoryAuthHeader), proof);
    return From(client.Post(path, h, body, "application/json"));
  }
  Reply Mooncake(const std::string& method, const std::string& key, const std::string& body = "",
                 const std::string& proof = "") {
    httplib::Headers h;
    if (!proof.empty()) h.emplace(std::string(kDirectoryAuthHeader), proof);
    std::string path = "/metadata?key=" + key;
    if (method == "PUT") return From(client.Put(path, h, body, "application/json"));
    return From(client.Delete(path, h));
  }
  httplib::Client client;
};

std::string JsonBody(const std::string& op, const std::string& key, const std::string& value = "", LeaseId lease = 0) {
  DirectoryRequest r;
  r.op = op == "put" ? DirectoryRequest::Op::kPut : DirectoryRequest::Op::kDelete;
  r.key = key;
  r.value = value;
  r.lease = lease;
  return EncodeDirectoryRequest(r);
}

// One engine publishing into a directory server; the test plays the others.
class DirectoryAuthEngine : public ::testing::Test {
 protected:
  void StartWith(const std::string& server_secret) {
    server_ = StartServer(server_secret);
    ASSERT_TRUE(server_);
    url_ = "embedded://" + server_->address();
    name_ = Fresh("victim");
    engine_ = MakeEngine(EngineOpts(url_, name_));
    ASSERT_TRUE(engine_);
    ASSERT_TRUE(engine_->RegisterMemory(mem_.data(), mem_.size(), "cpu:0").ok());
    key_ = DescriptorKey(name_);
    auto v = server_->store()->Get(key_);
    ASSERT_TRUE(v.ok()) << v.status().ToString();
    record_ = *v;
  }

  // The record as the engine wrote it, after every attack.
  void ExpectRecordUnchanged() {
    auto v = server_->store()->Get(key_);
    ASSERT_TRUE(v.ok()) << "the descriptor is gone: " << v.status().ToString();
    EXPECT_EQ(*v, record_) << "the descriptor was replaced";
  }

  // Polls until the record is the engine's again (or gives up after kPatience).
  bool WaitForRecord() {
    auto until = Clock::now() + kPatience;
    while (Clock::now() < until) {
      auto v = server_->store()->Get(key_);
      if (v.ok() && *v == record_) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }

  std::vector<uint8_t> mem_ = std::vector<uint8_t>(1 << 16);
  std::unique_ptr<DirectoryServer> server_;
  std::string url_, name_, key_, record_;
  std::unique_ptr<trans::TransferEngine> engine_;
};

// --- (1) no secret ---

TEST_F(DirectoryAuthEngine, ClientWithoutTheSecretCannotDeleteOrReplace) {
  StartWith(kSecret);
  Raw raw(server_->port());
  for (auto r : {raw.Post("/v1/kv/delete", JsonBody("delete", key_)),
                 raw.Post("/v1/kv/put", JsonBody("put", key_, "forged")),
                 raw.Post("/v1/lease/grant", R"({"ttl_ms":1000})"),
                 raw.Mooncake("PUT", key_, "forged"), raw.Mooncake("DELETE", key_)}) {
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << r->body;
    EXPECT_NE(r->body.find("cluster secret"), std::string::npos) << r->body;
  }
  // weft's own clients without the secret get the same answer, as a Status.
  auto d = Open(url_, "");
  EXPECT_EQ(d->Delete(key_).code(), Code::kUnauthenticated);
  EXPECT_EQ(d->Put(key_, "forged").code(), Code::kUnauthenticated);
  EXPECT_EQ(d->PutIfAbsent(Fresh("k"), "v").status().code(), Code::kUnauthenticated);
  EXPECT_EQ(d->Grant(1s).status().code(), Code::kUnauthenticated);
  auto m = Open("http://" + server_->address() + "/metadata", "");
  EXPECT_EQ(m->Put(key_, "forged").code(), Code::kUnauthenticated);
  EXPECT_EQ(m->Delete(key_).code(), Code::kUnauthenticated);
  ExpectRecordUnchanged();
  // Reads stay open.
  EXPECT_EQ(d->Get(key_).value_or("?"), record_);
}

TEST_F(DirectoryAuthEngine, WithoutASecretTheLeaseStillGuardsTheRecord) {
  StartWith("");  // an open directory: anyone may write keys under no lease, none held under a lease
  Raw raw(server_->port());
  for (auto r : {raw.Post("/v1/kv/delete", JsonBody("delete", key_)),
                 raw.Post("/v1/kv/put", JsonBody("put", key_, "forged")), raw.Mooncake("PUT", key_, "forged"),
                 raw.Mooncake("DELETE", key_)}) {
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403) << r->body;
    EXPECT_NE(r->body.find("lease"), std::string::npos) << r->body;
  }
  auto d = Open(url_, "");
  EXPECT_EQ(d->Delete(key_).code(), Code::kPermissionDenied);
  EXPECT_EQ(d->Put(key_, "forged").code(), Code::kPermissionDenied);
  auto mine = d->Grant(5s);
  ASSERT_TRUE(mine.ok());
  EXPECT_EQ(d->Put(key_, "forged", *mine).code(), Code::kPermissionDenied);  // a lease, not *the* lease
  ExpectRecordUnchanged();
  // Mooncake's lease-less clients still work on keys under no lease.
  std::string other = Fresh("mooncake/ram/plain");
  auto put = raw.Mooncake("PUT", other, "v");
  ASSERT_TRUE(put);
  EXPECT_EQ(put->status, 200);
  auto del = raw.Mooncake("DELETE", other);
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 200);
}

// --- (2) a wrong secret ---

TEST_F(DirectoryAuthEngine, ClientWithAWrongSecretCannotDeleteOrReplace) {
  StartWith(kSecret);
  auto d = Open(url_, "not-the-secret");
  Status s = d->Delete(key_);
  EXPECT_EQ(s.code(), Code::kUnauthenticated);
  EXPECT_EQ(s.message().find(kSecret), std::string::npos);  // the secret is never in a message
  EXPECT_NE(s.message().find("does not match"), std::string::npos) << s.ToString();
  EXPECT_EQ(d->Put(key_, "forged").code(), Code::kUnauthenticated);
  EXPECT_EQ(d->Grant(1s).status().code(), Code::kUnauthenticated);
  auto m = Open("http://" + server_->address() + "/metadata", "not-the-secret");
  EXPECT_EQ(m->Put(key_, "forged").code(), Code::kUnauthenticated);
  EXPECT_EQ(m->Delete(key_).code(), Code::kUnauthenticated);
  // Proofs that are not proofs.
  Raw raw(server_->port());
  auto wrong = SignDirectoryRequest("not-the-secret", {"POST", "/v1/kv/delete", key_, JsonBody("delete", key_)});
  ASSERT_TRUE(wrong.ok());
  for (const std::string& proof : {*wrong, std::string("v1 1 2 3"), std::string("garbage"),
                                   std::string("v1 0 00000000000000000000000000000000 ") + std::string(64, '0')}) {
    auto r = raw.Post("/v1/kv/delete", JsonBody("delete", key_), proof);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << proof << ": " << r->body;
  }
  ExpectRecordUnchanged();
}

TEST_F(DirectoryAuthEngine, AProofIsGoodForOneRequestOnce) {
  StartWith(kSecret);
  Raw raw(server_->port());
  std::string key = Fresh("k");
  std::string body = JsonBody("put", key, "v1");
  auto proof = SignDirectoryRequest(kSecret, {"POST", "/v1/kv/put", key, body});
  ASSERT_TRUE(proof.ok());
  auto first = raw.Post("/v1/kv/put", body, *proof);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 200) << first->body;
  auto replay = raw.Post("/v1/kv/put", body, *proof);  // recorded and sent again
  ASSERT_TRUE(replay);
  EXPECT_EQ(replay->status, 401) << replay->body;
  // The proof of one request does not carry over to another body, key or path.
  auto other = SignDirectoryRequest(kSecret, {"POST", "/v1/kv/put", key, body});
  ASSERT_TRUE(other.ok());
  auto moved = raw.Post("/v1/kv/put", JsonBody("put", key_, "forged"), *other);
  ASSERT_TRUE(moved);
  EXPECT_EQ(moved->status, 401) << moved->body;
  auto to_delete = raw.Post("/v1/kv/delete", JsonBody("delete", key_), *other);
  ASSERT_TRUE(to_delete);
  EXPECT_EQ(to_delete->status, 401) << to_delete->body;
  // An old proof (ten minutes ago) is refused, however well signed.
  auto old = SignDirectoryRequest(kSecret, {"POST", "/v1/kv/delete", key_, JsonBody("delete", key_)},
                                  WallClock::now() - 10min);
  ASSERT_TRUE(old.ok());
  auto stale = raw.Post("/v1/kv/delete", JsonBody("delete", key_), *old);
  ASSERT_TRUE(stale);
  EXPECT_EQ(stale->status, 401) << stale->body;
  ExpectRecordUnchanged();
}

// --- (3) the secret but not the owner's lease ---

TEST_F(DirectoryAuthEngine, SecretWithoutTheLeaseCannotReplaceALeasedKey) {
  StartWith(kSecret);
  auto d = Open(url_, kSecret);
  EXPECT_EQ(d->Put(key_, "forged").code(), Code::kPermissionDenied);
  auto mine = d->Grant(5s);
  ASSERT_TRUE(mine.ok()) << mine.status().ToString();
  EXPECT_EQ(d->Put(key_, "forged", *mine).code(), Code::kPermissionDenied);
  EXPECT_EQ(d->Delete(key_).code(), Code::kPermissionDenied);
  EXPECT_EQ(d->Delete(key_, *mine).code(), Code::kPermissionDenied);
  EXPECT_FALSE(d->PutIfAbsent(key_, "forged").value_or(true));  // exists: left unchanged
  // Guessing the lease: ids are 63 random bits from the OS, so a guess is not the owner's.
  for (int i = 0; i < 100; ++i) {
    LeaseId guess = static_cast<LeaseId>(FreshSeed() & 0x7fffffffffffffffull);
    if (guess == 0) continue;
    EXPECT_EQ(d->Put(key_, "forged", guess).code(), Code::kPermissionDenied);
  }
  // Mooncake's protocol, signed: it names no lease, so it reaches only keys under none.
  auto m = Open("http://" + server_->address() + "/metadata", kSecret);
  EXPECT_EQ(m->Put(key_, "forged").code(), Code::kPermissionDenied);
  EXPECT_EQ(m->Delete(key_).code(), Code::kPermissionDenied);
  ExpectRecordUnchanged();
  EXPECT_TRUE(d->Revoke(*mine).ok());
}

TEST(DirectoryAuthTest, LeaseIdsAreNotASequence) {
  MemoryStore store;
  std::set<LeaseId> ids;
  LeaseId last = 0;
  int steps = 0;
  for (int i = 0; i < 64; ++i) {
    auto id = store.Grant(10s);
    ASSERT_TRUE(id.ok());
    EXPECT_GT(*id, 0);
    ids.insert(*id);
    if (last != 0 && *id - last == 1) ++steps;
    last = *id;
  }
  EXPECT_EQ(ids.size(), 64u);
  EXPECT_EQ(steps, 0);
}

// --- (4) the owner re-asserts its record ---

TEST_F(DirectoryAuthEngine, OwnerPutsItsRecordBackWhenChangedUnderIt) {
  StartWith(kSecret);
  // Replaced behind the server's checks (an in-process user of the store): the key now sits under
  // no lease with a stranger's value.
  ASSERT_TRUE(server_->store()->Put(key_, "forged").ok());
  EXPECT_TRUE(WaitForRecord()) << "the engine did not put its descriptor back after it was replaced";
  // Deleted the same way.
  ASSERT_TRUE(server_->store()->Delete(key_).ok());
  EXPECT_TRUE(WaitForRecord()) << "the engine did not put its descriptor back after it was deleted";
  // And it is under the engine's lease again: a holder of the secret cannot touch it.
  auto d = Open(url_, kSecret);
  EXPECT_EQ(d->Put(key_, "forged").code(), Code::kPermissionDenied);
  ExpectRecordUnchanged();
}

TEST(DirectoryAuthTest, OwnerWithoutALeaseReassertsOverMooncakesProtocol) {
  // Mooncake's protocol has no leases: any holder of the secret may write the engine's key; the
  // engine notices and writes it back.
  auto server = StartServer(kSecret);
  ASSERT_TRUE(server);
  std::string url = "http://" + server->address() + "/metadata";
  std::string name = Fresh("victim");
  auto engine = MakeEngine(EngineOpts(url, name));
  ASSERT_TRUE(engine);
  std::vector<uint8_t> mem(1 << 16);
  ASSERT_TRUE(engine->RegisterMemory(mem.data(), mem.size(), "cpu:0").ok());
  std::string key = DescriptorKey(name);
  auto record = server->store()->Get(key);
  ASSERT_TRUE(record.ok());
  auto insider = Open(url, kSecret);
  ASSERT_TRUE(insider->Put(key, "forged").ok());
  auto until = Clock::now() + kPatience;
  Result<std::string> now = Error(Code::kNotFound, "not yet");
  while (Clock::now() < until) {
    now = server->store()->Get(key);
    if (now.ok() && *now == *record) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(now.ok()) << now.status().ToString();
  EXPECT_EQ(*now, *record) << "the engine did not put its descriptor back";
}

// --- (5) legitimate clients ---

TEST(DirectoryAuthTest, ClientWithTheSecretPublishesRenewsAndDeletes) {
  auto server = StartServer(kSecret);
  ASSERT_TRUE(server);
  auto d = Open("embedded://" + server->address(), kSecret);
  std::string key = Fresh("member");
  auto lease = d->Grant(2s);
  ASSERT_TRUE(lease.ok()) << lease.status().ToString();
  ASSERT_TRUE(d->Put(key, "v1", *lease).ok());
  EXPECT_TRUE(d->KeepAlive(*lease).ok());
  ASSERT_TRUE(d->Put(key, "v2", *lease).ok());  // the owner updates its own record
  EXPECT_EQ(d->Get(key).value_or("?"), "v2");
  ASSERT_TRUE(d->Delete(key, *lease).ok());  // and deletes it, naming the lease
  EXPECT_EQ(d->Get(key).status().code(), Code::kNotFound);
  ASSERT_TRUE(d->PutIfAbsent(key, "v3", *lease).value_or(false));
  ASSERT_TRUE(d->Revoke(*lease).ok());
  EXPECT_EQ(d->Get(key).status().code(), Code::kNotFound);
  // Keys under no lease: anyone with the secret.
  ASSERT_TRUE(d->Put(key, "plain").ok());
  ASSERT_TRUE(d->Delete(key).ok());
  // Mooncake's protocol with the secret.
  auto m = Open("http://" + server->address() + "/metadata", kSecret);
  ASSERT_TRUE(m->Put(key, "mooncake").ok());
  EXPECT_EQ(m->Get(key).value_or("?"), "mooncake");
  ASSERT_TRUE(m->Delete(key).ok());
  // Watches are reads: open to all.
  auto reader = Open("embedded://" + server->address(), "");
  EXPECT_TRUE(reader->Watch(key, [](const WatchEvent&) {}).ok());
}

TEST(DirectoryAuthTest, EnginesWithTheSecretFindEachOtherAndWithdraw) {
  auto server = StartServer(kSecret);
  ASSERT_TRUE(server);
  std::string url = "embedded://" + server->address();
  auto a = MakeEngine(EngineOpts(url, Fresh("a")));
  auto b = MakeEngine(EngineOpts(url, Fresh("b")));
  ASSERT_TRUE(a && b);
  std::vector<uint8_t> ma(1 << 16), mb(1 << 16);
  ASSERT_TRUE(a->RegisterMemory(ma.data(), ma.size(), "cpu:0").ok());
  ASSERT_TRUE(b->RegisterMemory(mb.data(), mb.size(), "cpu:0").ok());
  auto h = a->OpenSegment(b->name());
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  uint64_t seed = FreshSeed();
  FillRandom(ma.data(), 4096, seed);
  auto res = a->Transfer({{{trans::Opcode::kWrite, ma.data(), *h, reinterpret_cast<uint64_t>(mb.data()), 4096}}});
  for (const auto& s : res) EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_FALSE(FirstMismatch(mb.data(), 4096, seed).has_value());
  std::string key_b = DescriptorKey(b->name());
  ASSERT_TRUE(server->store()->Get(key_b).ok());
  b.reset();  // withdraws its descriptor (revokes its lease)
  EXPECT_EQ(server->store()->Get(key_b).status().code(), Code::kNotFound);
  // An engine without the secret cannot even publish.
  auto o = EngineOpts(url, Fresh("c"));
  o.auth.cluster_secret.clear();
  o.auth.allow_unauthenticated = true;
  auto c = trans::TransferEngine::Create(o);
  EXPECT_EQ(c.status().code(), Code::kUnauthenticated) << c.status().ToString();
}

TEST(DirectoryAuthTest, RestartedEngineWaitsOutItsPredecessorsLease) {
  auto server = StartServer(kSecret);
  ASSERT_TRUE(server);
  std::string url = "embedded://" + server->address();
  std::string name = Fresh("phoenix");
  // The previous process of this name died: its record sits under a lease no one renews.
  auto d = Open(url, kSecret);
  auto old = d->Grant(1500ms);
  ASSERT_TRUE(old.ok());
  ASSERT_TRUE(d->Put(DescriptorKey(name), "from the dead process", *old).ok());
  auto engine = MakeEngine(EngineOpts(url, name));  // waits for the old lease to run out
  ASSERT_TRUE(engine);
  auto v = server->store()->Get(DescriptorKey(name));
  ASSERT_TRUE(v.ok());
  EXPECT_NE(*v, "from the dead process");
}

TEST(DirectoryAuthTest, AnotherLiveEngineKeepsItsName) {
  auto server = StartServer(kSecret);
  ASSERT_TRUE(server);
  std::string url = "embedded://" + server->address();
  std::string name = Fresh("twin");
  auto first = MakeEngine(EngineOpts(url, name));
  ASSERT_TRUE(first);
  auto o = EngineOpts(url, name);
  o.descriptor_lease = 300ms;  // so the second gives up soon
  auto second = trans::TransferEngine::Create(o);
  EXPECT_EQ(second.status().code(), Code::kPermissionDenied) << second.status().ToString();
}

TEST(DirectoryAuthTest, P2PEndpointServesReadsOnly) {
  auto p = P2PDirectory::Open("127.0.0.1:0", {});
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_TRUE((*p)->Put("mooncake/ram/x", "mine").ok());
  auto hp = ParseHostPort((*p)->PeerName());
  ASSERT_TRUE(hp.ok());
  Raw raw(hp->second);
  for (auto r : {raw.Mooncake("PUT", "mooncake/ram/x", "forged"), raw.Mooncake("DELETE", "mooncake/ram/x"),
                 raw.Post("/v1/kv/delete", JsonBody("delete", "mooncake/ram/x"))}) {
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403) << r->body;
  }
  EXPECT_EQ((*p)->Get("mooncake/ram/x").value_or("?"), "mine");
  auto g = raw.client.Get("/metadata?key=mooncake/ram/x");
  ASSERT_TRUE(g);
  EXPECT_EQ(g->status, 200);
  EXPECT_EQ(g->body, "mine");
}

// --- the proof itself ---

TEST(DirectoryAuthTest, AuthenticatorChecksEveryField) {
  DirectoryAuthenticator auth(kSecret, 60s);
  SignedRequest r{"POST", "/v1/kv/put", "key", "body"};
  auto now = WallClock::now();
  auto proof = SignDirectoryRequest(kSecret, r, now);
  ASSERT_TRUE(proof.ok());
  for (SignedRequest other : {SignedRequest{"PUT", r.path, r.key, r.body}, SignedRequest{r.method, "/v1/kv/delete", r.key, r.body},
                              SignedRequest{r.method, r.path, "key2", r.body}, SignedRequest{r.method, r.path, r.key, "body2"}}) {
    EXPECT_EQ(auth.Check(*proof, other, now).code(), Code::kUnauthenticated);
  }
  EXPECT_TRUE(auth.Check(*proof, r, now).ok());
  EXPECT_EQ(auth.Check(*proof, r, now).code(), Code::kUnauthenticated);  // once
  auto late = SignDirectoryRequest(kSecret, r, now);
  ASSERT_TRUE(late.ok());
  EXPECT_EQ(auth.Check(*late, r, now + 61s).code(), Code::kUnauthenticated);  // too old by then
  auto early = SignDirectoryRequest(kSecret, r, now + 5min);
  ASSERT_TRUE(early.ok());
  EXPECT_EQ(auth.Check(*early, r, now).code(), Code::kUnauthenticated);  // from the future
  EXPECT_EQ(auth.Check("", r, now).code(), Code::kUnauthenticated);
}

TEST(DirectoryAuthTest, AuthenticatorMemoryIsBounded) {
  DirectoryAuthenticator auth(kSecret, 1s, /*max_nonces=*/4);
  SignedRequest r{"POST", "/v1/lease/grant", "", "{}"};
  auto now = WallClock::now();
  for (int i = 0; i < 4; ++i) {
    auto p = SignDirectoryRequest(kSecret, r, now);
    ASSERT_TRUE(p.ok());
    EXPECT_TRUE(auth.Check(*p, r, now).ok());
  }
  auto p = SignDirectoryRequest(kSecret, r, now);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(auth.Check(*p, r, now).code(), Code::kBusy);
  // Once the old proofs are too old to be replayed, they are forgotten and room is made.
  auto q = SignDirectoryRequest(kSecret, r, now + 2s);
  ASSERT_TRUE(q.ok());
  EXPECT_TRUE(auth.Check(*q, r, now + 2s).ok());
}

}  // namespace
}  // namespace weft::meta
