// SPDX-License-Identifier: Apache-2.0
// OpenAiGateway: routes, worker threads, /v1/models, and the submit-then-stream step shared by
// both generation endpoints (see openai_gateway.h). The endpoint bodies are in
// completions_handler.cc and chat_handler.cc.
#include "server/openai/openai_gateway.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <system_error>
#include <thread>
#include <utility>

#include "common/logging.h"
#include "server/openai/api_error.h"

namespace lychee::openai {
namespace {

ModelLimits LimitsOf(const ModelInfo& info, const PolicySpec& default_policy) {
  ModelLimits limits{.served_name = info.model_id,
                     .vocab_size = info.vocab_size,
                     .max_model_len = info.max_model_len,
                     .default_policy = default_policy};
  absl::StatusOr<SamplingDefaults> defaults = LoadSamplingDefaults(info.model_path);
  if (defaults.ok()) {
    limits.defaults = *defaults;
  } else {
    // The engine loaded this model: a generation_config.json it tolerates should not stop the
    // HTTP API; requests get OpenAI's defaults instead.
    LY_LOG_WARN("openai: ignoring generation_config.json defaults: {}",
                defaults.status().ToString());
  }
  return limits;
}

http::HttpResponse JsonResponse(const Json& body) {
  http::HttpResponse response;
  response.status = 200;
  response.content_type = "application/json";
  response.body = Dump(body);
  return response;
}

}  // namespace

OpenAiGateway::OpenAiGateway(EngineClient& engine, ChatPrompt chat_prompt, GatewayOptions options)
    : engine_(engine),
      chat_prompt_(std::move(chat_prompt)),
      options_(std::move(options)),
      limits_(LimitsOf(engine.model_info(), options_.default_policy)),
      created_(std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count()) {
  pump_options_.poll_interval = options_.poll_interval;
  pump_options_.ping_interval = options_.ping_interval;
  pump_options_.max_pending_bytes = options_.max_pending_bytes;
  pump_options_.stopping = [this] {
    std::lock_guard<std::mutex> lock(mu_);
    return stopping_;
  };
}

OpenAiGateway::~OpenAiGateway() {
  std::unique_lock<std::mutex> lock(mu_);
  stopping_ = true;
  // Workers notice within a poll interval, abort their requests and exit.
  idle_.wait(lock, [this] { return num_workers_ == 0; });
}

void OpenAiGateway::AddRoutes(http::Router& router) {
  router.Add("GET", "/v1/models",
             [this](const http::HttpRequest& request, http::ResponseWriterPtr writer) {
               HandleModels(request, std::move(writer));
             });
  router.AddPrefix("GET", "/v1/models/",
                   [this](const http::HttpRequest& request, http::ResponseWriterPtr writer) {
                     HandleModel(request, std::move(writer));
                   });
  // Bodies must be declared JSON (CheckJsonContentType says why). The body and the one header the
  // workers need are copied: the request dies with the handler.
  using Run = void (OpenAiGateway::*)(const Call&, http::ResponseWriterPtr);
  for (const auto& [path, run] :
       {std::pair<const char*, Run>{"/v1/completions", &OpenAiGateway::RunCompletion},
        std::pair<const char*, Run>{"/v1/chat/completions", &OpenAiGateway::RunChat}}) {
    router.Add(
        "POST", path,
        [this, run](const http::HttpRequest& request, http::ResponseWriterPtr writer) {
          if (absl::Status st = CheckJsonContentType(request.Header("Content-Type")); !st.ok()) {
            return writer->Send(UnsupportedMediaType(st));
          }
          Dispatch(
              writer, [this, run, call = MakeCall(request), writer] { (this->*run)(call, writer); },
              request.body.size());
        });
  }
}

OpenAiGateway::Call OpenAiGateway::MakeCall(const http::HttpRequest& request) const {
  Call call;
  call.body = request.body;
  call.request_id_header = std::string(request.Header("X-Request-Id"));
  call.principal = options_.principal_of ? options_.principal_of(request)
                                         : fmt::format("http:{}", request.remote_address);
  return call;
}

int64_t OpenAiGateway::num_live_requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return num_workers_;
}

int64_t OpenAiGateway::WaitIdle(absl::Time deadline) const {
  std::unique_lock<std::mutex> lock(mu_);
  idle_.wait_until(lock, absl::ToChronoTime(deadline), [this] { return num_workers_ == 0; });
  return num_workers_;
}

