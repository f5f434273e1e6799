// OneBot v11 events read into what the adapter acts on: a message to a
// conversation, a heartbeat or lifecycle meta event, a friend or group request
// (left to the user), or something to ignore. Unknown post types, notice types
// and extra fields are not errors: they are ignored with a reason for the
// debug log. Nothing here throws, whatever the JSON.
#pragma once

#include "chat/onebot_message.hpp"

#include <boost/json/object.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <variant>

namespace mooring::chat::onebot {

struct MessageEvent {
  std::int64_t self_id = 0;
  bool group = false;
  std::int64_t user_id = 0;   // the sender
  std::int64_t group_id = 0;  // for a group message
  std::int64_t message_id = 0;
  std::int64_t time = 0;      // Unix seconds, as the implementation stamped the event
  std::string sender_name;    // card, else nickname, else the QQ number
  Segments message;

  // "qq:<self_id>:private:<user_id>" or "qq:<self_id>:group:<group_id>".
  std::string session_id() const;
};

struct Heartbeat {
  std::int64_t self_id = 0;
  std::optional<std::int64_t> interval_ms;
};

struct Lifecycle {
  std::int64_t self_id = 0;
  std::string sub_type;  // "connect", "enable", "disable"
};

struct RequestEvent {
  std::int64_t self_id = 0;
  std::string kind;  // "friend" or "group"
  std::int64_t user_id = 0;
  std::int64_t group_id = 0;
  std::string comment;
};

struct Ignored {
  std::string why;  // for the log
  // A message event that cannot be read (an id missing or not a QQ number,
  // no message): logged for the operator, not only at debug.
  bool unreadable_message = false;
};

using OneBotEvent = std::variant<MessageEvent, Heartbeat, Lifecycle, RequestEvent, Ignored>;

OneBotEvent read_event(const boost::json::object& event);

}  // namespace mooring::chat::onebot
