// SPDX-License-Identifier: Apache-2.0
// One HTTP/1.1 connection and its ResponseWriter (see http_session.h for the life cycle).
#include "server/http/http_session.h"

#include <algorithm>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/verb.hpp>

#include "common/logging.h"
#include "fmt/format.h"
#include "server/http/request_parser.h"

namespace lychee::http {
namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

namespace {

bool HasCrLf(std::string_view s) { return s.find_first_of("\r\n") != std::string_view::npos; }

// Status line and headers, ending with the empty line. Header names and values with CR or LF
// are dropped: they would let a value inject headers.
std::string SerializeHead(unsigned version, int status, std::string_view content_type,
                          const HeaderList& headers, std::string_view framing, bool close) {
  std::string reason(bhttp::obsolete_reason(static_cast<bhttp::status>(status)));
  std::string out = fmt::format("HTTP/{}.{} {} {}\r\n", version / 10, version % 10, status,
                                reason.empty() ? "Unknown" : reason);
  out += "Server: lychee-serve\r\n";
  if (!content_type.empty() && !HasCrLf(content_type)) {
    out += fmt::format("Content-Type: {}\r\n", content_type);
  }
  for (const auto& [name, value] : headers) {
    if (name.empty() || HasCrLf(name) || HasCrLf(value)) continue;
    out += fmt::format("{}: {}\r\n", name, value);
  }
  out += framing;
  if (close) {
    out += "Connection: close\r\n";
  } else if (version == 10) {
    out += "Connection: keep-alive\r\n";
  }
  out += "\r\n";
  return out;
}

std::string_view FindHeader(const HeaderList& headers, std::string_view name) {
  for (const auto& [key, value] : headers) {
    if (beast::iequals(key, beast::string_view(name.data(), name.size()))) return value;
  }
  return {};
}

// The ResponseWriter of one request: turns Send/StartStream/Write/End into bytes for the session.
class SessionWriter final : public ResponseWriter {
 public:
  // `record` holds the request's method, path, peer and X-Request-Id; the writer fills in the
  // status and duration and hands it to the session's response hook once answered.
  SessionWriter(std::shared_ptr<Session> session, unsigned version, bool keep_alive, bool head,
                ResponseRecord record)
      : session_(std::move(session)),
        version_(version),
        head_(head),
        start_(std::chrono::steady_clock::now()),
        record_(std::move(record)),
        keep_alive_(keep_alive) {}

  ~SessionWriter() override {
    std::lock_guard<std::mutex> lock(mu_);
    switch (state_) {
      case State::kNew:  // the handler forgot to answer
        LY_LOG_WARN("http: handler returned no response; answering 500");
        SendLocked(JsonError(500, "internal_error", "the handler produced no response"));
        break;
      case State::kStreaming:  // unfinished stream: the client cannot tell it is over otherwise
        session_->PostBytes("", Session::After::kClose);
        record_.complete = false;
        RecordLocked();
        break;
      case State::kDone:
        break;
    }
  }

  void Send(HttpResponse response) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ != State::kNew) return;
    SendLocked(std::move(response));
  }

