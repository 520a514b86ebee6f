// One HTTP request with a deadline, for the directory clients (embedded, etcd, p2p). Transport
// failures become UNAVAILABLE (or TIMEOUT once the deadline has passed), always naming the
// address, so a caller can tell "the directory is down" from "the directory said no".
// Internal to src/meta; cpp-httplib stays out of the public headers.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "base/clock.h"
#include "base/result.h"
#include "meta/directory.h"

namespace httplib {
class Client;
}

namespace weft::meta {

struct HttpReply {
  int status = 0;
  std::string body;
};

struct HttpTarget {
  std::string host;
  uint16_t port = 0;
  std::string Address() const;  // "host:port", brackets around IPv6 literals
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// method is "GET", "POST", "PUT" or "DELETE". Each phase (connect, send, receive) is bounded by
// the time left to the deadline. `headers` are sent as given (an X-Weft-Auth proof).
Result<HttpReply> HttpCall(const HttpTarget& target, const std::string& method, const std::string& path,
                           const std::string& body, Deadline deadline, const char* what,
                           const HttpHeaders& headers = {});

// Applies the deadline to a client's connect/read/write timeouts (at least 1 ms).
void SetClientDeadline(httplib::Client& client, Deadline deadline);

// The Status for a failed httplib request (error is httplib::Error as int).
Status HttpFailure(int error, const HttpTarget& target, Deadline deadline, const char* what);

// Percent-encodes everything but RFC 3986 unreserved characters (for query values).
std::string UrlEncode(const std::string& text);

// The thread behind a client-side watch (embedded long-poll, etcd stream). The loop owns an
// httplib::Client per request and publishes it in `client` so that Cancel can abort a request
// that is blocked reading (httplib's stop() shuts the socket down).
struct WatchThreadState {
  std::atomic<bool> cancelled{false};
  std::atomic<bool> done{false};
  std::mutex mu;
  std::condition_variable cv;
  httplib::Client* client = nullptr;  // guarded by mu

  // Sleeps up to `d`; false when cancelled (then the loop should return).
  bool SleepFor(std::chrono::milliseconds d);
  void SetClient(httplib::Client* c);
};

// Starts `loop` on a thread and returns the handle that cancels it: Cancel sets `cancelled`,
// aborts the request in flight (again and again, in case it had not started yet) and joins.
// Called from the loop's own thread (a callback cancelling its watch) it just detaches.
WatchHandle StartWatchThread(std::function<void(WatchThreadState&)> loop);

// cpp-httplib writes without MSG_NOSIGNAL: a connection the server closes (or a watch that
// Cancel shuts down) while a request is being written would raise SIGPIPE, whose default action
// ends the process. A thread that makes directory calls blocks it here, so the write fails with
// EPIPE, an error to retry. Watch threads do this themselves.
void BlockSigpipeInThisThread();

}  // namespace weft::meta
