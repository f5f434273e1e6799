// /metrics as Prometheus reads it: the real binary's output after some chat
// and some reloads, parsed by the Prometheus Python client's own parser
// (Debian's python3-prometheus-client), which refuses what Prometheus would.
#include "support/chat_client.hpp"
#include "support/clients.hpp"
#include "support/host_process.hpp"
#include "support/process.hpp"
#include "support/wait.hpp"

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <sstream>

namespace mooring::test {
namespace {

const char* const parse_script = R"(
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
        print(f"{family.type} {sample.name} {labels} {sample.value}")
)";

// /metrics parsed by the strict parser: "<type> <sample name> <labels>" -> value.
std::map<std::string, double> scrape(HostProcess& host, const TempDir& dir) {
  const auto metrics = http_get(host.admin(), "/metrics");
  EXPECT_EQ(metrics.status, 200);
  write_file(dir / "metrics.txt", metrics.body);
  write_file(dir / "parse.py", parse_script);
  const auto parsed =
      run_command("/bin/sh", {"-c", "/usr/bin/python3 parse.py < metrics.txt"}, dir.path());
  EXPECT_EQ(parsed.exit_code, 0) << parsed.err << "\n" << metrics.body;
  std::map<std::string, double> samples;
  std::istringstream lines(parsed.out);
  for (std::string line; std::getline(lines, line);) {
    const auto space = line.rfind(' ');
    if (space == std::string::npos) continue;
    samples[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return samples;
}

TEST(Metrics, TheExpositionParsesWithPrometheusOwnParserAndCountsWhatHappened) {
  TempDir dir;
  HostProcess host(MOORING_BINARY, dir.path());
  ASSERT_TRUE(host.started()) << host.log();
  const auto bearer = std::vector<std::pair<std::string, std::string>>{
      {"Authorization", "Bearer " + host.admin_token()}};
  const auto current = http_get(host.admin(), "/api/config", host.admin_token()).body;
  EXPECT_EQ(http_request(host.admin(), http::verb::put, "/api/config", current, bearer).status, 200);
  EXPECT_EQ(http_request(host.admin(), http::verb::put, "/api/config", "[log]\nlevel = 1\n", bearer).status,
            400);

  const auto metrics = http_get(host.admin(), "/metrics");
  ASSERT_EQ(metrics.status, 200);
  write_file(dir / "metrics.txt", metrics.body);
  write_file(dir / "parse.py", parse_script);
  const auto parsed = run_command("/bin/sh", {"-c", "/usr/bin/python3 parse.py < metrics.txt"}, dir.path());
  ASSERT_EQ(parsed.exit_code, 0) << parsed.err << "\n" << metrics.body;
  const auto& samples = parsed.out;
  EXPECT_NE(samples.find("gauge mooring_up  1.0"), std::string::npos) << samples;
  EXPECT_NE(samples.find("gauge mooring_ready  1.0"), std::string::npos) << samples;
  EXPECT_NE(samples.find("gauge mooring_component_up component=store 1.0"), std::string::npos)
      << samples;
  EXPECT_NE(samples.find("counter mooring_config_reloads_total outcome=applied 1.0"), std::string::npos)
      << samples;
  EXPECT_NE(samples.find("counter mooring_config_reloads_total outcome=invalid 1.0"), std::string::npos)
      << samples;
  expect_clean_stop(host);
}

// Three users chat and leave with 1000 while a fourth connection is refused at
// max_connections: the WebSocket, refusal and store series say exactly that.
TEST(Metrics, WebSocketFramesClosesRefusalsAndStoreCommitsAreCounted) {
  TempDir dir;
  HostProcess host(MOORING_BINARY, dir.path(), "", "max_connections = 3\n");
  ASSERT_TRUE(host.started()) << host.log();

  std::vector<std::unique_ptr<ChatClient>> users;
  const std::vector<std::string> names = {"alice", "bob", "carol"};
  std::map<std::string, std::int64_t> replies;  // user -> the seq of the reply they read
  std::size_t received = 0;
  for (const auto& name : names) {
    users.push_back(std::make_unique<ChatClient>());
    ASSERT_EQ(users.back()->connect(host.gateway(), name), 101);
  }
  for (std::size_t u = 0; u < users.size(); ++u) {
    const auto seq = say_and_get_seq(*users[u], "hello", "m1");
    const auto chat =
        users[u]->read_until([&](const ChatClient::Frame& f) { return is_chat_for(f, seq); });
    replies[names[u]] = int_field(chat, "seq");
    received += users[u]->received().size();
  }
  ASSERT_TRUE(poll_until(
      [&] { return host.status().at("connections").to_number<int>() == 3; }, 10s));
  const auto refused = http_get(host.gateway(), "/");
  EXPECT_EQ(refused.status, 503) << refused.body;
  for (auto& user : users) user->close();
  const std::string three_closed =
      "mooring_websocket_closes_total{listener=\"gateway\",code=\"1000\"} 3\n";
  const auto closed = [&] {
    return http_get(host.admin(), "/metrics").body.find(three_closed) != std::string::npos;
  };
  ASSERT_TRUE(poll_until(closed, 10s)) << http_get(host.admin(), "/metrics").body;
  // The last store write is the delivered cursors' (flushed a while after the
  // replies went out). A commit is observed by the two store histograms one
  // after the other, so a scrape during one may count it in one and not yet
  // in the other: the scrape waits for the cursors, after which nothing writes.
  std::string sessions;
  const auto cursors_stored = [&] {
    sessions = http_get(host.admin(), "/api/sessions", host.admin_token()).body;
    const auto listed = boost::json::parse(sessions);
    std::map<std::string, std::int64_t> delivered;
    for (const auto& session : listed.at("sessions").as_array())
      delivered[std::string(session.at("user_id").as_string())] =
          session.at("delivered_seq").to_number<std::int64_t>();
    return delivered == replies;
  };
  ASSERT_TRUE(poll_until(cursors_stored, 10s)) << sessions;

  auto samples = scrape(host, dir);
  EXPECT_EQ(samples["counter mooring_websocket_closes_total code=1000,listener=gateway"], 3);
  EXPECT_EQ(samples.count("counter mooring_websocket_closes_total code=1006,listener=gateway"), 0u);
  EXPECT_EQ(samples["counter mooring_websocket_frames_total direction=in,listener=gateway"], 3);
  EXPECT_GE(samples["counter mooring_websocket_frames_total direction=out,listener=gateway"],
            static_cast<double>(received));
  EXPECT_EQ(samples["counter mooring_http_connections_refused_total listener=gateway"], 1);
  EXPECT_EQ(samples.count("counter mooring_http_connections_refused_total listener=admin"), 1u);
  EXPECT_EQ(samples["counter mooring_http_connections_refused_total listener=admin"], 0);
  EXPECT_EQ(samples.count("counter mooring_accept_failures_total listener=gateway"), 1u);
  EXPECT_EQ(samples["counter mooring_accept_failures_total listener=gateway"], 0);
  // Three messages stored (each acknowledged only once committed), each in a
  // committed transaction that both histograms observed.
  const double commits = samples["histogram mooring_store_commit_seconds_count "];
  EXPECT_GE(commits, 1);
  EXPECT_EQ(samples["histogram mooring_store_commit_seconds_bucket le=+Inf"], commits);
  EXPECT_GT(samples["histogram mooring_store_commit_seconds_sum "], 0);
  EXPECT_EQ(samples["histogram mooring_store_batch_operations_count "], commits);
  EXPECT_GE(samples["histogram mooring_store_batch_operations_sum "], 3);
  std::printf("[ metrics ] frames in %.0f out %.0f; %.0f commits of %.0f operations in %.2f ms\n",
              samples["counter mooring_websocket_frames_total direction=in,listener=gateway"],
              samples["counter mooring_websocket_frames_total direction=out,listener=gateway"],
              commits, samples["histogram mooring_store_batch_operations_sum "],
              samples["histogram mooring_store_commit_seconds_sum "] * 1000);
  expect_clean_stop(host);
}

}  // namespace
}  // namespace mooring::test
