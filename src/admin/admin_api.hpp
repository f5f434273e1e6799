// The admin HTTP API: health and readiness probes (no token), and everything
// under /api behind "Authorization: Bearer <admin token>", compared in
// constant time. The host supplies the data through AdminContext callbacks.
#pragma once

#include "admin/event_hub.hpp"
#include "net/router.hpp"

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
};

std::shared_ptr<const net::Router> make_admin_router(AdminContext context);

}  // namespace mooring::admin