void OpenAiGateway::Dispatch(http::ResponseWriterPtr writer, std::function<void()> work,
                             size_t body_bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      return writer->Send(ErrorResponse(absl::UnavailableError("the server is shutting down")));
    }
    if (num_workers_ >= options_.max_concurrent_requests) {
      return writer->Send(ErrorResponse(absl::ResourceExhaustedError(fmt::format(
          "too many requests in flight ({}); retry later", options_.max_concurrent_requests))));
    }
    ++num_workers_;
  }
  // After `work` and everything it held (the body, JSON, tokens) are gone.
  auto done = [this, large = body_bytes >= options_.large_body_bytes] {
    if (options_.trimmer != nullptr) {
      if (large) {
        options_.trimmer->NoteLargeRequest();
      } else {
        options_.trimmer->NoteWork();
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (--num_workers_ == 0) idle_.notify_all();
  };
  try {
    std::thread([work = std::move(work), done]() mutable {
      // Nothing may escape a worker: nlohmann::json and the allocator throw.
      try {
        work();
      } catch (const std::exception& e) {
        LY_LOG_ERROR("openai: request worker failed: {}", e.what());
      }
      work = nullptr;  // frees the request (its Call) before `done` reports it
      done();
    }).detach();
  } catch (const std::system_error& e) {
    done();
    writer->Send(ErrorResponse(
        absl::ResourceExhaustedError(fmt::format("cannot start a request worker: {}", e.what()))));
  }
}

void OpenAiGateway::HandleModels(const http::HttpRequest&, http::ResponseWriterPtr writer) const {
  const ModelInfo& info = engine_.model_info();
  Json model = Json::object();
  model["id"] = info.model_id;
  model["object"] = "model";
  model["created"] = created_;
  model["owned_by"] = "lychee-serve";
  model["root"] = security::PublicModelName(info.model_path);  // the folder name, not its path
  model["parent"] = nullptr;
  model["max_model_len"] = info.max_model_len;
  Json body = Json::object();
  body["object"] = "list";
  body["data"] = Json::array({std::move(model)});
  writer->Send(JsonResponse(body));
}

void OpenAiGateway::HandleModel(const http::HttpRequest& request,
                                http::ResponseWriterPtr writer) const {
  const std::string id = request.path.substr(std::string_view("/v1/models/").size());
  if (id != limits_.served_name) {
    return writer->Send(ErrorResponse(CheckModel(id.empty() ? "(empty)" : id, limits_)));
  }
  const ModelInfo& info = engine_.model_info();
  Json model = Json::object();
  model["id"] = info.model_id;
  model["object"] = "model";
  model["created"] = created_;
  model["owned_by"] = "lychee-serve";
  model["root"] = security::PublicModelName(info.model_path);  // the folder name, not its path
  model["parent"] = nullptr;
  model["max_model_len"] = info.max_model_len;
  writer->Send(JsonResponse(model));
}

absl::Status OpenAiGateway::CheckNotDraining() const {
  if (options_.is_draining && options_.is_draining()) {
    return absl::UnavailableError("the server is draining; retry on another replica");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> OpenAiGateway::NewRequestId(std::string_view prefix,
                                                        const std::string& header) const {
  if (header.empty()) return security::RandomRequestId(prefix);
  if (!IsValidRequestId(header)) {
    return WithParam(
        absl::InvalidArgumentError(fmt::format(
            "X-Request-Id must be 1 to {} printable ASCII characters without blanks ({} bytes "
            "given)",
            kMaxRequestIdLength, header.size())),
        "X-Request-Id");
  }
  return fmt::format("{}{}", prefix, header);
}

absl::Status OpenAiGateway::CheckPromptBytes(std::string_view param, size_t text_bytes) const {
  if (options_.max_prompt_bytes <= 0 ||
      static_cast<int64_t>(text_bytes) <= options_.max_prompt_bytes) {
    return absl::OkStatus();
  }
  return WithCode(InvalidParam(param, fmt::format("{} is {} bytes of text, more than this server's "
                                                  "max_prompt_bytes={} (checked before "
                                                  "tokenizing; the context is {} tokens)",
                                                  param, text_bytes, options_.max_prompt_bytes,
                                                  limits_.max_model_len)),
                  "context_length_exceeded");
}

int64_t OpenAiGateway::NowSeconds() const {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void OpenAiGateway::Serve(GenerationRequest request, const Call& call, ResponseBuilder& builder,
                          bool stream, http::ResponseWriter& writer) {
  if (absl::Status st = CheckNotDraining(); !st.ok()) return writer.Send(ErrorResponse(st));
  request.priority = std::max(request.priority, options_.min_priority);
  const std::string request_id = request.request_id;
  const auto num_prompt_tokens = static_cast<int64_t>(request.prompt.size());
  absl::StatusOr<TokenStreamPtr> submitted = engine_.Submit(std::move(request));
  if (!submitted.ok()) {
    absl::Status st = submitted.status();
    // The only precondition a request can miss is its policy's (lychee without a head-role
    // mask for this model): name the field.
    if (st.code() == absl::StatusCode::kFailedPrecondition && ParamOf(st).empty()) {
      st = WithParam(std::move(st), "policy.name");
    }
    return writer.Send(ErrorResponse(st));
  }
  const TokenStreamPtr token_stream = *std::move(submitted);
  security::RequestOwners::Claim claim;
  if (options_.owners != nullptr) claim = options_.owners->Register(request_id, call.principal);
  EngineClient* engine = &engine_;
  auto abort = [token_stream, engine] {
    if (token_stream->finished()) return;
    token_stream->Cancel();
    engine->Abort(token_stream->request_id());
  };
  // Runs on an I/O thread when the connection breaks (or at once if it already has).
  writer.OnClientGone(abort);
  writer.SetTokenCounts(num_prompt_tokens, 0);

  PumpEnd end = PumpEnd::kFinished;
  if (stream) {
    writer.StartStream(
        200, "text/event-stream",
        {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}, {"X-Request-Id", request_id}});
    std::string head;
    for (const Json& chunk : builder.Begin()) head += SseData(chunk);
    writer.Write(std::move(head));
    end = PumpSse(*token_stream, builder, writer, pump_options_);
  } else {
    end = CollectAll(*token_stream, builder, writer, pump_options_);
    if (end == PumpEnd::kFinished) {
      http::HttpResponse response =
          builder.error().ok() ? JsonResponse(builder.Complete()) : ErrorResponse(builder.error());
      response.headers.emplace_back("X-Request-Id", request_id);
      writer.SetTokenCounts(builder.usage().prompt_tokens, builder.usage().completion_tokens);
      writer.Send(std::move(response));
    }
  }
  if (end != PumpEnd::kFinished) {
    // A cut stream is logged when its writer goes: with the tokens produced until then.
    writer.SetTokenCounts(std::max(num_prompt_tokens, builder.usage().prompt_tokens),
                          builder.usage().completion_tokens);
    abort();
  }
}

}  // namespace lychee::openai
