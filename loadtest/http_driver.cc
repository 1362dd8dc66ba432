// SPDX-License-Identifier: Apache-2.0
#include "loadtest/http_driver.h"

#include <fmt/format.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <utility>

namespace lychee::loadtest {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;
using Json = nlohmann::json;

// One connection with an absolute deadline over all of its operations.
class Exchange {
 public:
  Exchange(const std::string& host, const std::string& port, double timeout_seconds)
      : host_(host), port_(port), stream_(io_) {
    stream_.expires_after(std::chrono::microseconds(static_cast<int64_t>(timeout_seconds * 1e6)));
  }

  beast::error_code Connect() {
    beast::error_code ec;
    tcp::resolver resolver(io_);
    const tcp::resolver::results_type endpoints = resolver.resolve(host_, port_, ec);
    if (ec) return ec;
    return Run([&](auto handler) { stream_.async_connect(endpoints, handler); });
  }

  beast::error_code Write(const bhttp::request<bhttp::string_body>& request) {
    return Run([&](auto handler) { bhttp::async_write(stream_, request, handler); });
  }

  beast::error_code ReadHeader(bhttp::response_parser<bhttp::string_body>& parser) {
    return Run([&](auto handler) { bhttp::async_read_header(stream_, buffer_, parser, handler); });
  }

  beast::error_code ReadSome(bhttp::response_parser<bhttp::string_body>& parser) {
    return Run([&](auto handler) { bhttp::async_read_some(stream_, buffer_, parser, handler); });
  }

  void Close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  // From any thread: closes the connection at the next (or the current) operation, as a client
  // that goes away would.
  void Disconnect() {
    net::post(io_, [this] {
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
      stream_.socket().close(ignored);
    });
  }

 private:
  // Runs one async operation to completion; the tcp_stream's expiry turns a stuck server into
  // beast::error::timeout instead of a hang.
  template <typename Op>
  beast::error_code Run(Op op) {
    beast::error_code result = net::error::would_block;
    op([&result](beast::error_code ec, auto&&...) { result = ec; });
    io_.restart();
    io_.run();
    return result;
  }

  std::string host_, port_;
  net::io_context io_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
};

std::string RequestBody(const PlannedRequest& request, const RequestOptions& options) {
  Json body = Json::object();
  if (!options.model.empty()) body["model"] = options.model;
  body["prompt"] = request.prompt;
  body["max_tokens"] = request.output_len;
  body["temperature"] = 0;
  body["ignore_eos"] = true;
  body["seed"] = options.seed;
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}, {"continuous_usage_stats", true}};
  if (!options.policy.empty() || options.budget_tokens > 0) {
    Json policy = Json::object();
    if (!options.policy.empty()) policy["name"] = options.policy;
    if (options.budget_tokens > 0) policy["budget_tokens"] = options.budget_tokens;
    body["policy"] = std::move(policy);
  }
  return body.dump();
}

std::string ErrorMessage(const std::string& body) {
  const Json json = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (json.is_object() && json.contains("error") && json["error"].is_object() &&
      json["error"].contains("message") && json["error"]["message"].is_string()) {
    return json["error"]["message"].get<std::string>();
  }
  return body.substr(0, 200);
}

// Reads the SSE events of one completion and feeds their tokens to a TokenClock.
class SseReader {
 public:
  explicit SseReader(TokenClock& clock) : clock_(clock) {}

  // Consumes complete events from `data` starting at `offset`; returns the new offset.
  size_t Feed(std::string_view data, size_t offset) {
    for (;;) {
      const size_t end = data.find("\n\n", offset);
      if (end == std::string_view::npos) return offset;
      OnEvent(data.substr(offset, end - offset));
      offset = end + 2;
    }
  }

  bool done() const { return done_; }
  bool finished() const { return finish_reason_.has_value(); }
  const std::string& finish_reason() const { return *finish_reason_; }
  const std::string& error() const { return error_; }

 private:
  void OnEvent(std::string_view event) {
    size_t pos = 0;
    while (pos < event.size()) {
      size_t eol = event.find('\n', pos);
      if (eol == std::string_view::npos) eol = event.size();
      const std::string_view line = event.substr(pos, eol - pos);
      pos = eol + 1;
      if (line.rfind("data:", 0) != 0) continue;  // comments (": ping") and other fields
      std::string_view payload = line.substr(5);
      if (!payload.empty() && payload.front() == ' ') payload.remove_prefix(1);
      if (payload == "[DONE]") {
        done_ = true;
        continue;
      }
      OnChunk(Json::parse(payload, nullptr, /*allow_exceptions=*/false));
    }
  }

