#include "admin/web_ui.hpp"

#include <boost/beast/zlib/inflate_stream.hpp>
#include <boost/crc.hpp>

#include <fmt/format.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace mooring::admin {

namespace http = net::http;
using net::HttpResponse;
using net::Request;

namespace {

constexpr std::string_view cache_control = "no-cache";

std::string lower(std::string_view text) {
  std::string out(text);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// Calls `each` with every comma-separated element of a header value, trimmed.
template <typename F>
void for_each_element(std::string_view value, F each) {
  while (!value.empty()) {
    const auto comma = value.find(',');
    each(trim(value.substr(0, comma)));
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
}

// Calls `each` with every ";"-separated parameter of a header element, trimmed.
template <typename F>
void for_each_param(std::string_view params, F each) {
  while (!params.empty()) {
    if (params.front() == ';') params.remove_prefix(1);
    const auto semicolon = params.find(';');
    each(trim(params.substr(0, semicolon)));
    if (semicolon == std::string_view::npos) break;
    params.remove_prefix(semicolon);
  }
}

std::string sha256_base64(std::string_view text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (!EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr))
    throw std::logic_error("SHA-256 is not available");
  std::string out(4 * ((length + 2) / 3) + 1, '\0');
  const int written = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), digest,
                                      static_cast<int>(length));
  out.resize(static_cast<std::size_t>(written));
  return out;
}

std::string sha256_hex(std::string_view text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (!EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr))
    throw std::logic_error("SHA-256 is not available");
  std::string out;
  for (unsigned int i = 0; i < length; ++i) out += fmt::format("{:02x}", digest[i]);
  return out;
}

