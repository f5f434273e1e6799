#include "support/fake_upstream.hpp"

#include "support/process.hpp"
#include "support/wait.hpp"

#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>

#include <fmt/format.h>

#include <condition_variable>
#include <stdexcept>

namespace mooring::test {

namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

std::string sse_piece(const std::string& content) {
  return "data: " +
         boost::json::serialize(boost::json::object{
             {"choices", boost::json::array{{{"index", 0}, {"delta", {{"content", content}}}}}}}) +
         "\n\n";
}

UpstreamStep sse_reply(const std::vector<std::string>& pieces, std::chrono::milliseconds delay) {
  UpstreamStep step;
  step.headers = {{"Content-Type", "text/event-stream"}};
  for (const auto& piece : pieces) step.chunks.push_back(sse_piece(piece));
  step.chunks.push_back("data: [DONE]\n\n");
  step.chunk_delay = delay;
  return step;
}

UpstreamStep status_reply(int status, const std::string& body,
                          std::vector<std::pair<std::string, std::string>> headers) {
  UpstreamStep step;
  step.status = status;
  step.headers = std::move(headers);
  step.headers.emplace_back("Content-Type", "application/json");
  step.chunks = {body};
  return step;
}

UpstreamStep hang() {
  UpstreamStep step;
  step.action = UpstreamStep::Action::hang;
  return step;
}

TestCertificates make_test_certificates(const std::filesystem::path& dir) {
  TestCertificates out{dir / "ca.pem", dir / "server.pem", dir / "server.key"};
  write_file(dir / "san.ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  const std::vector<std::vector<std::string>> steps = {
      {"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mooring test CA",
       "-keyout", (dir / "ca.key").string(), "-out", out.ca_file.string()},
      {"req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout",
       out.key_file.string(), "-out", (dir / "server.csr").string()},
      {"x509", "-req", "-in", (dir / "server.csr").string(), "-CA", out.ca_file.string(), "-CAkey",
       (dir / "ca.key").string(), "-CAcreateserial", "-days", "2", "-extfile",
       (dir / "san.ext").string(), "-out", out.cert_file.string()},
  };
  for (const auto& args : steps) {
    auto result = run_command("/usr/bin/openssl", args, dir);
    if (result.exit_code != 0) throw std::runtime_error("openssl failed: " + result.err);
  }
  return out;
}

FakeUpstream::FakeUpstream(const TestCertificates* tls)
    : acceptor_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
  port_ = acceptor_.local_endpoint().port();
  fallback_ = sse_reply({"fallback"});
  if (tls) {
    tls_ = std::make_unique<ssl::context>(ssl::context::tls_server);
    tls_->use_certificate_chain_file(tls->cert_file.string());
    tls_->use_private_key_file(tls->key_file.string(), ssl::context::pem);
  }
  asio::co_spawn(io_, accept_loop(), asio::detached);
  thread_ = std::thread([this] { io_.run(); });
}

FakeUpstream::~FakeUpstream() {
  io_.stop();
  thread_.join();
}

std::string FakeUpstream::base_url() const {
  return tls_ ? fmt::format("https://localhost:{}/v1", port_)
              : fmt::format("http://127.0.0.1:{}/v1", port_);
}

void FakeUpstream::script(std::vector<UpstreamStep> steps) {
  std::lock_guard lock(mutex_);
  for (auto& step : steps) steps_.push_back(std::move(step));
}

void FakeUpstream::set_fallback(UpstreamStep step) {
  std::lock_guard lock(mutex_);
  fallback_ = std::move(step);
}

std::vector<RecordedRequest> FakeUpstream::requests() const {
  std::lock_guard lock(mutex_);
  return requests_;
}

std::size_t FakeUpstream::request_count() const {
  std::lock_guard lock(mutex_);
  return requests_.size();
}

UpstreamStep FakeUpstream::next_step() {
  std::lock_guard lock(mutex_);
  if (steps_.empty()) return fallback_;
  auto step = std::move(steps_.front());
  steps_.pop_front();
  return step;
}

awaitable<void> FakeUpstream::accept_loop() {
  for (;;) {
    auto [ec, socket] = co_await acceptor_.async_accept(use_tuple);
    if (ec) co_return;
    asio::co_spawn(io_, handle(std::move(socket)), asio::detached);
  }
}

awaitable<void> FakeUpstream::handle(tcp::socket socket) {
  if (tls_) {
    beast::ssl_stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(socket)), *tls_);
    auto [ec] = co_await stream.async_handshake(ssl::stream_base::server, use_tuple);
    if (!ec) co_await serve(stream);
  } else {
    beast::tcp_stream stream(std::move(socket));
    co_await serve(stream);
  }
}

