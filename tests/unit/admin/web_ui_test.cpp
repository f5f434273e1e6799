#include "admin/web_ui.hpp"

#include "admin/admin_api.hpp"
#include "net/http_server.hpp"
#include "support/clients.hpp"
#include "support/server_thread.hpp"

#include <boost/beast/zlib/inflate_stream.hpp>
#include <boost/json.hpp>

#include <gtest/gtest.h>
#include <openssl/evp.h>

namespace mooring::admin {
namespace {

using namespace std::chrono_literals;
namespace http = boost::beast::http;
using Headers = std::vector<std::pair<std::string, std::string>>;

// The panel's routes alone (or the given router), on a real server on port 0.
struct WebServer {
  test::ServerThread thread;
  std::unique_ptr<net::HttpServer> server;
  std::string address;

  explicit WebServer(std::shared_ptr<const net::Router> router = nullptr) {
    if (!router) {
      auto routes = std::make_shared<net::Router>();
      add_web_routes(*routes);
      router = std::move(routes);
    }
    server = thread.run([&] {
      auto s = std::make_unique<net::HttpServer>(thread.supervisor(), "admin", router);
      auto acceptor = net::open_listener(thread.io().get_executor(), {"127.0.0.1", 0}, "admin");
      if (!acceptor) return std::unique_ptr<net::HttpServer>();
      s->start(std::move(*acceptor));
      address = net::endpoint_string(*s->local_endpoint());
      return s;
    });
  }
  ~WebServer() {
    if (!server) return;
    thread.call([](net::HttpServer& s) -> awaitable<bool> {
      co_await s.stop(runtime::Deadline::after(1s));
      co_return true;
    }(*server));
    thread.run([&] {
      server.reset();
      return true;
    });
  }

  test::HttpReply get(const std::string& target, const Headers& headers = {}) {
    return test::http_request(address, http::verb::get, target, "", headers);
  }
};

const WebAsset& asset(std::string_view path) {
  for (const auto& a : web_assets())
    if (a.path == path) return a;
  throw std::runtime_error("no embedded file " + std::string(path));
}

// The file inside a gzip member: the header skipped (no optional fields,
// as the build step writes them), the raw deflate stream inflated.
std::string gunzip(const std::string& bytes, std::size_t expected_size) {
  EXPECT_GE(bytes.size(), 18u);
  EXPECT_EQ(static_cast<unsigned char>(bytes[0]), 0x1f);
  EXPECT_EQ(static_cast<unsigned char>(bytes[1]), 0x8b);
  std::string out(expected_size + 16, '\0');
  boost::beast::zlib::inflate_stream inflater;
  inflater.reset(15);
  boost::beast::zlib::z_params z;
  z.next_in = bytes.data() + 10;
  z.avail_in = bytes.size() - 18;
  z.next_out = out.data();
  z.avail_out = out.size();
  boost::system::error_code ec;
  inflater.write(z, boost::beast::zlib::Flush::finish, ec);
  EXPECT_TRUE(!ec || ec == boost::beast::zlib::error::end_of_stream) << ec.message();
  out.resize(z.total_out);
  return out;
}

std::string sha256_base64(std::string_view text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr);
  std::string out(64, '\0');
  out.resize(static_cast<std::size_t>(
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), digest, static_cast<int>(length))));
  return out;
}