// The file inside a gzip member (RFC 1952), checked against its trailer and
// against what the build step recorded.
std::string gunzip(const EmbeddedFile& file) {
  const auto bytes = file.gzip;
  const auto broken = [&](std::string_view why) {
    return std::logic_error(fmt::format("embedded web file {} is broken: {}", file.path, why));
  };
  if (bytes.size() < 18 || bytes[0] != 0x1f || bytes[1] != 0x8b || bytes[2] != 8)
    throw broken("not gzip");
  const unsigned flags = bytes[3];
  std::size_t at = 10;
  if (flags & 0x04) at += 2 + (bytes[at] | (bytes[at + 1] << 8));  // FEXTRA
  for (unsigned flag : {0x08u, 0x10u})                             // FNAME, FCOMMENT
    if (flags & flag) {
      while (at < bytes.size() && bytes[at] != 0) ++at;
      ++at;
    }
  if (flags & 0x02) at += 2;  // FHCRC
  if (at + 8 > bytes.size()) throw broken("truncated header");

  std::string out(file.size, '\0');
  boost::beast::zlib::inflate_stream inflater;
  inflater.reset(15);
  boost::beast::zlib::z_params z;
  z.next_in = bytes.data() + at;
  z.avail_in = bytes.size() - at - 8;
  z.next_out = out.data();
  z.avail_out = out.size();
  boost::system::error_code ec;
  inflater.write(z, boost::beast::zlib::Flush::finish, ec);
  if (ec && ec != boost::beast::zlib::error::end_of_stream) throw broken(ec.message());
  if (z.total_out != file.size) throw broken("wrong size");

  const auto* trailer = bytes.data() + bytes.size() - 8;
  const auto word = [](const unsigned char* p) {
    return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
           (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
  };
  boost::crc_32_type crc;
  crc.process_bytes(out.data(), out.size());
  if (crc.checksum() != word(trailer) || word(trailer + 4) != (file.size & 0xffffffffu))
    throw broken("CRC or length mismatch");
  if (sha256_hex(out) != file.sha256) throw broken("SHA-256 mismatch");
  return out;
}

// "'sha256-…'" for every inline <script> of a page (the import map), the
// only inline scripts the policy lets run.
std::string inline_script_hashes(std::string_view html) {
  std::string out;
  for (std::size_t at = html.find("<script"); at != std::string_view::npos;
       at = html.find("<script", at)) {
    const auto tag_end = html.find('>', at);
    if (tag_end == std::string_view::npos) break;
    const auto tag = html.substr(at, tag_end - at);
    const auto close = html.find("</script>", tag_end);
    if (close == std::string_view::npos) break;
    if (tag.find(" src=") == std::string_view::npos)
      out += fmt::format(" 'sha256-{}'", sha256_base64(html.substr(tag_end + 1, close - tag_end - 1)));
    at = close;
  }
  return out;
}

struct Panel {
  std::vector<WebAsset> assets;
  std::string script_hashes;
};

const Panel& panel() {
  static const Panel built = [] {
    Panel p;
    for (const auto& file : embedded_web_files()) {
      WebAsset asset;
      asset.path = fmt::format("/{}", file.path);
      asset.content_type = content_type_for(file.path);
      asset.identity = gunzip(file);
      if (file.gzip.size() < file.size)
        asset.gzip.assign(reinterpret_cast<const char*>(file.gzip.data()), file.gzip.size());
      const auto tag = file.sha256.substr(0, 24);
      asset.etag = fmt::format("\"{}\"", tag);
      asset.gzip_etag = fmt::format("\"{}-gz\"", tag);
      if (asset.path == "/index.html") p.script_hashes = inline_script_hashes(asset.identity);
      p.assets.push_back(std::move(asset));
    }
    return p;
  }();
  return built;
}

// The host name of a Host header when it is one a policy may name: a DNS
// name or an IPv4 address, or an IPv6 address in brackets. Else empty.
std::string_view policy_host(std::string_view host) {
  if (host.empty() || host.size() > 260) return {};
  std::string_view name;
  std::string_view rest;
  if (host.front() == '[') {
    const auto end = host.find(']');
    if (end == std::string_view::npos) return {};
    name = host.substr(0, end + 1);
    rest = host.substr(end + 1);
    for (char c : name.substr(1, name.size() - 2))
      if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.') return {};
    if (name.size() < 3) return {};
  } else {
    const auto colon = host.find(':');
    name = host.substr(0, colon);
    rest = colon == std::string_view::npos ? std::string_view{} : host.substr(colon);
    if (name.empty()) return {};
    for (char c : name)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') return {};
  }
  if (!rest.empty()) {
    if (rest.front() != ':' || rest.size() < 2 || rest.size() > 6) return {};
    for (char c : rest.substr(1))
      if (!std::isdigit(static_cast<unsigned char>(c))) return {};
  }
  return name;
}

// Whether an If-None-Match value names this file (in either encoding).
bool still_fresh(const WebAsset& asset, std::string_view if_none_match) {
  bool fresh = false;
  for_each_element(if_none_match, [&](std::string_view tag) {
    if (tag.starts_with("W/")) tag.remove_prefix(2);  // If-None-Match compares weakly
    if (tag == "*" || tag == asset.etag || tag == asset.gzip_etag) fresh = true;
  });
  return fresh;
}

HttpResponse respond(const WebAsset& asset, const Request& request, bool head) {
  const auto& message = request.message;
  const auto header = [&](http::field field) -> std::string_view {
    auto it = message.find(field);
    return it == message.end() ? std::string_view{} : std::string_view(it->value());
  };
  const bool gzip = !asset.gzip.empty() && accepts_gzip(header(http::field::accept_encoding));

  HttpResponse res{http::status::ok, message.version()};
  res.keep_alive(message.keep_alive());
  res.set(http::field::server, "mooring");
  res.set(http::field::etag, gzip ? asset.gzip_etag : asset.etag);
  res.set(http::field::cache_control, cache_control);
  res.set(http::field::vary, "Accept-Encoding");
  res.set("X-Content-Type-Options", "nosniff");
  // A policy governs the document it comes with (and what it loads): the
  // page, and an SVG opened on its own. Scripts and styles need none.
  if (asset.content_type.starts_with("text/html") || asset.content_type == "image/svg+xml") {
    res.set("Content-Security-Policy", content_security_policy(header(http::field::host)));
    res.set("Referrer-Policy", "no-referrer");
    res.set("Cross-Origin-Opener-Policy", "same-origin");
  }

  if (auto tags = header(http::field::if_none_match); !tags.empty() && still_fresh(asset, tags)) {
    res.result(http::status::not_modified);
    return res;  // no body, no Content-Length (RFC 9110 15.4.5)
  }
  res.set(http::field::content_type, asset.content_type);
  if (gzip) res.set(http::field::content_encoding, "gzip");
  const auto& body = gzip ? asset.gzip : asset.identity;
  if (head) {
    res.content_length(body.size());
  } else {
    res.body() = body;
    res.prepare_payload();
  }
  return res;
}

awaitable<HttpResponse> serve(const WebAsset* asset, bool head, Request& request) {
  co_return respond(*asset, request, head);
}

}  // namespace