template <typename Stream>
awaitable<void> FakeUpstream::serve(Stream& stream) {
  beast::flat_buffer buffer;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);  // requests carry whole images
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, use_tuple);
    auto request = parser.release();
    if (ec) {
      ++closed_by_client_;
      co_return;
    }
    const int now = ++in_flight_;
    for (int seen = max_in_flight_; now > seen && !max_in_flight_.compare_exchange_weak(seen, now);) {
    }
    {
      std::lock_guard lock(mutex_);
      requests_.push_back({std::string(request.method_string()), std::string(request.target()),
                           std::string(request[http::field::authorization]), request.body(),
                           std::chrono::steady_clock::now()});
    }
    auto step = next_step();
    if (step.action == UpstreamStep::Action::hang) {
      // Wait for the client to give up: a read completes when it closes.
      char byte;
      co_await beast::get_lowest_layer(stream).async_read_some(asio::buffer(&byte, 1), use_tuple);
      --in_flight_;
      ++closed_by_client_;
      co_return;
    }
    const bool close_delimited = step.action == UpstreamStep::Action::close_delimited;
    std::string head = fmt::format("HTTP/1.1 {} Fake\r\n{}", step.status,
                                   close_delimited ? "Connection: close\r\n"
                                                   : "Transfer-Encoding: chunked\r\n");
    for (const auto& [name, value] : step.headers) head += name + ": " + value + "\r\n";
    head += "\r\n";
    auto [write_ec, w] = co_await asio::async_write(stream, asio::buffer(head), use_tuple);
    if (close_delimited) {
      for (const auto& chunk : step.chunks)
        if (!write_ec) std::tie(write_ec, w) = co_await asio::async_write(stream, asio::buffer(chunk), use_tuple);
      error_code ignored;
      beast::get_lowest_layer(stream).socket().shutdown(asio::socket_base::shutdown_both, ignored);
      beast::get_lowest_layer(stream).socket().close(ignored);
      --in_flight_;
      co_return;
    }
    asio::steady_timer pace(io_);
    for (std::size_t i = 0; i < step.chunks.size() && !write_ec; ++i) {
      if (i > 0 && step.chunk_delay.count() > 0) {
        pace.expires_after(step.chunk_delay);
        co_await pace.async_wait(use_tuple);
      }
      const auto& chunk = step.chunks[i];
      const std::string framed = fmt::format("{:x}\r\n{}\r\n", chunk.size(), chunk);
      std::tie(write_ec, w) = co_await asio::async_write(stream, asio::buffer(framed), use_tuple);
    }
    if (step.action == UpstreamStep::Action::reset_after_chunks) {
      auto& socket = beast::get_lowest_layer(stream).socket();
      socket.set_option(asio::socket_base::linger(true, 0));  // close with RST
      error_code ignored;
      socket.close(ignored);
      --in_flight_;
      co_return;
    }
    if (!write_ec) std::tie(write_ec, w) = co_await asio::async_write(stream, asio::buffer("0\r\n\r\n", 5), use_tuple);
    --in_flight_;
    if (write_ec) co_return;
  }
}

struct SlowDns::State {
  std::mutex mutex;
  std::condition_variable opened;
  bool open = false;
  std::atomic<int> begun{0};
  std::atomic<int> ended{0};
  std::atomic<int> most_at_once{0};
  std::vector<std::string> hosts;  // guarded by mutex
};

SlowDns::SlowDns() : state_(std::make_shared<State>()) {}

SlowDns::~SlowDns() {
  open();
  poll_until([this] { return ended() == begun(); }, 10s);
}

net::HostLookup SlowDns::lookup() const {
  return [state = state_](const std::string& host, const std::string& port)
             -> boost::system::result<std::vector<tcp::endpoint>> {
    {
      std::unique_lock lock(state->mutex);
      ++state->begun;
      state->most_at_once = std::max<int>(state->most_at_once, state->begun - state->ended);
      state->hosts.push_back(host);
      state->opened.wait_for(lock, std::chrono::minutes(1), [&] { return state->open; });
    }
    std::vector<tcp::endpoint> found{
        tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<std::uint16_t>(std::stoi(port)))};
    std::lock_guard lock(state->mutex);
    ++state->ended;
    return found;
  };
}

void SlowDns::open() {
  std::lock_guard lock(state_->mutex);
  state_->open = true;
  state_->opened.notify_all();
}

int SlowDns::begun() const { return state_->begun; }

int SlowDns::ended() const { return state_->ended; }

int SlowDns::most_at_once() const { return state_->most_at_once; }

std::vector<std::string> SlowDns::hosts() const {
  std::lock_guard lock(state_->mutex);
  return state_->hosts;
}

}  // namespace mooring::test
