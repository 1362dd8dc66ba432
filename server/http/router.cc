// SPDX-License-Identifier: Apache-2.0
// Router: lookup of exact and prefix routes, and the 404/405 answers (see router.h).
#include "server/http/router.h"

#include "common/logging.h"
#include "fmt/format.h"

namespace lychee::http {

void Router::Add(std::string method, std::string path, Handler handler) {
  auto& methods = exact_[std::move(path)];
  LY_CHECK(methods.emplace(std::move(method), std::move(handler)).second)
      << "http route added twice";
}

void Router::AddPrefix(std::string method, std::string prefix, Handler handler) {
  auto& methods = prefixes_[std::move(prefix)];
  LY_CHECK(methods.emplace(std::move(method), std::move(handler)).second)
      << "http prefix route added twice";
}

const Router::MethodTable* Router::Find(std::string_view path) const {
  if (auto it = exact_.find(path); it != exact_.end()) return &it->second;
  // Longest prefix first: walk back from the last key <= path.
  for (auto it = prefixes_.upper_bound(path); it != prefixes_.begin();) {
    --it;
    if (path.starts_with(it->first)) return &it->second;
  }
  return nullptr;
}

void Router::Dispatch(const HttpRequest& request, ResponseWriterPtr writer) const {
  if (guard_) {
    if (std::optional<HttpResponse> refused = guard_(request)) {
      writer->Send(*std::move(refused));
      return;
    }
  }
  const MethodTable* methods = Find(request.path);
  if (methods == nullptr) {
    writer->Send(JsonError(404, "not_found_error",
                           fmt::format("no route for {} {}", request.method, request.path)));
    return;
  }
  auto it = methods->find(request.method);
  // HEAD is answered by the GET handler; the writer leaves the body out.
  if (it == methods->end() && request.method == "HEAD") it = methods->find("GET");
  if (it == methods->end()) {
    std::string allow;
    for (const auto& [method, handler] : *methods) {
      if (!allow.empty()) allow += ", ";
      allow += method;
    }
    HttpResponse response =
        JsonError(405, "method_not_allowed",
                  fmt::format("method {} not allowed for {}", request.method, request.path));
    response.headers.emplace_back("Allow", allow);
    writer->Send(std::move(response));
    return;
  }
  it->second(request, std::move(writer));
}

}  // namespace lychee::http
