// A scripted fake of an OpenAI-compatible upstream, for tests: a small server
// on its own thread that answers each request with the next scripted step
// (a status with a body sent in pieces, a hang, a reset mid-stream), over plain
// HTTP or TLS. It records the requests and counts how many were in flight at
// once. And a DNS that does not answer, for the lookup of an upstream's name.
#pragma once

#include "net/http_client.hpp"
#include "runtime/asio.hpp"

#include <boost/asio/ssl/context.hpp>

#include <atomic>
#include <chrono>
#include <deque>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace mooring::test {

struct UpstreamStep {
  // close_delimited: no chunked encoding, the body ended by closing the
  // TCP connection (over TLS without a close_notify, as many servers do).
  enum class Action { respond, hang, reset_after_chunks, close_delimited };
  Action action = Action::respond;
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::vector<std::string> chunks;  // written one by one, chunked encoding
  std::chrono::milliseconds chunk_delay{0};
};

// A 200 streaming step whose events carry these pieces, then [DONE].
UpstreamStep sse_reply(const std::vector<std::string>& pieces,
                       std::chrono::milliseconds delay = std::chrono::milliseconds(0));
// One `data: {...}` event for a piece of content.
std::string sse_piece(const std::string& content);
UpstreamStep status_reply(int status, const std::string& body = "{\"error\":{\"message\":\"upstream says no\"}}",
                          std::vector<std::pair<std::string, std::string>> headers = {});
UpstreamStep hang();

struct RecordedRequest {
  std::string method;
  std::string target;
  std::string authorization;
  std::string body;
  std::chrono::steady_clock::time_point arrived;
};

// A throwaway CA and a certificate for "localhost"/127.0.0.1 signed by it,
// made with the openssl command in `dir`.
struct TestCertificates {
  std::filesystem::path ca_file;
  std::filesystem::path cert_file;
  std::filesystem::path key_file;
};
TestCertificates make_test_certificates(const std::filesystem::path& dir);

class FakeUpstream {
 public:
  // Plain HTTP; or TLS with the given certificate.
  explicit FakeUpstream(const TestCertificates* tls = nullptr);
  ~FakeUpstream();
  FakeUpstream(const FakeUpstream&) = delete;
  FakeUpstream& operator=(const FakeUpstream&) = delete;

  // "http://127.0.0.1:PORT/v1" (or https://localhost:PORT/v1).
  std::string base_url() const;
  std::uint16_t port() const { return port_; }

  // Steps are used in order; when they run out, `fallback` answers.
  void script(std::vector<UpstreamStep> steps);
  void set_fallback(UpstreamStep step);

  std::vector<RecordedRequest> requests() const;
  std::size_t request_count() const;
  int max_in_flight() const { return max_in_flight_; }
  int in_flight() const { return in_flight_; }
  // Connections the fake has seen closed by the client.
  int closed_by_client() const { return closed_by_client_; }

 private:
  awaitable<void> accept_loop();
  awaitable<void> handle(asio::ip::tcp::socket socket);
  template <typename Stream>
  awaitable<void> serve(Stream& stream);
  UpstreamStep next_step();

  asio::io_context io_;
  asio::ip::tcp::acceptor acceptor_;
  std::unique_ptr<asio::ssl::context> tls_;
  std::uint16_t port_ = 0;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::deque<UpstreamStep> steps_;
  UpstreamStep fallback_;
  std::vector<RecordedRequest> requests_;
  std::atomic<int> in_flight_{0};
  std::atomic<int> max_in_flight_{0};
  std::atomic<int> closed_by_client_{0};
};

// A DNS server that does not answer: a lookup through lookup() blocks, as
// getaddrinfo does then, until open() (or a minute), and then finds 127.0.0.1
// at the port asked for. The lookups run on a HostLookups's threads; the
// destructor opens the gate and waits (10 s at most) for every one to end.
class SlowDns {
 public:
  SlowDns();
  ~SlowDns();
  SlowDns(const SlowDns&) = delete;
  SlowDns& operator=(const SlowDns&) = delete;

  net::HostLookup lookup() const;
  void open();
  int begun() const;  // lookups that have started
  int ended() const;  // ... and those that have returned
  int most_at_once() const;                // the most lookups blocked at the same time
  std::vector<std::string> hosts() const;  // the hosts looked up, in order

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace mooring::test