const std::vector<WebAsset>& web_assets() { return panel().assets; }

std::string_view content_type_for(std::string_view path) {
  const auto dot = path.rfind('.');
  const auto ext = dot == std::string_view::npos ? std::string{} : lower(path.substr(dot + 1));
  if (ext == "html") return "text/html; charset=utf-8";
  if (ext == "js" || ext == "mjs") return "text/javascript; charset=utf-8";
  if (ext == "css") return "text/css; charset=utf-8";
  if (ext == "json" || ext == "map") return "application/json";
  if (ext == "svg") return "image/svg+xml";
  if (ext == "png") return "image/png";
  if (ext == "ico") return "image/x-icon";
  if (ext == "woff2") return "font/woff2";
  if (ext == "txt") return "text/plain; charset=utf-8";
  return "application/octet-stream";
}

bool accepts_gzip(std::string_view accept_encoding) {
  // The q of "gzip" when named, else of "*"; absent means 1.
  std::optional<bool> gzip;
  std::optional<bool> any;
  for_each_element(accept_encoding, [&](std::string_view element) {
    const auto semicolon = element.find(';');
    const auto coding = lower(trim(element.substr(0, semicolon)));
    bool wanted = true;
    auto params = element.substr(semicolon == std::string_view::npos ? element.size() : semicolon);
    for_each_param(params, [&](std::string_view param) {
      if (param.size() < 2 || (param[0] != 'q' && param[0] != 'Q') || param[1] != '=') return;
      // q is 0 to 1 with at most three decimals: any non-zero digit wants it.
      auto value = param.substr(2);
      value = value.substr(0, value.find_first_not_of("0123456789."));
      wanted = value.find_first_of("123456789") != std::string_view::npos;
    });
    if (coding == "gzip" || coding == "x-gzip") gzip = wanted;
    if (coding == "*") any = wanted;
  });
  return gzip.value_or(any.value_or(false));
}

std::string content_security_policy(std::string_view host) {
  std::string connect = "'self'";
  if (auto name = policy_host(host); !name.empty())
    connect += fmt::format(" ws://{0}:* wss://{0}:*", name);
  return fmt::format(
      "default-src 'none'; script-src 'self'{}; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
      "font-src 'self'; connect-src {}; manifest-src 'self'; base-uri 'none'; "
      "form-action 'none'; frame-ancestors 'none'",
      panel().script_hashes, connect);
}

void add_web_routes(net::Router& router) {
  for (const auto& asset : web_assets()) {
    std::vector<std::string> paths{asset.path};
    if (asset.path == "/index.html") paths.emplace_back("/");
    for (const auto& path : paths) {
      router.add(http::verb::get, path,
                 [a = &asset](Request& request) { return serve(a, false, request); });
      router.add(http::verb::head, path,
                 [a = &asset](Request& request) { return serve(a, true, request); });
    }
  }
}

}  // namespace mooring::admin
