#include "meta/http_call.h"

#include <httplib.h>
#include <pthread.h>

#include <csignal>

#include "base/log.h"

#include <algorithm>
#include <thread>

namespace weft::meta {

std::string HttpTarget::Address() const {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

void SetClientDeadline(httplib::Client& client, Deadline deadline) {
  auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline.left());
  left = std::clamp(left, std::chrono::microseconds(1000), std::chrono::microseconds(3600LL * 1000 * 1000));
  client.set_connection_timeout(left);
  client.set_read_timeout(left);
  client.set_write_timeout(left);
}

Status HttpFailure(int error, const HttpTarget& target, Deadline deadline, const char* what) {
  auto e = static_cast<httplib::Error>(error);
  if (deadline.expired() || e == httplib::Error::ConnectionTimeout) {
    return Error(Code::kTimeout, "{} at {} did not answer before the deadline ({})", what, target.Address(),
                 httplib::to_string(e));
  }
  return Error(Code::kUnavailable, "cannot reach {} at {} ({}); is it running?", what, target.Address(),
               httplib::to_string(e));
}

Result<HttpReply> HttpCall(const HttpTarget& target, const std::string& method, const std::string& path,
                           const std::string& body, Deadline deadline, const char* what,
                           const HttpHeaders& headers) {
  if (deadline.expired()) {
    return Error(Code::kTimeout, "{} at {}: the deadline passed before the request was sent", what,
                 target.Address());
  }
  try {
    httplib::Client client(target.host, target.port);
    SetClientDeadline(client, deadline);
    client.set_keep_alive(false);
    httplib::Request req;
    req.method = method;
    req.path = path;
    for (const auto& [name, value] : headers) req.set_header(name, value);
    if (method == "POST" || method == "PUT") {
      req.body = body;
      req.set_header("Content-Type", method == "POST" ? "application/json" : "application/octet-stream");
    }
    httplib::Response res;
    httplib::Error err = httplib::Error::Success;
    if (!client.send(req, res, err)) {
      // etcd's gateway ends its error answers with HTTP trailers, which cpp-httplib 0.11 cannot
      // parse: the status and the whole body have arrived, only the trailer read "fails".
      bool trailer_only = err == httplib::Error::Read && res.status > 0 && res.has_header("Trailer") &&
                          !res.body.empty();
      if (!trailer_only) return HttpFailure(static_cast<int>(err), target, deadline, what);
    }
    return HttpReply{res.status, std::move(res.body)};
  } catch (const std::exception& e) {  // httplib may throw (std::regex, allocation)
    return Error(Code::kInternal, "{} at {}: HTTP client failed: {}", what, target.Address(), e.what());
  }
}

std::string UrlEncode(const std::string& text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

bool WatchThreadState::SleepFor(std::chrono::milliseconds d) {
  std::unique_lock lk(mu);
  cv.wait_for(lk, d, [&] { return cancelled.load(); });
  return !cancelled;
}

void WatchThreadState::SetClient(httplib::Client* c) {
  std::lock_guard lk(mu);
  client = c;
}

void BlockSigpipeInThisThread() {
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
}

WatchHandle StartWatchThread(std::function<void(WatchThreadState&)> loop) {
  auto st = std::make_shared<WatchThreadState>();
  auto th = std::make_shared<std::thread>([st, loop = std::move(loop)] {
    BlockSigpipeInThisThread();
    try {
      loop(*st);
    } catch (const std::exception& e) {  // a throwing callback must not take the process down
      WEFT_LOG_ERROR("directory watch stopped: {}", e.what());
    }
    st->done = true;
    st->cv.notify_all();
  });
  return WatchHandle([st, th] {
    st->cancelled = true;
    if (std::this_thread::get_id() == th->get_id()) {
      th->detach();  // the loop sees `cancelled` after the callback returns, and ends
      return;
    }
    std::unique_lock lk(st->mu);
    while (!st->done) {
      if (st->client != nullptr) st->client->stop();
      st->cv.notify_all();
      st->cv.wait_for(lk, std::chrono::milliseconds(10));
    }
    lk.unlock();
    th->join();
  });
}

}  // namespace weft::meta
