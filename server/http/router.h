// SPDX-License-Identifier: Apache-2.0
// Router: the routing table of the HTTP server. Exact paths ("/metrics") and prefixes
// ("/v1/models/") map, per method, to handlers; an unknown path gets 404 and a known path with
// another method 405 (with an Allow header), both as JSON errors.
//
// Threading: routes are added before the server starts; Dispatch is then read-only and runs
// concurrently on the I/O threads.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/http/http_types.h"

namespace lychee::http {

class Router {
 public:
  // Exact path match. Adding a (method, path) pair twice is a bug (LY_CHECK).
  void Add(std::string method, std::string path, Handler handler);
  // Matches every path starting with `prefix`; exact routes win, then the longest prefix.
  void AddPrefix(std::string method, std::string prefix, Handler handler);

  // Runs first for every request (any path, known or not): a response it returns is sent instead
  // of routing (e.g. 401 for a missing API key). Set before the server starts.
  using Guard = std::function<std::optional<HttpResponse>(const HttpRequest&)>;
  void SetGuard(Guard guard) { guard_ = std::move(guard); }

  // Calls the matching handler, or answers 404/405 itself.
  void Dispatch(const HttpRequest& request, ResponseWriterPtr writer) const;

 private:
  using MethodTable = std::map<std::string, Handler, std::less<>>;  // method -> handler
  const MethodTable* Find(std::string_view path) const;

  std::map<std::string, MethodTable, std::less<>> exact_;
  std::map<std::string, MethodTable, std::less<>> prefixes_;
  Guard guard_;
};

}  // namespace lychee::http