  void StartStream(int status, std::string content_type, HeaderList headers) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ != State::kNew) return;
    state_ = State::kStreaming;
    record_.status = status;
    if (std::string_view id = FindHeader(headers, "X-Request-Id"); !id.empty()) {
      record_.request_id = std::string(id);
    }
    // HTTP/1.0 has no chunked coding: the body runs until the connection closes.
    chunked_ = version_ >= 11;
    if (!chunked_) keep_alive_ = false;
    session_->PostBytes(
        SerializeHead(version_, status, content_type, headers,
                      chunked_ ? "Transfer-Encoding: chunked\r\n" : "", !keep_alive_),
        Session::After::kMore);
  }

  bool Write(std::string data) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ != State::kStreaming || session_->closed()) return false;
    if (data.empty() || head_) return true;
    if (chunked_) data = fmt::format("{:x}\r\n{}\r\n", data.size(), data);
    return session_->PostBytes(std::move(data), Session::After::kMore);
  }

  void End() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ != State::kStreaming) return;
    state_ = State::kDone;
    session_->PostBytes(chunked_ && !head_ ? "0\r\n\r\n" : "",
                        keep_alive_ ? Session::After::kNextRequest : Session::After::kClose);
    RecordLocked();
  }

  bool client_gone() const override { return session_->closed(); }
  size_t pending_bytes() const override { return session_->pending_bytes(); }
  void OnClientGone(std::function<void()> fn) override { session_->AddGoneCallback(std::move(fn)); }
  void SetTokenCounts(int64_t prompt_tokens, int64_t completion_tokens) override {
    std::lock_guard<std::mutex> lock(mu_);
    record_.prompt_tokens = prompt_tokens;
    record_.completion_tokens = completion_tokens;
  }

 private:
  enum class State { kNew, kStreaming, kDone };

  void RecordLocked() {
    record_.duration_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    session_->Record(record_);
  }

  void SendLocked(HttpResponse response) {
    state_ = State::kDone;
    record_.status = response.status;
    if (std::string_view id = FindHeader(response.headers, "X-Request-Id"); !id.empty()) {
      record_.request_id = std::string(id);
    }
    RecordLocked();
    std::string bytes =
        SerializeHead(version_, response.status, response.content_type, response.headers,
                      fmt::format("Content-Length: {}\r\n", response.body.size()), !keep_alive_);
    if (!head_) bytes += response.body;
    session_->PostBytes(std::move(bytes),
                        keep_alive_ ? Session::After::kNextRequest : Session::After::kClose);
  }

  const std::shared_ptr<Session> session_;
  const unsigned version_;
  const bool head_;  // HEAD request: headers only
  const std::chrono::steady_clock::time_point start_;
  std::mutex mu_;
  ResponseRecord record_;      // guarded by mu_
  State state_ = State::kNew;  // guarded by mu_
  bool keep_alive_;            // guarded by mu_
  bool chunked_ = false;       // guarded by mu_
};

}  // namespace

Session::Session(std::shared_ptr<ServerCore> core, net::ip::tcp::socket socket)
    : core_(std::move(core)) {
  if (core_->tls.has_value()) {
    tls_.emplace(beast::tcp_stream(std::move(socket)), *core_->tls);
  } else {
    plain_.emplace(std::move(socket));
  }
}

Session::~Session() {
  if (admitted_) core_->num_admitted.fetch_sub(1);
  std::lock_guard<std::mutex> lock(core_->mu);
  core_->sessions.erase(this);
}

void Session::Record(const ResponseRecord& record) const {
  if (core_->options.on_response) core_->options.on_response(record);
}

void Session::Start(bool admitted) {
  admitted_ = admitted;
  net::dispatch(lowest().get_executor(), [self = shared_from_this()] {
    if (!self->tls_) return self->ReadHeader();
    // The handshake is bounded like a request header; a plaintext request on a TLS port fails
    // here and the connection just closes.
    self->lowest().expires_after(self->core_->options.idle_timeout);
    self->tls_->async_handshake(net::ssl::stream_base::server, [self](beast::error_code ec) {
      if (ec) {
        LY_LOG_DEBUG("http: TLS handshake failed: {}", ec.message());
        return self->CloseOnStrand();
      }
      self->ReadHeader();
    });
  });
}

void Session::ReadHeader() {
  if (closed_.load()) return CloseOnStrand();
  parser_.emplace();
  ConfigureParser(*parser_, core_->options.max_header_bytes, core_->options.max_body_bytes);
  lowest().expires_after(core_->options.idle_timeout);
  WithStream([this](auto& stream) {
    bhttp::async_read_header(
        stream, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
  });
}

void Session::OnHeader(beast::error_code ec) {
  if (ec) return OnReadError(ec);
  const auto& header = parser_->get();
  if (const auto length = parser_->content_length();
      length && *length > core_->options.max_body_bytes) {
    return Reject(413, "request body too large");
  }
  if (!parser_->is_done()) {
    // curl and others wait for 100 Continue before sending a large body.
    auto expect = header[bhttp::field::expect];
    if (beast::iequals(expect, "100-continue")) {
      std::string interim = fmt::format("HTTP/{}.{} 100 Continue\r\n\r\n", header.version() / 10,
                                        header.version() % 10);
      EnqueueOnStrand(std::move(interim), After::kMore);
    }
  }
  WithStream([this](auto& stream) {
    bhttp::async_read(
        stream, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code body_ec, size_t) { self->OnBody(body_ec); });
  });
}

