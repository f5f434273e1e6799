// /metrics as Prometheus reads it: the real binary's output after some chat
// and some reloads, parsed by the Prometheus Python client's own parser
// (Debian's python3-prometheus-client), which refuses what Prometheus would.
#include "support/chat_client.hpp"
#include "support/clients.hpp"
#include "support/host_process.hpp"
#include "support/process.hpp"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace mooring::test