  void OnChunk(const Json& chunk) {
    if (!chunk.is_object()) {
      error_ = "malformed SSE data";
      return;
    }
    if (chunk.contains("error")) {
      error_ = chunk["error"].is_object() && chunk["error"].contains("message")
                   ? chunk["error"]["message"].dump()
                   : chunk["error"].dump();
      return;
    }
    bool has_text = false;
    if (chunk.contains("choices") && chunk["choices"].is_array() && !chunk["choices"].empty()) {
      const Json& choice = chunk["choices"][0];
      has_text = choice.contains("text") && choice["text"].is_string() &&
                 !choice["text"].get<std::string>().empty();
      if (choice.contains("finish_reason") && choice["finish_reason"].is_string()) {
        finish_reason_ = choice["finish_reason"].get<std::string>();
      }
    }
    if (chunk.contains("usage") && chunk["usage"].is_object()) {
      const Json& usage = chunk["usage"];
      saw_usage_ = true;
      const int64_t total = usage.value("completion_tokens", int64_t{0});
      clock_.OnTokens(total - counted_);
      counted_ = std::max(counted_, total);
      if (usage.contains("prompt_tokens_details") && usage["prompt_tokens_details"].is_object()) {
        clock_.record().cached_tokens =
            usage["prompt_tokens_details"].value("cached_tokens", int64_t{0});
      }
    } else if (!saw_usage_ && has_text) {
      clock_.OnTokens(1);
      ++counted_;
    }
  }

  TokenClock& clock_;
  int64_t counted_ = 0;
  bool saw_usage_ = false;
  bool done_ = false;
  std::optional<std::string> finish_reason_;
  std::string error_;
};

}  // namespace

HttpDriver::HttpDriver(std::string host, std::string port)
    : host_(std::move(host)), port_(std::move(port)) {}

absl::Status HttpDriver::Probe(double timeout_seconds) {
  Exchange exchange(host_, port_, timeout_seconds);
  const std::string where = fmt::format("http://{}:{}", host_, port_);
  if (beast::error_code ec = exchange.Connect()) {
    return absl::UnavailableError(fmt::format("cannot reach {}: {}", where, ec.message()));
  }
  bhttp::request<bhttp::string_body> request(bhttp::verb::get, "/v1/models", 11);
  request.set(bhttp::field::host, host_);
  bhttp::response_parser<bhttp::string_body> parser;
  if (beast::error_code ec = exchange.Write(request)) {
    return absl::UnavailableError(fmt::format("GET {}/v1/models: {}", where, ec.message()));
  }
  while (!parser.is_done()) {
    if (beast::error_code ec = exchange.ReadSome(parser)) {
      return absl::UnavailableError(fmt::format("GET {}/v1/models: {}", where, ec.message()));
    }
  }
  exchange.Close();
  if (parser.get().result_int() != 200) {
    return absl::UnavailableError(
        fmt::format("GET {}/v1/models: HTTP {}", where, parser.get().result_int()));
  }
  return absl::OkStatus();
}

RequestRecord HttpDriver::Send(const PlannedRequest& request, const RequestOptions& options,
                               Clock::time_point run_start) {
  bhttp::request<bhttp::string_body> http(bhttp::verb::post, "/v1/completions", 11);
  http.set(bhttp::field::host, host_);
  http.set(bhttp::field::content_type, "application/json");
  http.body() = RequestBody(request, options);
  http.prepare_payload();

  Exchange exchange(host_, port_, options.timeout_seconds);
  TokenClock clock(request.index, static_cast<int64_t>(request.prompt.size()), run_start);
  // --cancel-fraction: the client disconnects mid-request.
  CancelTimer cancel(request.cancel_after_seconds, [&exchange] { exchange.Disconnect(); });
  auto fail = [&](const beast::error_code& ec) {
    if (cancel.fired()) return clock.Finish(false, kClientDisconnected, ec.message());
    return clock.Finish(false, ec == beast::error::timeout ? "DEADLINE_EXCEEDED" : "UNAVAILABLE",
                        ec.message());
  };
  if (beast::error_code ec = exchange.Connect()) return fail(ec);
  if (beast::error_code ec = exchange.Write(http)) return fail(ec);

  bhttp::response_parser<bhttp::string_body> parser;
  // Unlimited, but not boost::none: Boost 1.74 compares a Content-Length against an empty limit
  // as "exceeded".
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  if (beast::error_code ec = exchange.ReadHeader(parser)) return fail(ec);
  const int status = static_cast<int>(parser.get().result_int());
  SseReader sse(clock);
  size_t offset = 0;
  while (!parser.is_done()) {
    if (beast::error_code ec = exchange.ReadSome(parser)) {
      if (ec == bhttp::error::end_of_stream) break;
      return fail(ec);
    }
    if (status == 200) offset = sse.Feed(parser.get().body(), offset);
  }
  exchange.Close();
  if (cancel.fired() && !(status == 200 && sse.done() && sse.finished())) {
    return clock.Finish(false, kClientDisconnected, "the client closed the connection");
  }
  if (status != 200) {
    return clock.Finish(false, fmt::format("HTTP {}", status), ErrorMessage(parser.get().body()));
  }
  if (!sse.error().empty()) return clock.Finish(false, "STREAM_ERROR", sse.error());
  if (sse.finished() && sse.finish_reason() == "abort") {
    return clock.Finish(false, "ABORTED", "the server aborted it");
  }
  if (!sse.done() || !sse.finished()) {
    return clock.Finish(false, "INCOMPLETE", "the stream ended before [DONE]");
  }
  return clock.Finish(true);
}

}  // namespace lychee::loadtest