void Session::OnBody(beast::error_code ec) {
  if (ec) return OnReadError(ec);
  Dispatch();
}

void Session::OnReadError(beast::error_code ec) {
  switch (const int status = StatusForReadError(ec)) {
    case 0:
      return CloseOnStrand();
    case 431:
      return Reject(status, "request header fields too large");
    case 413:
      return Reject(status, "request body too large");
    default:
      return Reject(status, fmt::format("malformed request: {}", ec.message()));
  }
}

void Session::Dispatch() {
  BeastRequest message = parser_->release();
  parser_.reset();
  HttpRequest request = ToHttpRequest(message);
  beast::error_code ec;
  const auto endpoint = lowest().socket().remote_endpoint(ec);
  if (!ec)
    request.remote_address = fmt::format("{}:{}", endpoint.address().to_string(), endpoint.port());
  if (!admitted_) {
    const auto& exempt = core_->options.cap_exempt_paths;
    if (std::find(exempt.begin(), exempt.end(), request.path) == exempt.end()) {
      return Refuse(503,
                    fmt::format("too many connections (max_connections={}); retry later",
                                core_->options.max_connections),
                    request.method, request.path);
    }
  }
  // The handler may take its time (or stream): no read timeout while it works.
  lowest().expires_never();
  ResponseRecord record;
  record.method = request.method;
  record.path = request.path;
  record.request_id = std::string(request.Header("X-Request-Id"));
  record.remote_address = request.remote_address;
  record.request_body_bytes = request.body.size();
  auto writer =
      std::make_shared<SessionWriter>(shared_from_this(), message.version(), message.keep_alive(),
                                      message.method() == bhttp::verb::head, std::move(record));
  // No exception may unwind into Asio (it would end the I/O thread): a throwing handler gets 500
  // (ignored if it had already answered).
  try {
    core_->router->Dispatch(request, writer);
  } catch (const std::exception& e) {
    LY_LOG_ERROR("http: handler for {} {} threw: {}", request.method, request.path, e.what());
    writer->Send(JsonError(500, "internal_error", "internal server error"));
  }
}

void Session::Reject(int status, std::string_view message) { Refuse(status, message, "-", "-"); }

void Session::Refuse(int status, std::string_view message, std::string method, std::string path) {
  parser_.reset();
  beast::error_code ec;
  const auto endpoint = lowest().socket().remote_endpoint(ec);
  ResponseRecord record;
  record.method = std::move(method);
  record.path = std::move(path);
  if (!ec) {
    record.remote_address = fmt::format("{}:{}", endpoint.address().to_string(), endpoint.port());
  }
  auto writer = std::make_shared<SessionWriter>(shared_from_this(), 11, /*keep_alive=*/false,
                                                /*head=*/false, std::move(record));
  const std::string_view type = status == 400   ? "invalid_request_error"
                                : status == 503 ? "service_unavailable_error"
                                                : "request_too_large";
  HttpResponse response = JsonError(status, type, message);
  if (status == 503) response.headers.emplace_back("Retry-After", "1");
  writer->Send(std::move(response));
}

bool Session::PostBytes(std::string bytes, After after) {
  std::lock_guard<std::mutex> lock(mu_);
  // Checked under mu_, which Close also takes: once Close has run, nothing reaches the strand,
  // so no handler can be queued in an io_context whose threads have already exited.
  if (closed_.load()) return false;
  pending_bytes_.fetch_add(bytes.size());
  net::post(lowest().get_executor(),
            [self = shared_from_this(), bytes = std::move(bytes), after]() mutable {
              self->EnqueueOnStrand(std::move(bytes), after);
            });
  return true;
}