TEST(WebUi, EveryPanelFileIsEmbeddedAndServedWithItsType) {
  // Every file the page loads is there; the build step left out its scripts.
  for (const auto* path : {"/index.html", "/app.js", "/app.css", "/favicon.svg", "/lib/api.js",
                           "/pages/config.js", "/vendor/preact.mjs", "/vendor/preact-hooks.mjs",
                           "/vendor/htm.mjs", "/vendor/codemirror.mjs", "/vendor/uplot.mjs",
                           "/vendor/uplot.css", "/vendor/LICENSES.txt"})
    EXPECT_NO_THROW(asset(path)) << path;
  for (const auto& a : web_assets()) {
    EXPECT_FALSE(a.path.ends_with(".sh")) << a.path;
    EXPECT_FALSE(a.path.ends_with("entry-codemirror.js")) << a.path;
  }

  WebServer web;
  ASSERT_TRUE(web.server);
  const std::pair<const char*, const char*> expected[] = {
      {"/", "text/html; charset=utf-8"},
      {"/index.html", "text/html; charset=utf-8"},
      {"/app.js", "text/javascript; charset=utf-8"},
      {"/vendor/preact.mjs", "text/javascript; charset=utf-8"},
      {"/app.css", "text/css; charset=utf-8"},
      {"/favicon.svg", "image/svg+xml"},
      {"/vendor/LICENSES.txt", "text/plain; charset=utf-8"},
  };
  for (const auto& [path, type] : expected) {
    auto reply = web.get(path);
    EXPECT_EQ(reply.status, 200) << path;
    EXPECT_EQ(reply.headers["content-type"], type) << path;
    EXPECT_EQ(reply.headers["x-content-type-options"], "nosniff") << path;
    EXPECT_EQ(reply.headers.count("content-encoding"), 0u) << path;
  }
  EXPECT_EQ(web.get("/").body, asset("/index.html").identity);
  EXPECT_NE(web.get("/").body.find("<script type=\"module\" src=\"/app.js\">"), std::string::npos);
  EXPECT_EQ(content_type_for("x.unknown"), "application/octet-stream");
  EXPECT_EQ(content_type_for("A.JS"), "text/javascript; charset=utf-8");
}

TEST(WebUi, EmbeddedFilesInflateToWhatTheBuildRecorded) {
  const auto files = embedded_web_files();
  ASSERT_EQ(files.size(), web_assets().size());
  std::size_t gzipped = 0;
  for (std::size_t i = 0; i < files.size(); ++i) {
    const auto& a = web_assets()[i];
    EXPECT_EQ(a.identity.size(), files[i].size) << a.path;
    if (a.gzip.empty()) continue;
    ++gzipped;
    EXPECT_LT(a.gzip.size(), a.identity.size()) << a.path;
    EXPECT_EQ(gunzip(a.gzip, a.identity.size()), a.identity) << a.path;
  }
  EXPECT_GT(gzipped, files.size() / 2);
}

TEST(WebUi, EtagAnswersRevalidationWith304AndNoBody) {
  WebServer web;
  auto first = web.get("/app.js");
  ASSERT_EQ(first.status, 200);
  const auto tag = first.headers["etag"];
  ASSERT_EQ(tag, asset("/app.js").etag);
  EXPECT_EQ(tag.front(), '"');
  EXPECT_EQ(first.headers["cache-control"], "no-cache");
  EXPECT_EQ(first.headers["vary"], "Accept-Encoding");
  // Another file has another tag.
  EXPECT_NE(web.get("/app.css").headers["etag"], tag);

  auto again = web.get("/app.js", {{"If-None-Match", tag}});
  EXPECT_EQ(again.status, 304);
  EXPECT_TRUE(again.body.empty());
  EXPECT_EQ(again.headers["etag"], tag);
  EXPECT_EQ(again.headers["cache-control"], "no-cache");
  // Weak comparison, lists, and the gzip representation's tag all count.
  EXPECT_EQ(web.get("/app.js", {{"If-None-Match", "W/" + tag}}).status, 304);
  EXPECT_EQ(web.get("/app.js", {{"If-None-Match", "\"nope\", " + tag}}).status, 304);
  EXPECT_EQ(web.get("/app.js", {{"If-None-Match", asset("/app.js").gzip_etag}}).status, 304);
  EXPECT_EQ(web.get("/app.js", {{"If-None-Match", "*"}}).status, 304);
  // A tag of another file, or of nothing, gets the file.
  EXPECT_EQ(web.get("/app.js", {{"If-None-Match", asset("/app.css").etag}}).status, 200);
  EXPECT_EQ(web.get("/app.js", {{"If-None-Match", "\"\""}}).status, 200);
  EXPECT_EQ(web.get("/app.js", {{"If-None-Match", tag.substr(0, tag.size() - 2) + "\""}}).status, 200);

  // A thousand tags that do not match, the right one last.
  std::string many;
  for (int i = 0; i < 1000; ++i) many += "\"" + std::to_string(i) + "\", ";
  EXPECT_EQ(web.get("/app.js", {{"If-None-Match", many + tag}}).status, 304);
  EXPECT_EQ(web.get("/app.js", {{"If-None-Match", many}}).status, 200);
}

