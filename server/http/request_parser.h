// SPDX-License-Identifier: Apache-2.0
// How the HTTP server reads one request: the Beast parser's limits, what each read error is
// answered with, and the HttpRequest made from the parsed message. Session (http_session.cc)
// uses these pieces on the socket; ParseRequest runs the same steps over bytes in memory, for
// the fuzz target (fuzz/) and tests.
#pragma once

#include <boost/beast/core/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cstddef>
#include <string>
#include <string_view>

#include "server/http/http_types.h"

namespace lychee::http {

using BeastRequest = boost::beast::http::request<boost::beast::http::string_body>;
using BeastRequestParser = boost::beast::http::request_parser<boost::beast::http::string_body>;

// Sets the header and body limits on a fresh parser.
void ConfigureParser(BeastRequestParser& parser, size_t max_header_bytes, size_t max_body_bytes);

// What a read error gets: 0 to close without answering (the client went away, stopped
// mid-request or timed out), else the status of the error response: 431 (header limit),
// 413 (body limit), 400 (anything malformed).
int StatusForReadError(const boost::beast::error_code& ec);

// The handlers' view of a parsed message: method, target split into path and query, headers in
// arrival order, and the body (moved out of `message`; the rest of it stays readable).
HttpRequest ToHttpRequest(BeastRequest& message);

struct ParsedRequest {
  int status = 0;  // 0: a complete request; else StatusForReadError's answer (0 never: see below)
  bool closed = false;  // the bytes end before a complete request (the session closes)
  std::string error;    // the parser's words, when status != 0
  HttpRequest request;  // valid when status == 0 and !closed
  bool keep_alive = false;
  size_t consumed = 0;  // bytes of `bytes` the request took (the rest would be the next one)
};

// Parses the first request in `bytes` as a Session would, with the same limits and answers,
// the end of `bytes` standing for the client closing its side.
ParsedRequest ParseRequest(std::string_view bytes, size_t max_header_bytes, size_t max_body_bytes);

}  // namespace lychee::http
