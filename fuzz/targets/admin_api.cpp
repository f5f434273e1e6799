// The admin API as a client reaches it: the input is what one client writes on
// one connection to an HttpServer serving admin::make_admin_router() (every
// route, the web panel's files and WS /api/events included); then it stops
// writing and reads everything until the server closes. Behind the router:
// a fixed token, small stubs for status, readiness and the configuration
// calls, an EventHub that the configuration calls publish to, the server's
// own supervisor (so /api/tasks lists and may cancel the very connection it
// is answering), and one real Store opened once for the whole process in a
// temporary directory, seeded with two sessions, so that /api/sessions and
// their query parameters reach SQLite.
// After each input: no crash, no sanitizer report, the server answered or
// closed within its bound, and nothing is left behind (no session in the
// table, no task in the supervisor, no events subscriber).
#include "admin/admin_api.hpp"
#include "net/http_server.hpp"
#include "runtime/supervisor.hpp"
#include "store/store.hpp"

#include "support/one_connection.hpp"
#include "support/quiet.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>


namespace {

using namespace mooring;
using namespace std::chrono_literals;
namespace http = net::http;
namespace json = boost::json;

constexpr const char* admin_token = "fuzz-admin-token";

// The store and the io_context it was opened on live as long as the process:
// an operation's result is handed to its caller's executor (each input's own),
// so no input ever waits on this one.
struct SharedStore {
  asio::io_context io;
  std::unique_ptr<store::Store> store;
  std::filesystem::path dir;
};

SharedStore* shared_store = nullptr;

template <typename T>
T run_on(asio::io_context& io, awaitable<T> work) {
  std::optional<T> out;
  asio::co_spawn(io, std::move(work), [&](std::exception_ptr e, T value) {
    if (e) std::rethrow_exception(e);
    out = std::move(value);
  });
  io.restart();
  io.run_for(30s);
  if (!out) fuzz::fail("admin_api", "the store did not answer within 30 s at start-up");
  return std::move(*out);
}

void remove_store_dir() {
  if (shared_store == nullptr) return;
  std::error_code ignored;
  std::filesystem::remove_all(shared_store->dir, ignored);
}

void open_store() {
  char pattern[] = "/tmp/mooring-fuzz-admin-XXXXXX";
  if (::mkdtemp(pattern) == nullptr) fuzz::fail("admin_api", "mkdtemp failed");
  shared_store = new SharedStore;  // deliberately never destroyed; see SharedStore
  shared_store->dir = pattern;
  std::atexit(remove_store_dir);
  store::StoreOptions options;
  options.synchronous_full = false;
  auto opened = run_on(shared_store->io, store::Store::open(shared_store->io.get_executor(),
                                                            (shared_store->dir / "data").string(),
                                                            options));
  if (!opened) fuzz::fail("admin_api", "the store did not open");
  shared_store->store = std::move(*opened);
  auto& s = *shared_store->store;
  const auto seed = [&]() -> awaitable<bool> {
    for (int i = 0; i < 3; ++i) {
      auto asked = co_await s.append_user_message("alice", "question " + std::to_string(i),
                                                  {std::string(300, 'A')}, "client-" + std::to_string(i));
      if (!asked) co_return false;
      if (!co_await s.store_reply("alice", asked->seq, "answer\nwith \"quotes\" and \xC3\xA9")) co_return false;
    }
    auto other = co_await s.append_user_message("qq:10001:private:42", "pending", {}, std::nullopt);
    co_return other.has_value();
  };
  if (!run_on(shared_store->io, seed())) fuzz::fail("admin_api", "the store could not be seeded");
}

// The host's configuration calls, reduced to what the API does with their
// answers: 200 with what changed, 400 with problems, 412 on a stale If-Match.
struct Host {
  std::uint64_t generation = 1;
  bool ready = true;
  std::shared_ptr<admin::EventHub> events;
};

awaitable<admin::ConfigOutcome> apply_config(std::shared_ptr<Host> host, std::string toml,
                                             std::optional<std::uint64_t> expected, bool commit) {
  if (expected && *expected != host->generation)
    co_return admin::ConfigOutcome{http::status::precondition_failed,
                                   {{"error", {{"code", "stale"}, {"generation", host->generation}}}}};
  if (toml.find('=') == std::string::npos)
    co_return admin::ConfigOutcome{http::status::bad_request,
                                   {{"errors", json::array{{{"key", ""}, {"message", "no key"}}}}}};
  if (commit) {
    ++host->generation;
    host->ready = !host->ready;
    host->events->publish({{"type", "config"}, {"generation", host->generation}});
  }
  co_return admin::ConfigOutcome{http::status::ok,
                                 {{"changed", json::array{"log.level"}}, {"applied", commit}}};
}

awaitable<admin::ConfigOutcome> reload_config(std::shared_ptr<Host> host) {
  host->events->publish({{"type", "reload"}, {"outcome", "unchanged"}});
  co_return admin::ConfigOutcome{http::status::ok, {{"changed", json::array{}}}};
}

std::shared_ptr<const net::Router> make_router(const std::shared_ptr<Host>& host,
                                               runtime::Supervisor& supervisor) {
  admin::AdminContext ctx;
  ctx.token = admin_token;
  ctx.status = [host] {
    return json::object{{"ready", host->ready},
                        {"generation", host->generation},
                        {"uptime_ms", 1234},
                        {"components", json::array{{{"name", "gateway"}, {"state", "running"}},
                                                   {{"name", "onebot\"}\n"}, {"state", "failed"}},
                                                   {{"name", 7}}}}};
  };
  ctx.ready = [host] { return host->ready; };
  // The corpus addresses its requests to "x": a name the API answers to
  // here, so that they reach the routes (other names are refused with 421).
  ctx.allowed_hosts = {"x"};
  ctx.events = host->events;
  ctx.events_options.max_message_bytes = 4096;
  ctx.events_options.send_queue_bytes = 64 * 1024;
  ctx.store = shared_store->store.get();
  ctx.supervisor = &supervisor;
  ctx.config_text = [] { return std::string("[gateway]\nlisten = \"127.0.0.1:0\"\n"); };
  ctx.generation = [host] { return host->generation; };
  ctx.apply_config = [host](std::string toml, std::optional<std::uint64_t> expected, bool commit) {
    return apply_config(host, std::move(toml), expected, commit);
  };
  ctx.reload_config = [host] { return reload_config(host); };
  return admin::make_admin_router(std::move(ctx));
}

// With MOORING_FUZZ_SHOW set, the server's answers are copied to stderr: to
// check that a seed reaches the handler it was written for.
const bool show_answers = std::getenv("MOORING_FUZZ_SHOW") != nullptr;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mooring::fuzz::quiet_process();
  open_store();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  asio::io_context io;
  runtime::Supervisor supervisor(io.get_executor());
  auto host = std::make_shared<Host>();
  host->events = std::make_shared<admin::EventHub>(io.get_executor());
  net::HttpServer server(supervisor, "admin", make_router(host, supervisor), fuzz::short_limits());
  fuzz::serve_one_connection("admin_api", io, supervisor, server,
                             std::string(reinterpret_cast<const char*>(data), size));
  if (host->events->subscribers() != 0)
    fuzz::fail("admin_api", "an events subscriber outlived its connection");
  return 0;
}
