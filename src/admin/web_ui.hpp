// The web admin panel: the files of src/admin/web/, compiled into the binary
// (cmake/web_assets.cmake), served on the admin listener at "/" (index.html)
// and at their own paths.
// Promises: every answer carries its Content-Type, a strong ETag (a hash of
// the file) and "Cache-Control: no-cache" (a browser revalidates and gets 304
// with no body); gzip when the client accepts it and it is smaller. The page
// (and any SVG) comes with a Content-Security-Policy: scripts, styles and
// connections from this origin only (plus WebSockets to the same host, for the
// chat test panel on the gateway's port), one inline script allowed by its
// hash (the import map), no eval; inline styles and data: images are allowed
// (CodeMirror writes <style> elements and draws its lint icons as data: SVG).
// A path that names no file is the server's plain JSON 404.
#pragma once

#include "net/router.hpp"

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mooring::admin {

// One embedded file as the build step wrote it: its path under
// src/admin/web/, its size and SHA-256 (hex), and its bytes gzipped.
struct EmbeddedFile {
  std::string_view path;
  std::string_view sha256;
  std::size_t size;
  std::span<const unsigned char> gzip;
};

// Defined by the generated source.
std::span<const EmbeddedFile> embedded_web_files();

// A file ready to serve: both encodings, its type and its tags.
struct WebAsset {
  std::string path;          // "/app.js"; index.html is also "/"
  std::string content_type;  // "text/javascript; charset=utf-8"
  std::string identity;      // the file as it is
  std::string gzip;          // empty when gzip would not be smaller
  std::string etag;          // "\"<hash>\"" for the file as it is
  std::string gzip_etag;     // "\"<hash>-gz\"" for the gzipped bytes
};

// The embedded files, inflated and checked once (at the first call): a file
// whose bytes do not inflate to its size and hash is a broken build, thrown
// as std::logic_error.
const std::vector<WebAsset>& web_assets();

// GET and HEAD for "/" and for every embedded file.
void add_web_routes(net::Router& router);

// The policy sent with every file. `host` is the request's Host header; a
// valid host name lets the chat panel open WebSockets to that host's other
// ports (the gateway), anything else allows this origin only.
std::string content_security_policy(std::string_view host);

// Whether an Accept-Encoding value accepts gzip ("gzip;q=0" does not).
bool accepts_gzip(std::string_view accept_encoding);

// "text/css; charset=utf-8" for "x.css"; application/octet-stream when unknown.
std::string_view content_type_for(std::string_view path);

}  // namespace mooring::admin