TEST(WebUi, GzipWhenTheClientAcceptsIt) {
  WebServer web;
  const auto& bundle = asset("/vendor/codemirror.mjs");
  ASSERT_FALSE(bundle.gzip.empty());

  auto zipped = web.get("/vendor/codemirror.mjs", {{"Accept-Encoding", "gzip, deflate, br"}});
  EXPECT_EQ(zipped.status, 200);
  EXPECT_EQ(zipped.headers["content-encoding"], "gzip");
  EXPECT_EQ(zipped.headers["etag"], bundle.gzip_etag);
  EXPECT_EQ(zipped.headers["content-length"], std::to_string(bundle.gzip.size()));
  EXPECT_LT(zipped.body.size(), bundle.identity.size() / 2);
  EXPECT_EQ(gunzip(zipped.body, bundle.identity.size()), bundle.identity);

  for (const auto* refusing : {"gzip;q=0", "gzip; q=0.000, br", "identity", "br", "*;q=0", "x-gzip;q=0"}) {
    auto plain = web.get("/vendor/codemirror.mjs", {{"Accept-Encoding", refusing}});
    EXPECT_EQ(plain.headers.count("content-encoding"), 0u) << refusing;
    EXPECT_EQ(plain.body, bundle.identity) << refusing;
    EXPECT_EQ(plain.headers["etag"], bundle.etag) << refusing;
  }
  auto plain = web.get("/vendor/codemirror.mjs");
  EXPECT_EQ(plain.headers.count("content-encoding"), 0u);

  // A 304 answers the encoding asked for.
  auto revalidated = web.get("/vendor/codemirror.mjs",
                             {{"Accept-Encoding", "gzip"}, {"If-None-Match", bundle.gzip_etag}});
  EXPECT_EQ(revalidated.status, 304);
  EXPECT_EQ(revalidated.headers["etag"], bundle.gzip_etag);
}

// What a server sends back for `request`, read until it closes the
// connection; throws after ten seconds.
std::string raw_exchange(const std::string& address, const std::string& request) {
  asio::io_context io;
  auto [host, port] = test::split_address(address);
  asio::ip::tcp::socket socket(io);
  socket.connect({asio::ip::make_address(host), static_cast<std::uint16_t>(std::stoi(port))});
  asio::write(socket, asio::buffer(request));
  std::string answer;
  bool closed = false;
  asio::async_read(socket, asio::dynamic_buffer(answer),
                   [&](boost::system::error_code, std::size_t) { closed = true; });
  io.run_for(10s);
  if (!closed) throw std::runtime_error("the server did not finish its answer in time");
  return answer;
}

