// The admin HTTP API: health and readiness probes (no token), and everything
// under /api behind "Authorization: Bearer <admin token>", compared in
// constant time. The host supplies the data through AdminContext callbacks.
//   GET /healthz, /readyz, /metrics (Prometheus text), /api/status, /api/config,
//   /api/sessions, /api/sessions/{user}/messages, /api/tasks;
//   POST /api/tasks/{id}/cancel; WS /api/events.
#pragma once

#include "admin/event_hub.hpp"
#include "net/router.hpp"
#include "runtime/supervisor.hpp"
#include "store/store.hpp"

#include <functional>
#include <memory>
#include <string>

namespace mooring::admin {

struct AdminContext {
  std::string token;
  std::function<boost::json::object()> status;  // the /api/status document
  std::function<bool()> ready;                  // every enabled component running
  std::shared_ptr<EventHub> events;
  net::WsOptions events_options;
  // For /api/sessions, /api/tasks and /api/config; null or empty where the
  // host has none (the endpoints then answer 503).
  store::Store* store = nullptr;
  runtime::Supervisor* supervisor = nullptr;
  std::function<std::string()> config_text;
};

std::shared_ptr<const net::Router> make_admin_router(AdminContext context);

}  // namespace mooring::admin
