// SPDX-License-Identifier: Apache-2.0
#include "server/http/request_parser.h"

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <utility>

namespace lychee::http {
namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

void ConfigureParser(BeastRequestParser& parser, size_t max_header_bytes, size_t max_body_bytes) {
  parser.header_limit(static_cast<std::uint32_t>(max_header_bytes));
  parser.body_limit(max_body_bytes);
}

int StatusForReadError(const beast::error_code& ec) {
  if (ec == bhttp::error::header_limit) return 431;
  // Beast checks a declared Content-Length against the body limit while parsing the header.
  if (ec == bhttp::error::body_limit) return 413;
  // A clean close between requests, a timeout or a reset: nothing to answer. A partial or
  // malformed request gets 400 (if the socket is still writable).
  if (ec == bhttp::error::end_of_stream || ec == net::error::eof || ec == beast::error::timeout ||
      ec == net::error::operation_aborted || ec == net::error::connection_reset ||
      ec == bhttp::error::partial_message || ec == net::ssl::error::stream_truncated) {
    return 0;
  }
  return 400;
}

HttpRequest ToHttpRequest(BeastRequest& message) {
  HttpRequest request;
  request.method = std::string(message.method_string());
  request.target = std::string(message.target());
  const size_t question = request.target.find('?');
  request.path = request.target.substr(0, question);
  if (question != std::string::npos) request.query = request.target.substr(question + 1);
  for (const auto& field : message) {
    request.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  }
  request.body = std::move(message.body());
  return request;
}

ParsedRequest ParseRequest(std::string_view bytes, size_t max_header_bytes, size_t max_body_bytes) {
  ParsedRequest out;
  BeastRequestParser parser;
  ConfigureParser(parser, max_header_bytes, max_body_bytes);
  parser.eager(true);
  beast::error_code ec;
  std::string_view rest = bytes;
  // The end of `bytes` is the client closing its side: an incomplete request is partial.
  auto end_of_input = [&] {
    parser.put_eof(ec);
    if (!ec && !parser.is_done()) ec = bhttp::error::partial_message;
  };
  while (!parser.is_done()) {
    if (rest.empty()) {
      end_of_input();
      break;
    }
    const size_t used = parser.put(net::buffer(rest.data(), rest.size()), ec);
    rest.remove_prefix(used);
    if (ec == bhttp::error::need_more) ec = {};
    if (ec) break;
    if (used == 0) {  // no progress on what is left (e.g. an incomplete header)
      end_of_input();
      break;
    }
  }
  out.consumed = bytes.size() - rest.size();
  if (ec) {
    out.status = StatusForReadError(ec);
    out.closed = out.status == 0;
    out.error = ec.message();
    return out;
  }
  BeastRequest message = parser.release();
  out.keep_alive = message.keep_alive();
  out.request = ToHttpRequest(message);
  return out;
}

}  // namespace lychee::http
