// A chat gateway on a real socket for unit tests: an HttpServer on port 0
// serving gateway.router(), a real store in a temporary directory, and a
// provider of the test's choice, all on a ServerThread.
#pragma once

#include "chat/gateway.hpp"
#include "llm/echo_provider.hpp"
#include "net/http_server.hpp"
#include "runtime/cancellation.hpp"
#include "support/process.hpp"
#include "support/server_thread.hpp"

#include <gtest/gtest.h>

#include <limits>
#include <stdexcept>

namespace mooring::chat::test {

using namespace std::chrono_literals;
using mooring::test::ServerThread;
using mooring::test::TempDir;

// Replies "ok: <the first 16 bytes of the message>" (or `reply_bytes` of 'r'),
// but only while open; a closed gate holds every reply until it opens. Records
// the context of each request. Touched on the server thread only.
class GateProvider : public llm::Provider {
 public:
  explicit GateProvider(asio::any_io_executor executor) : opened_(std::move(executor)) {}

  awaitable<llm::CompletionResult> complete(const llm::ChatRequest& request,
                                            llm::PieceSink on_piece) override {
    std::size_t history_bytes = 0;
    for (const auto& past : request.history) history_bytes += past.content.size();
    requests.push_back(
        {request.history.size(), history_bytes,
         request.history.empty() ? std::string() : request.history.back().content.str().substr(0, 32),
         request.message.content.str().substr(0, 32),
         request.history.empty() ? nullptr : &request.history.front().content.str()});
    while (!open) {
      if (!co_await opened_.wait_until(runtime::Deadline::never()))
        co_return llm::failure(
            {.kind = llm::ProviderError::Kind::cancelled, .message = "cancelled"});
    }
    if (open_for != unlimited && --open_for == 0) open = false;
    std::string reply = reply_bytes > 0 ? std::string(reply_bytes, 'r')
                                        : "ok: " + request.message.content.str().substr(0, 16);
    if (on_piece) on_piece(reply.substr(0, 4));
    if (fail_after_piece)
      co_return llm::failure({.kind = llm::ProviderError::Kind::timeout,
                              .message = "the provider did not answer in time"});
    co_return llm::CompletionResult(std::move(reply));
  }
  std::string_view kind() const override { return "gate"; }
  // Whether the conversation takes its replies for work of the host's own
  // (the work gate's pass is then held until the reply is handed over).
  bool may_wait() const override { return waits; }
  bool waits = true;

  void set_open(bool value) {
    open = value;
    if (open) opened_.notify_all();
  }

  struct Seen {
    std::size_t history_messages;
    std::size_t history_bytes;
    std::string newest_history;  // its first 32 bytes
    std::string message;         // its first 32 bytes
    // Where the oldest message of the history is held: the same place in two
    // requests when both point at the conversation's copy.
    const std::string* oldest_history_text;
  };
  std::vector<Seen> requests;
  bool open = true;
  // Replies this many more, then closes: the next waits for set_open(true).
  static constexpr std::size_t unlimited = std::numeric_limits<std::size_t>::max();
  std::size_t open_for = unlimited;
  std::size_t reply_bytes = 0;
  // Fails (a timeout) after the first piece is streamed.
  bool fail_after_piece = false;

 private:
  runtime::Notifier opened_;
};

struct GatewayFixture {
  ServerThread thread;
  TempDir dir;
  runtime::ShutdownState shutdown;
  std::unique_ptr<store::Store> store;
  std::shared_ptr<GateProvider> gate;
  std::unique_ptr<Gateway> gateway;
  std::unique_ptr<net::HttpServer> server;
  std::string address;

  // With `echo_delay`, the echo provider answers (word by word); without it, a GateProvider.
  explicit GatewayFixture(GatewayOptions options = {},
                          std::optional<runtime::Duration> echo_delay = {}) {
    auto opened = thread.call(store::Store::open(thread.io().get_executor(), dir.path().string()));
    if (!opened) throw std::runtime_error("the store did not open: " + opened.error().message);
    store = std::move(*opened);
    thread.run([&] {
      gate = std::make_shared<GateProvider>(thread.io().get_executor());
      std::shared_ptr<llm::Provider> provider = gate;
      if (echo_delay) provider = std::make_shared<llm::EchoProvider>(*echo_delay);
      gateway =
          std::make_unique<Gateway>(thread.supervisor(), *store, provider, options, &shutdown);
      server = std::make_unique<net::HttpServer>(thread.supervisor(), "gateway", gateway->router());
      auto acceptor = net::open_listener(thread.io().get_executor(), {"127.0.0.1", 0}, "gateway");
      if (!acceptor) throw std::runtime_error("cannot listen");
      server->start(std::move(*acceptor));
      address = net::endpoint_string(*server->local_endpoint());
      return true;
    });
  }

  ~GatewayFixture() {
    thread.call([](GatewayFixture* f) -> awaitable<bool> {
      co_await f->server->stop(runtime::Deadline::after(1s));
      f->thread.supervisor().cancel_all();
      // Long enough for a slow (sanitized) build to end every task: a task
      // left running would resume into the gateway freed below.
      const auto left = co_await f->thread.supervisor().join(runtime::Deadline::after(60s));
      for (const auto& task : left) ADD_FAILURE() << "task still running: " << task.name;
      f->server.reset();
      f->gateway.reset();
      co_await f->store->close();
      co_return true;
    }(this));
    thread.run([&] {
      store.reset();
      gate.reset();
      return true;
    });
  }

  // New options for the gateway, and its routes (admission) with them, as a reload does.
  void reconfigure(const GatewayOptions& options) {
    thread.run([&] {
      gateway->set_options(options);
      server->set_router(gateway->router());
      return true;
    });
  }

  template <typename F>
  auto run(F f) {
    return thread.run(std::move(f));
  }

  // The id of the supervisor's task whose name starts with `prefix`, or 0.
  runtime::TaskId task(const std::string& prefix) {
    return run([&] {
      for (const auto& info : thread.supervisor().tasks())
        if (info.name.starts_with(prefix)) return info.id;
      return runtime::TaskId{0};
    });
  }

  // Whether the conversation of `user` holds no work: after a connection's
  // first backlog read, a message it sends is the conversation's only work
  // (one sent while that read runs waits behind it, and gives its pass of
  // the work gate back).
  bool settled(const std::string& user) {
    return run([&] {
      auto conversation = gateway->conversations().find(user);
      return conversation && conversation->pending() == 0;
    });
  }

  // The user's stored messages, oldest first.
  std::vector<store::Message> messages(const std::string& user) {
    auto result = thread.call(store->messages(user, 100000));
    if (!result) throw std::runtime_error(result.error().message);
    return std::move(*result);
  }
};

}  // namespace mooring::chat::test
