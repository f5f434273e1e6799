// The admin HTTP API: health and readiness probes (no token), and everything
// under /api behind "Authorization: Bearer <admin token>", compared in
// constant time (?token= only for /api/events, which browsers open without
// headers). The token is checked on the request's header, before any body is
// read: a client without it gets 401 without the server holding its body.
// The host supplies the data through AdminContext callbacks.
//   GET /healthz, /readyz, /metrics (Prometheus text), /api/status, /api/config,
//   /api/sessions, /api/sessions/{user}/messages, /api/tasks;
//   PUT /api/config (a whole TOML configuration, applied as one transaction);
//   POST /api/config/validate (the same, validated and prepared, not applied);
//   POST /api/reload (re-read the file and apply it);
//   POST /api/tasks/{id}/cancel; WS /api/events.
#pragma once

#include "admin/event_hub.hpp"
#include "net/router.hpp"
#include "runtime/supervisor.hpp"
#include "store/store.hpp"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mooring::admin {

// What the host says about a configuration it was asked to apply: 200 with
// what changed, 400 with every problem, 409 when a change could not be
// prepared (the old configuration still serves), 503 while shutting down.
struct ConfigOutcome {
  net::http::status status = net::http::status::ok;
  boost::json::object body;
};

// The largest configuration PUT /api/config accepts (as for a file).
constexpr std::size_t max_config_bytes = 1024 * 1024;

struct AdminContext {
  std::string token;
  std::function<boost::json::object()> status;  // the /api/status document
  std::function<bool()> ready;                  // every enabled component running
  std::shared_ptr<EventHub> events;
  // An operator watching an incident keeps the stream: its frames are log
  // lines, few and small.
  net::WsOptions events_options{.shed_when_over_budget = false};
  // For /api/sessions, /api/tasks and /api/config; null or empty where the
  // host has none (the endpoints then answer 503).
  store::Store* store = nullptr;
  runtime::Supervisor* supervisor = nullptr;
  std::function<std::string()> config_text;
  // `expected_generation`: from If-Match; the host answers 412 when another
  // configuration was applied since. `commit` false: validate and prepare
  // only (POST /api/config/validate), nothing changes.
  std::function<awaitable<ConfigOutcome>(std::string toml,
                                         std::optional<std::uint64_t> expected_generation,
                                         bool commit)>
      apply_config;
  std::function<awaitable<ConfigOutcome>()> reload_config;
  std::function<std::uint64_t()> generation;  // the ETag of GET /api/config
  // Names the API answers to besides IP addresses and localhost
  // (admin.allowed_hosts): a request addressed to another is refused with 421.
  std::vector<std::string> allowed_hosts;
};

std::shared_ptr<const net::Router> make_admin_router(AdminContext context);

}  // namespace mooring::admin