TEST(WebUi, HeadAnswersTheHeadersOfGetWithoutTheBody) {
  WebServer web;
  const auto& page = asset("/index.html");
  const auto answer = raw_exchange(
      web.address, "HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  const auto end = answer.find("\r\n\r\n");
  ASSERT_NE(end, std::string::npos) << answer;
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 200")) << answer;
  EXPECT_NE(answer.find("Content-Length: " + std::to_string(page.identity.size()) + "\r\n"),
            std::string::npos)
      << answer;
  EXPECT_NE(answer.find("ETag: " + page.etag), std::string::npos) << answer;
  EXPECT_EQ(answer.size(), end + 4) << "no body after the headers";
}

TEST(WebUi, AcceptEncodingIsReadAsTheRfcSays) {
  EXPECT_TRUE(accepts_gzip("gzip"));
  EXPECT_TRUE(accepts_gzip("GZIP"));
  EXPECT_TRUE(accepts_gzip("deflate, gzip;q=1.0, *;q=0.5"));
  EXPECT_TRUE(accepts_gzip("gzip;q=0.001"));
  EXPECT_TRUE(accepts_gzip("x-gzip"));
  EXPECT_TRUE(accepts_gzip("*"));
  EXPECT_TRUE(accepts_gzip("br;q=1, gzip ; q=0.5"));
  EXPECT_FALSE(accepts_gzip(""));
  EXPECT_FALSE(accepts_gzip("identity"));
  EXPECT_FALSE(accepts_gzip("gzip;q=0"));
  EXPECT_FALSE(accepts_gzip("gzip;q=0.0"));
  EXPECT_FALSE(accepts_gzip("gzip;q=0.000"));
  EXPECT_FALSE(accepts_gzip("*;q=1, gzip;q=0"));  // naming gzip beats "*"
  EXPECT_FALSE(accepts_gzip("gzipx, xgzip"));
  EXPECT_FALSE(accepts_gzip(",,,;;;q=,"));
  EXPECT_FALSE(accepts_gzip(std::string(100000, ',')));
}

TEST(WebUi, ContentSecurityPolicyAllowsOnlyThisOriginAndTheImportMap) {
  WebServer web;
  auto reply = web.get("/");
  const auto csp = reply.headers["content-security-policy"];
  ASSERT_FALSE(csp.empty());
  EXPECT_NE(csp.find("default-src 'none'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("frame-ancestors 'none'"), std::string::npos) << csp;
  EXPECT_NE(csp.find("base-uri 'none'"), std::string::npos) << csp;
  EXPECT_EQ(csp.find("unsafe-eval"), std::string::npos) << csp;
  EXPECT_EQ(csp.find("http:"), std::string::npos) << csp;
  for (auto star = csp.find('*'); star != std::string::npos; star = csp.find('*', star + 1))
    EXPECT_EQ(csp[star - 1], ':') << "a wildcard other than a port: " << csp;

  // script-src is this origin plus the hash of the one inline script: the import map.
  const auto& html = asset("/index.html").identity;
  const auto open = html.find("<script type=\"importmap\">");
  ASSERT_NE(open, std::string::npos);
  const auto start = html.find('>', open) + 1;
  const auto import_map = html.substr(start, html.find("</script>", start) - start);
  EXPECT_NE(import_map.find("\"preact\""), std::string::npos);
  const auto script_src = csp.substr(csp.find("script-src"), csp.find(';', csp.find("script-src")) - csp.find("script-src"));
  EXPECT_EQ(script_src, "script-src 'self' 'sha256-" + sha256_base64(import_map) + "'");
  // No other inline script: every other <script> has a src.
  for (auto at = html.find("<script"); at != std::string::npos; at = html.find("<script", at + 1))
    if (at != open) {
      EXPECT_NE(html.substr(at, html.find('>', at) - at).find(" src="), std::string::npos);
    }

  // Connections: this origin, and WebSockets to the same host (the gateway's port).
  EXPECT_NE(csp.find("connect-src 'self' ws://127.0.0.1:* wss://127.0.0.1:*;"), std::string::npos) << csp;
  EXPECT_EQ(web.get("/index.html").headers["content-security-policy"], csp);
  EXPECT_EQ(web.get("/favicon.svg").headers["content-security-policy"], csp);
  // Scripts and styles are not documents: no policy of their own.
  EXPECT_EQ(web.get("/app.js").headers.count("content-security-policy"), 0u);
}

TEST(WebUi, HostHeaderCannotWidenThePolicy) {
  EXPECT_NE(content_security_policy("localhost:8081").find("connect-src 'self' ws://localhost:* wss://localhost:*;"),
            std::string::npos);
  EXPECT_NE(content_security_policy("[::1]:8081").find("ws://[::1]:*"), std::string::npos);
  for (const auto* hostile : {"evil.example; script-src *", "a b", "x:80; default-src *", "*", "",
                              "[::1", "[nope]:1", "host:80:80", "host:", "host:123456",
                              "a'b", "\"quoted\""}) {
    const auto csp = content_security_policy(hostile);
    EXPECT_NE(csp.find("connect-src 'self';"), std::string::npos) << hostile << " -> " << csp;
    EXPECT_EQ(csp.find("script-src *"), std::string::npos) << hostile;
  }
  EXPECT_NE(content_security_policy(std::string(100000, 'a')).find("connect-src 'self';"), std::string::npos);

  WebServer web;
  auto reply = web.get("/", {{"Host", "evil.example; script-src *"}});
  EXPECT_EQ(reply.status, 200);
  EXPECT_NE(reply.headers["content-security-policy"].find("connect-src 'self';"), std::string::npos);
}

TEST(WebUi, TheAdminRouterServesThePanelBesideTheApi) {
  const std::string token = "0123456789abcdef0123456789abcdef";
  test::ServerThread events_thread;
  auto events = std::make_shared<EventHub>(events_thread.io().get_executor());
  WebServer web(make_admin_router(AdminContext{
      token, [] { return boost::json::object{{"components", boost::json::array{}}}; },
      [] { return true; }, events, net::WsOptions{}}));
  auto page = web.get("/");
  EXPECT_EQ(page.status, 200);
  EXPECT_EQ(page.headers["content-type"], "text/html; charset=utf-8");
  EXPECT_EQ(web.get("/vendor/codemirror.mjs").status, 200);
  // The panel needs no token to load; the API still does.
  EXPECT_EQ(web.get("/api/status").status, 401);
  EXPECT_EQ(test::http_get(web.address, "/api/status", token).status, 200);
  EXPECT_EQ(web.get("/healthz").status, 200);
}

TEST(WebUi, UnknownPathIsAPlainJson404WithoutAStack) {
  WebServer web;
  for (const auto* path : {"/nope.js", "/vendor/", "/vendor/build-vendor.sh",
                           "/vendor/entry-codemirror.js", "/../../etc/passwd", "/index.html/x",
                           "/%2e%2e/index.html"}) {
    auto reply = web.get(path);
    EXPECT_EQ(reply.status, 404) << path;
    EXPECT_EQ(reply.headers["content-type"], "application/json") << path;
    auto body = boost::json::parse(reply.body).as_object();
    EXPECT_EQ(body.size(), 1u) << reply.body;
    const auto& error = body.at("error").as_object();
    EXPECT_EQ(error.at("code"), "not_found");
    EXPECT_EQ(error.size(), 2u) << reply.body;  // code and message, nothing more
    for (const auto* leak : {"stack", ".cpp", "exception", "#0 ", "<html"})
      EXPECT_EQ(reply.body.find(leak), std::string::npos) << path << ": " << reply.body;
  }
  // The panel's paths take GET (and HEAD) only.
  auto post = test::http_request(web.address, http::verb::post, "/", "x");
  EXPECT_EQ(post.status, 405);
  EXPECT_EQ(post.headers["allow"], "GET, HEAD");
}

// A HEAD whose ETag still matches is a 304 like the GET's: no body and no
// Content-Length (RFC 9110 15.4.5), and the connection serves the next request.
TEST(WebUi, AConditionalHeadIsA304WithoutContentLength) {
  WebServer web;
  const auto& page = asset("/index.html");
  const auto answer = raw_exchange(
      web.address, "HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\nIf-None-Match: " + page.etag +
                       "\r\n\r\nGET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 304")) << answer;
  const auto end = answer.find("\r\n\r\n");
  ASSERT_NE(end, std::string::npos) << answer;
  EXPECT_EQ(answer.substr(0, end).find("Content-Length"), std::string::npos) << answer;
  EXPECT_EQ(answer.find("HTTP/1.1 200", end), end + 4) << answer;
}

}  // namespace
}  // namespace mooring::admin