void Session::EnqueueOnStrand(std::string bytes, After after) {
  if (socket_closed_) {
    pending_bytes_.fetch_sub(bytes.size());
    return;
  }
  out_.emplace_back(std::move(bytes), after);
  if (!writing_) WriteNext();
}

void Session::WriteNext() {
  if (out_.empty()) {
    writing_ = false;
    if (close_when_flushed_) CloseOnStrand();
    return;
  }
  writing_ = true;
  lowest().expires_after(core_->options.write_timeout);
  const std::string& bytes = out_.front().first;
  WithStream([this, &bytes](auto& stream) {
    net::async_write(
        stream, net::buffer(bytes),
        [self = shared_from_this()](beast::error_code ec, size_t n) { self->OnWrite(ec, n); });
  });
}

void Session::OnWrite(beast::error_code ec, size_t bytes) {
  auto [written, after] = std::move(out_.front());
  out_.pop_front();
  pending_bytes_.fetch_sub(written.size());
  if (socket_closed_) {
    writing_ = false;
    return;
  }
  if (ec) {
    MarkGone();
    return CloseOnStrand();
  }
  switch (after) {
    case After::kMore:
      break;
    case After::kNextRequest: {
      // The response is complete: read the next request on this connection.
      std::lock_guard<std::mutex> lock(mu_);
      gone_callbacks_.clear();  // they belonged to the finished request
    }
      writing_ = false;
      if (out_.empty()) return ReadHeader();
      break;
    case After::kClose:
      writing_ = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        gone_fired_ = true;  // the response is complete: nothing to report as gone
        gone_callbacks_.clear();
      }
      return LingerThenClose();
  }
  WriteNext();
}

void Session::LingerThenClose() {
  // Closing a socket with unread request bytes makes the kernel send RST, and the client may
  // lose our response (e.g. the 431 for an oversized header it is still sending). So: send FIN,
  // read and discard what the client still sends for a short while, then close.
  beast::error_code ignored;
  lowest().socket().shutdown(net::ip::tcp::socket::shutdown_send, ignored);
  lowest().expires_after(std::chrono::seconds(2));
  linger_deadline_ = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  DrainSome();
}

void Session::DrainSome() {
  if (socket_closed_ || std::chrono::steady_clock::now() >= linger_deadline_) {
    return CloseOnStrand();
  }
  // Raw bytes below TLS: nothing read here is decrypted or answered.
  lowest().async_read_some(net::buffer(drain_buffer_),
                           [self = shared_from_this()](beast::error_code ec, size_t) {
                             if (ec) return self->CloseOnStrand();
                             self->DrainSome();
                           });
}

void Session::AddGoneCallback(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!gone_fired_ && !closed_.load()) {
      gone_callbacks_.push_back(std::move(fn));
      return;
    }
    if (gone_fired_ && !closed_.load()) return;
  }
  fn();
}

void Session::MarkGone() {
  std::vector<std::function<void()>> callbacks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (gone_fired_) return;
    gone_fired_ = true;
    callbacks.swap(gone_callbacks_);
  }
  for (auto& fn : callbacks) fn();
}

void Session::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_.load()) return;
    closed_.store(true);
  }
  // Posted directly (not through PostBytes, which now refuses): the socket is touched only on
  // the strand.
  net::post(lowest().get_executor(), [self = shared_from_this()] {
    self->MarkGone();
    // Bytes already queued (a response just sent, the last events of a stream) still go out,
    // bounded by the write timeout; then the socket closes.
    if (self->writing_) {
      self->close_when_flushed_ = true;
    } else {
      self->CloseOnStrand();
    }
  });
}

void Session::CloseOnStrand() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_.store(true);
  }
  if (socket_closed_) return;
  socket_closed_ = true;
  beast::error_code ignored;
  lowest().socket().shutdown(net::ip::tcp::socket::shutdown_both, ignored);
  lowest().close();
  // Bytes still queued are dropped (but the one in flight stays until its handler runs, as
  // async_write still refers to it); a streaming handler sees client_gone().
  while (out_.size() > (writing_ ? 1u : 0u)) {
    pending_bytes_.fetch_sub(out_.back().first.size());
    out_.pop_back();
  }
}

}  // namespace lychee::http
