// SPDX-License-Identifier: Apache-2.0
// Request parsing and validation of the OpenAI gateway (server/openai/openai_request.h) and the
// error JSON it turns into (api_error.h): every accepted field lands in the GenerationRequest,
// every bad one is a 400 naming its param, unknown models are 404 model_not_found, and
// max_tokens is fitted to the context the way vLLM does.
#include "server/openai/openai_request.h"

#include <gtest/gtest.h>

#include <string>
#include <variant>
#include <vector>

#include "server/openai/api_error.h"

namespace lychee::openai {
namespace {

const ModelLimits kLimits{.served_name = "stories260K", .vocab_size = 512, .max_model_len = 512};

// The param and HTTP status a request body is refused with.
struct Refusal {
  int status = 0;
  std::string param;
  std::string message;
};

Refusal RefuseCompletion(const std::string& body) {
  absl::StatusOr<CompletionParams> parsed = ParseCompletionRequest(body, kLimits);
  if (parsed.ok()) return {};
  return {HttpStatusFor(parsed.status().code()), ParamOf(parsed.status()),
          std::string(parsed.status().message())};
}

Refusal RefuseChat(const std::string& body) {
  absl::StatusOr<ChatParams> parsed = ParseChatRequest(body, kLimits);
  if (parsed.ok()) return {};
  return {HttpStatusFor(parsed.status().code()), ParamOf(parsed.status()),
          std::string(parsed.status().message())};
}

TEST(OpenAiCompletionRequestTest, Defaults) {
  absl::StatusOr<CompletionParams> p = ParseCompletionRequest(R"({"prompt": "Once"})", kLimits);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(std::get<std::string>(p->prompt), "Once");
  EXPECT_EQ(p->common.model, "");
  EXPECT_FALSE(p->common.max_tokens.has_value());
  EXPECT_FALSE(p->common.stream);
  EXPECT_FALSE(p->logprobs.has_value());
  const GenerationRequest& r = p->common.generation;
  EXPECT_FLOAT_EQ(r.sampling.temperature, 1.0f);  // OpenAI's default
  EXPECT_FLOAT_EQ(r.sampling.top_p, 1.0f);
  EXPECT_EQ(r.sampling.top_k, 0);
  EXPECT_FALSE(r.sampling.has_seed);
  EXPECT_TRUE(r.skip_special_tokens);
  EXPECT_EQ(r.policy.name, "dense");
}

TEST(OpenAiCompletionRequestTest, EveryField) {
  absl::StatusOr<CompletionParams> p = ParseCompletionRequest(R"({
      "model": "stories260K", "prompt": [1, 403, 407], "max_tokens": 7, "temperature": 0.5,
      "top_p": 0.9, "top_k": 40, "min_p": 0.05, "presence_penalty": 0.5,
      "frequency_penalty": -0.5, "repetition_penalty": 1.1, "seed": 18446744073709551615,
      "stop": ["\n\n", "The end"], "stop_token_ids": [2, 13], "ignore_eos": true,
      "min_tokens": 3, "logprobs": 2, "n": 1, "best_of": 1, "user": "u-1", "stream": true,
      "stream_options": {"include_usage": true, "continuous_usage_stats": true},
      "include_stop_str_in_output": true, "skip_special_tokens": false,
      "policy": {"name": "dense", "budget_tokens": 1024, "max_dropped_mass": 0.01},
      "priority": -3, "suffix": "", "logit_bias": {}, "unknown_field": [1, 2]})",
                                                              kLimits);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(std::get<std::vector<int32_t>>(p->prompt), (std::vector<int32_t>{1, 403, 407}));
  EXPECT_EQ(p->common.model, "stories260K");
  EXPECT_EQ(p->common.max_tokens, 7);
  EXPECT_TRUE(p->common.stream);
  EXPECT_TRUE(p->common.include_usage);
  EXPECT_TRUE(p->common.continuous_usage_stats);
  EXPECT_EQ(p->logprobs, 2);
  const GenerationRequest& r = p->common.generation;
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.9f);
  EXPECT_EQ(r.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(r.sampling.min_p, 0.05f);
  EXPECT_FLOAT_EQ(r.sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.frequency_penalty, -0.5f);
  EXPECT_FLOAT_EQ(r.sampling.repetition_penalty, 1.1f);
  EXPECT_TRUE(r.sampling.has_seed);
  EXPECT_EQ(r.sampling.seed, 18446744073709551615ull);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n\n", "The end"}));
  EXPECT_EQ(r.stop_token_ids, (std::vector<int32_t>{2, 13}));
  EXPECT_TRUE(r.ignore_eos);
  EXPECT_EQ(r.min_tokens, 3);
  EXPECT_TRUE(r.include_stop_str_in_output);
  EXPECT_FALSE(r.skip_special_tokens);
  EXPECT_EQ(r.policy.budget_tokens, 1024);
  EXPECT_DOUBLE_EQ(r.policy.max_dropped_mass, 0.01);
  EXPECT_EQ(r.priority, -3);
}

TEST(OpenAiCompletionRequestTest, PolicyKnobsAndServerDefaults) {
  ModelLimits limits = kLimits;
  limits.default_policy.budget_tokens = 512;
  limits.default_policy.audit_rate = 0.25;
  limits.default_policy.prhs.tau = 0.9;
  limits.default_policy.lychee.sink_tokens = 4;
  // Naming only the policy: every knob is the server's.
  auto p = ParseCompletionRequest(R"({"prompt": "x", "policy": {"name": "prhs"}})", limits);
  ASSERT_TRUE(p.ok()) << p.status();
  const PolicySpec& got = p->common.generation.policy;
  EXPECT_EQ(got.name, "prhs");
  EXPECT_EQ(got.budget_tokens, 512);
  EXPECT_DOUBLE_EQ(got.audit_rate, 0.25);
  EXPECT_DOUBLE_EQ(got.prhs.tau, 0.9);
  EXPECT_EQ(got.lychee.sink_tokens, 4);
  // No policy at all: the server's default policy (its name too).
  limits.default_policy.name = "quest";
  p = ParseCompletionRequest(R"({"prompt": "x"})", limits);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->common.generation.policy.name, "quest");
  EXPECT_EQ(p->common.generation.policy.budget_tokens, 512);
  // Every field; max_dropped_mass 0 ("read everything") is valid; a budget of 0 is the default.
  auto c = ParseChatRequest(R"({"messages": [{"role": "user", "content": "hi"}],
      "policy": {"name": "lychee", "budget_tokens": 0, "max_dropped_mass": 0, "audit_rate": 1,
                 "lychee": {"mode": "token", "sink_tokens": 8, "local_tokens": 32,
                            "correction_interval": 16},
                 "prhs": {"tau": -0.5, "dilation": 2, "dilate_fraction": 0.5, "sink_tokens": 0,
                          "local_tokens": 1, "psaw_start_layer": 3, "psaw_phi": 0.5,
                          "psaw_alpha": 2}}})",
                            limits);
  ASSERT_TRUE(c.ok()) << c.status();
  const PolicySpec& all = c->common.generation.policy;
  EXPECT_EQ(all.name, "lychee");
  EXPECT_EQ(all.budget_tokens, 512);
  EXPECT_DOUBLE_EQ(all.max_dropped_mass, 0.0);
  EXPECT_DOUBLE_EQ(all.audit_rate, 1.0);
  EXPECT_EQ(all.lychee.mode, "token");
  EXPECT_EQ(all.lychee.sink_tokens, 8);
  EXPECT_EQ(all.lychee.local_tokens, 32);
  EXPECT_EQ(all.lychee.correction_interval, 16);
  EXPECT_DOUBLE_EQ(all.prhs.tau, -0.5);
  EXPECT_EQ(all.prhs.dilation, 2);
  EXPECT_DOUBLE_EQ(all.prhs.dilate_fraction, 0.5);
  EXPECT_EQ(all.prhs.sink_tokens, 0);
  EXPECT_EQ(all.prhs.local_tokens, 1);
  EXPECT_EQ(all.prhs.psaw_start_layer, 3);
  EXPECT_DOUBLE_EQ(all.prhs.psaw_phi, 0.5);
  EXPECT_DOUBLE_EQ(all.prhs.psaw_alpha, 2.0);
  // Null fields are unset.
  p = ParseCompletionRequest(
      R"({"prompt": "x", "policy": {"name": null, "audit_rate": null, "prhs": null}})", limits);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_DOUBLE_EQ(p->common.generation.policy.audit_rate, 0.25);
}

TEST(OpenAiCompletionRequestTest, PromptForms) {
  auto prompt_of = [](const std::string& body) { return ParseCompletionRequest(body, kLimits); };
  EXPECT_EQ(std::get<std::string>(prompt_of(R"({"prompt": ["a b"]})")->prompt), "a b");
  EXPECT_EQ(std::get<std::vector<int32_t>>(prompt_of(R"({"prompt": [[5, 6]]})")->prompt),
            (std::vector<int32_t>{5, 6}));
  // An empty text prompt is refused, as gRPC refuses an empty `text` (issue 15).
  for (const char* body : {R"({"prompt": ""})", R"({"prompt": [""]})"}) {
    auto empty = prompt_of(body);
    ASSERT_FALSE(empty.ok()) << body;
    EXPECT_EQ(ParamOf(empty.status()), "prompt");
  }
  // A negative seed keeps its bits; 16.0 is an integer.
  auto p = prompt_of(R"({"prompt": "x", "seed": -1, "max_tokens": 16.0})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->common.generation.sampling.seed, ~0ull);
  EXPECT_EQ(p->common.max_tokens, 16);
  // stop as a single string; top_k -1 is off.
  p = prompt_of(R"({"prompt": "x", "stop": "END", "top_k": -1})");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->common.generation.stop, std::vector<std::string>{"END"});
  EXPECT_EQ(p->common.generation.sampling.top_k, 0);
}

TEST(OpenAiCompletionRequestTest, RefusalsNameTheParam) {
  struct Case {
    std::string body;
    std::string param;
    std::string message_part;
  };
  const std::vector<Case> cases = {
      {R"({"prompt": "x", "max_tokens": 0})", "max_tokens", "max_tokens is 0, must be >= 1"},
      {R"({"prompt": "x", "max_tokens": -5})", "max_tokens", "must be >= 1"},
      {R"({"prompt": "x", "max_tokens": "16"})", "max_tokens", "must be an integer, got string"},
      {R"({"prompt": "x", "max_tokens": 1.5})", "max_tokens", "integer"},
      {R"({"prompt": "x", "temperature": 300})", "temperature",
       "temperature is 300, must be in [0, 100]"},
      {R"({"prompt": "x", "temperature": "hot"})", "temperature", "must be a number"},
      {R"({"prompt": "x", "top_p": 0})", "top_p", "top_p is 0, must be in (0, 1]"},
      {R"({"prompt": "x", "top_k": -2})", "top_k", "must be >= -1"},
      {R"({"prompt": "x", "min_p": 1.5})", "min_p", "must be in [0, 1]"},
      {R"({"prompt": "x", "presence_penalty": 3})", "presence_penalty", "[-2, 2]"},
      {R"({"prompt": "x", "frequency_penalty": -3})", "frequency_penalty", "[-2, 2]"},
      {R"({"prompt": "x", "repetition_penalty": 0})", "repetition_penalty", "(0, 100]"},
      {R"({"prompt": "x", "seed": "7"})", "seed", "integer"},
      {R"({"prompt": "x", "stop": ""})", "stop", "stop is empty"},
      {R"({"prompt": "x", "stop": ["a", ""]})", "stop", "stop[1] is empty"},
      {R"({"prompt": "x", "stop": [1]})", "stop", "stop[0] must be a string"},
      {R"({"prompt": "x", "stop": 5})", "stop", "string or a list"},
      {R"({"prompt": "x", "stop_token_ids": [2, 512]})", "stop_token_ids",
       "stop_token_ids[1] is 512, must be in [0, 512)"},
      {R"({"prompt": "x", "ignore_eos": "yes"})", "ignore_eos", "must be a boolean"},
      {R"({"prompt": "x", "min_tokens": -1})", "min_tokens", "must be >= 0"},
      {R"({"prompt": "x", "n": 2})", "n", "only n = 1"},
      {R"({"prompt": "x", "best_of": 3})", "best_of", "only 1"},
      {R"({"prompt": "x", "logprobs": 21})", "logprobs", "logprobs is 21, must be in [0, 20]"},
      {R"({"prompt": "x", "logprobs": true})", "logprobs", "integer"},
      {R"({"prompt": "x", "echo": true, "logprobs": 1})", "echo", "echo with logprobs"},
      {R"({"prompt": "x", "suffix": "tail"})", "suffix", "not supported"},
      {R"({"prompt": "x", "logit_bias": {"5": 10}})", "logit_bias", "not supported"},
      {R"({"prompt": "x", "prompt_logprobs": 1})", "prompt_logprobs", "not supported"},
      {R"({"prompt": "x", "stream_options": {"include_usage": true}})", "stream_options",
       "only allowed when stream is true"},
      {R"({"prompt": "x", "stream": true, "stream_options": {"include_usage": 1}})",
       "stream_options.include_usage", "must be a boolean"},
      {R"({"prompt": "x", "policy": "dense"})", "policy", "must be an object"},
      {R"({"prompt": "x", "policy": {"budget_tokens": -1}})", "policy.budget_tokens",
       "policy.budget_tokens is -1, must be >= 0"},
      {R"({"prompt": "x", "policy": {"max_dropped_mass": -0.1}})", "policy.max_dropped_mass",
       "policy.max_dropped_mass is -0.1, must be in [0, 1]"},
      {R"({"prompt": "x", "policy": {"max_dropped_mass": 1.5}})", "policy.max_dropped_mass",
       "must be in [0, 1]"},
      {R"({"prompt": "x", "policy": {"audit_rate": 2}})", "policy.audit_rate",
       "policy.audit_rate is 2, must be in [0, 1]"},
      {R"({"prompt": "x", "policy": {"audit_rate": "all"}})", "policy.audit_rate",
       "must be a number"},
      {R"({"prompt": "x", "policy": {"lychee": 1}})", "policy.lychee", "must be an object"},
      {R"({"prompt": "x", "policy": {"lychee": {"mode": "page"}}})", "policy.lychee.mode",
       "policy.lychee.mode is \"page\", must be \"block\" or \"token\""},
      {R"({"prompt": "x", "policy": {"lychee": {"sink_tokens": -1}}})", "policy.lychee.sink_tokens",
       "policy.lychee.sink_tokens is -1, must be >= 0"},
      {R"({"prompt": "x", "policy": {"lychee": {"local_tokens": 0}}})",
       "policy.lychee.local_tokens", "must be >= 1"},
      {R"({"prompt": "x", "policy": {"lychee": {"correction_interval": -2}}})",
       "policy.lychee.correction_interval", "must be >= 0"},
      {R"({"prompt": "x", "policy": {"prhs": []}})", "policy.prhs", "must be an object"},
      {R"({"prompt": "x", "policy": {"prhs": {"tau": 1.5}}})", "policy.prhs.tau",
       "policy.prhs.tau is 1.5, must be in [-1, 1]"},
      {R"({"prompt": "x", "policy": {"prhs": {"dilation": -1}}})", "policy.prhs.dilation",
       "must be >= 0"},
      {R"({"prompt": "x", "policy": {"prhs": {"dilate_fraction": 2}}})",
       "policy.prhs.dilate_fraction", "must be in [0, 1]"},
      {R"({"prompt": "x", "policy": {"prhs": {"sink_tokens": -1}}})", "policy.prhs.sink_tokens",
       "must be >= 0"},
      {R"({"prompt": "x", "policy": {"prhs": {"local_tokens": 0}}})", "policy.prhs.local_tokens",
       "must be >= 1"},
      {R"({"prompt": "x", "policy": {"prhs": {"psaw_start_layer": -1}}})",
       "policy.prhs.psaw_start_layer", "must be >= 0"},
      {R"({"prompt": "x", "policy": {"prhs": {"psaw_phi": 0}}})", "policy.prhs.psaw_phi",
       "policy.prhs.psaw_phi is 0, must be in (0, 1]"},
      {R"({"prompt": "x", "policy": {"prhs": {"psaw_alpha": -1}}})", "policy.prhs.psaw_alpha",
       "must be in [0, 1000000]"},
      {R"({"prompt": "x", "policy": {"prhs": {"tau": "high"}}})", "policy.prhs.tau",
       "must be a number"},
      {R"({"prompt": "x", "priority": 4294967296})", "priority", "32 bits"},
      {R"({"prompt": "x", "model": 5})", "model", "must be a string"},
      {R"({})", "prompt", "prompt is missing"},
      {R"({"prompt": null})", "prompt", "prompt is missing"},
      {R"({"prompt": []})", "prompt", "prompt is empty"},
      {R"({"prompt": 5})", "prompt", "string or a list"},
      {R"({"prompt": ["a", "b"]})", "prompt", "batch prompts are not supported"},
      {R"({"prompt": [[1], [2]]})", "prompt", "batch prompts are not supported"},
      {R"({"prompt": [1, 600]})", "prompt", "prompt[1] is 600, must be in [0, 512)"},
      {R"({"prompt": [1, -1]})", "prompt", "prompt[1] is -1"},
      {R"({"prompt": [1, "a"]})", "prompt", "prompt[1] must be an integer"},
  };
  for (const Case& c : cases) {
    const Refusal r = RefuseCompletion(c.body);
    EXPECT_EQ(r.status, 400) << c.body;
    EXPECT_EQ(r.param, c.param) << c.body << " → " << r.message;
    EXPECT_NE(r.message.find(c.message_part), std::string::npos) << c.body << " → " << r.message;
  }
}

TEST(OpenAiCompletionRequestTest, BadBodies) {
  for (const std::string body :
       {"", "{", "not json", "[1, 2]", "\"text\"", "{\"prompt\": \"x\",}"}) {
    const Refusal r = RefuseCompletion(body);
    EXPECT_EQ(r.status, 400) << body;
    EXPECT_EQ(r.param, "") << body;
    EXPECT_FALSE(r.message.empty());
  }
  // Nesting is bounded before parsing.
  const std::string deep =
      "{\"prompt\": \"x\", \"a\": " + std::string(1000, '[') + std::string(1000, ']') + "}";
  EXPECT_NE(RefuseCompletion(deep).message.find("nests deeper"), std::string::npos);
  // Brackets inside strings do not count.
  const std::string text = "{\"prompt\": \"" + std::string(1000, '[') + "\\\"\"}";
  EXPECT_EQ(RefuseCompletion(text).status, 0);
}

TEST(OpenAiCompletionRequestTest, GenerationConfigDefaults) {
  ModelLimits limits = kLimits;
  limits.defaults = {.temperature = 0.6,
                     .top_p = 0.9,
                     .top_k = 20,
                     .min_p = 0.1,
                     .repetition_penalty = 1.2,
                     .max_new_tokens = 8};
  absl::StatusOr<CompletionParams> p = ParseCompletionRequest(R"({"prompt": "x"})", limits);
  ASSERT_TRUE(p.ok()) << p.status();
  const SamplingParams& s = p->common.generation.sampling;
  EXPECT_FLOAT_EQ(s.temperature, 0.6f);
  EXPECT_FLOAT_EQ(s.top_p, 0.9f);
  EXPECT_EQ(s.top_k, 20);
  EXPECT_FLOAT_EQ(s.min_p, 0.1f);
  EXPECT_FLOAT_EQ(s.repetition_penalty, 1.2f);
  ASSERT_TRUE(FitToContext(10, "prompt", false, limits, p->common).ok());
  EXPECT_EQ(p->common.generation.max_tokens, 8);  // max_new_tokens caps the default
  // The request's own values win.
  p = ParseCompletionRequest(R"({"prompt": "x", "temperature": 0, "top_k": -1, "max_tokens": 30})",
                             limits);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_FLOAT_EQ(p->common.generation.sampling.temperature, 0.0f);
  EXPECT_EQ(p->common.generation.sampling.top_k, 0);
  ASSERT_TRUE(FitToContext(10, "prompt", false, limits, p->common).ok());
  EXPECT_EQ(p->common.generation.max_tokens, 30);
  // stories260K's file has only ids and do_sample: no defaults.
  absl::StatusOr<SamplingDefaults> stories = LoadSamplingDefaults("models/stories260K");
  ASSERT_TRUE(stories.ok()) << stories.status();
  EXPECT_FALSE(stories->temperature.has_value());
  EXPECT_FALSE(stories->max_new_tokens.has_value());
  EXPECT_TRUE(LoadSamplingDefaults("/nonexistent").ok());
}

TEST(OpenAiModelTest, UnknownModelIs404ModelNotFound) {
  EXPECT_TRUE(CheckModel("", kLimits).ok());
  EXPECT_TRUE(CheckModel("stories260K", kLimits).ok());
  const absl::Status st = CheckModel("gpt-4", kLimits);
  EXPECT_EQ(HttpStatusFor(st.code()), 404);
  EXPECT_EQ(ParamOf(st), "model");
  EXPECT_EQ(CodeOf(st), "model_not_found");
  const Json error = ErrorJson(st);
  EXPECT_EQ(error["error"]["message"], "The model `gpt-4` does not exist.");
  EXPECT_EQ(error["error"]["type"], "invalid_request_error");
  EXPECT_EQ(error["error"]["param"], "model");
  EXPECT_EQ(error["error"]["code"], "model_not_found");
}

TEST(OpenAiErrorTest, ShapeAndStatusMapping) {
  const Json bad = ErrorJson(InvalidParam("temperature", "temperature is 300"));
  EXPECT_EQ(Dump(bad), R"({"error":{"message":"temperature is 300","type":"invalid_request_error",)"
                       R"("param":"temperature","code":400}})");
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(ErrorTypeFor(429), "rate_limit_error");
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kDeadlineExceeded), 504);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kAlreadyExists), 409);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kInternal), 500);
  const Json queue_full = ErrorJson(absl::ResourceExhaustedError("queue full"));
  EXPECT_EQ(queue_full["error"]["param"], nullptr);
  EXPECT_EQ(queue_full["error"]["code"], 429);
  // The engine's messages name their field first.
  EXPECT_EQ(ParamOf(absl::InvalidArgumentError("max_tokens: must be at least 1")), "max_tokens");
  EXPECT_EQ(ParamOf(absl::InvalidArgumentError("prompt[3]: token id 9 is outside")), "prompt");
  EXPECT_EQ(ParamOf(absl::InvalidArgumentError("policy.name: unknown")), "policy.name");
  EXPECT_EQ(ParamOf(absl::InvalidArgumentError("sampling `top_p` is 0, must be")), "");
  EXPECT_EQ(ParamOf(absl::UnavailableError("max_tokens: x")), "");
  // Invalid UTF-8 is replaced, not thrown on.
  EXPECT_EQ(Dump(Json("a\xff")), "\"a\xEF\xBF\xBD\"");
  const http::HttpResponse response = ErrorResponse(absl::UnavailableError("draining"));
  EXPECT_EQ(response.status, 503);
  EXPECT_EQ(response.content_type, "application/json");
}

TEST(OpenAiFitToContextTest, VllmRules) {
  auto fit = [](int64_t prompt_len, std::optional<int64_t> max_tokens, bool chat,
                int64_t min_tokens = 0) -> absl::StatusOr<int64_t> {
    CommonParams params;
    params.max_tokens = max_tokens;
    params.generation.min_tokens = min_tokens;
    absl::Status st = FitToContext(prompt_len, chat ? "messages" : "prompt", chat, kLimits, params);
    if (!st.ok()) return st;
    return params.generation.max_tokens;
  };
  EXPECT_EQ(*fit(10, std::nullopt, false), 16);   // completions' default
  EXPECT_EQ(*fit(500, std::nullopt, false), 12);  // ... capped by the room left
  EXPECT_EQ(*fit(10, std::nullopt, true), 502);   // chat: the room left
  EXPECT_EQ(*fit(10, 502, true), 502);
  absl::StatusOr<int64_t> over = fit(10, 503, false);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(ParamOf(over.status()), "max_tokens");
  EXPECT_NE(over.status().message().find("maximum context length is 512 tokens"),
            std::string::npos);
  EXPECT_NE(over.status().message().find("513 tokens (10 in the input, 503 in the completion)"),
            std::string::npos);
  absl::StatusOr<int64_t> long_prompt = fit(512, std::nullopt, true);
  ASSERT_FALSE(long_prompt.ok());
  EXPECT_EQ(ParamOf(long_prompt.status()), "messages");
  EXPECT_EQ(ParamOf(fit(600, 4, false).status()), "prompt");
  absl::StatusOr<int64_t> min_over = fit(10, 4, false, 5);
  ASSERT_FALSE(min_over.ok());
  EXPECT_EQ(ParamOf(min_over.status()), "min_tokens");
}

TEST(OpenAiChatRequestTest, MessagesAndTemplateVariables) {
  absl::StatusOr<ChatParams> p = ParseChatRequest(R"({
      "model": "stories260K",
      "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
          "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"a\": 1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}],
      "tools": [{"type": "function", "function": {"name": "get_weather",
                 "parameters": {"type": "object", "properties": {"z": {}, "a": {}}}}}],
      "tool_choice": "auto",
      "chat_template_kwargs": {"enable_thinking": false},
      "max_completion_tokens": 9, "max_tokens": 100, "logprobs": true, "top_logprobs": 3,
      "response_format": {"type": "text"}})",
                                                  kLimits);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->messages.size(), 4u);
  EXPECT_EQ(p->messages[1]["content"], "Hi\nthere");  // text parts joined like vLLM
  EXPECT_TRUE(p->messages[2]["content"].is_null());
  // Tool-call arguments become a mapping, key order kept.
  const Json& arguments = p->messages[2]["tool_calls"][0]["function"]["arguments"];
  ASSERT_TRUE(arguments.is_object());
  EXPECT_EQ(Dump(arguments), R"({"city":"Paris","a":1})");
  // Tools reach the template as sent, key order kept ("z" before "a").
  EXPECT_EQ(Dump(p->template_variables["tools"][0]["function"]["parameters"]["properties"]),
            R"({"z":{},"a":{}})");
  EXPECT_EQ(p->template_variables["enable_thinking"], false);
  EXPECT_EQ(p->common.max_tokens, 9);  // max_completion_tokens wins
  EXPECT_TRUE(p->logprobs);
  EXPECT_EQ(p->top_logprobs, 3);
  EXPECT_TRUE(p->add_generation_prompt);
}

TEST(OpenAiChatRequestTest, RefusalsNameTheParam) {
  struct Case {
    std::string body;
    std::string param;
    std::string message_part;
  };
  const std::string user = R"("messages": [{"role": "user", "content": "hi"}])";
  const std::vector<Case> cases = {
      {R"({})", "messages", "messages is missing"},
      {R"({"messages": []})", "messages", "messages is empty"},
      {R"({"messages": "hi"})", "messages", "must be a list"},
      {R"({"messages": [5]})", "messages[0]", "must be an object"},
      {R"({"messages": [{"content": "hi"}]})", "messages[0].role", "non-empty string"},
      {R"({"messages": [{"role": "user", "content": 5}]})", "messages[0].content",
       "string or a list of content parts"},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})",
       "messages[0].content[0].type", "'image_url' is not supported"},
      {R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})",
       "messages[0].content[0].text", "must be a string"},
      {"{" + user + R"(, "max_completion_tokens": 0})", "max_completion_tokens", "must be >= 1"},
      {"{" + user + R"(, "top_logprobs": 2})", "top_logprobs", "needs logprobs"},
      {"{" + user + R"(, "logprobs": true, "top_logprobs": 21})", "top_logprobs",
       "must be in [0, 20]"},
      {"{" + user + R"(, "logprobs": 2})", "logprobs", "must be a boolean"},
      {"{" + user + R"(, "tools": {}})", "tools", "must be a list"},
      {"{" + user + R"(, "tool_choice": "required"})", "tool_choice", "not supported"},
      {"{" + user + R"(, "tool_choice": {"type": "function", "function": {"name": "f"}}})",
       "tool_choice", "not supported"},
      {"{" + user + R"(, "chat_template_kwargs": [1]})", "chat_template_kwargs",
       "must be an object"},
      {"{" + user + R"(, "chat_template": "{{ x }}"})", "chat_template", "not supported"},
      {"{" + user + R"(, "continue_final_message": true})", "continue_final_message",
       "not supported"},
      {"{" + user + R"(, "response_format": {"type": "json_object"}})", "response_format",
       "not supported"},
      {"{" + user + R"(, "n": 3})", "n", "only n = 1"},
      {"{" + user + R"(, "echo": true})", "echo", "not supported"},
  };
  for (const Case& c : cases) {
    const Refusal r = RefuseChat(c.body);
    EXPECT_EQ(r.status, 400) << c.body;
    EXPECT_EQ(r.param, c.param) << c.body << " → " << r.message;
    EXPECT_NE(r.message.find(c.message_part), std::string::npos) << c.body << " → " << r.message;
  }
}

TEST(OpenAiRequestIdTest, HeaderIdsArePrintableAndBounded) {
  EXPECT_TRUE(IsValidRequestId("abc-123"));
  EXPECT_FALSE(IsValidRequestId(""));
  EXPECT_FALSE(IsValidRequestId("a b"));
  EXPECT_FALSE(IsValidRequestId("a\nb"));
  EXPECT_FALSE(IsValidRequestId(std::string(kMaxRequestIdLength + 1, 'a')));
}

// Errors in the API's own words (issue 15): no JSON library internals, and a context overflow
// from max_completion_tokens names max_completion_tokens.
TEST(OpenAiErrorWordingTest, ParseErrorsAndMaxCompletionTokens) {
  for (const char* body : {"{x", "{\"prompt\": \"a\",}", "", "[1, 2"}) {
    auto parsed = ParseCompletionRequest(body, kLimits);
    ASSERT_FALSE(parsed.ok()) << body;
    const std::string message(parsed.status().message());
    EXPECT_EQ(message.find("json.exception"), std::string::npos) << message;
    EXPECT_EQ(message.find("parse_error"), std::string::npos) << message;
    EXPECT_NE(message.find("JSON"), std::string::npos) << message;
  }
  auto chat = ParseChatRequest(
      R"({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 600})",
      kLimits);
  ASSERT_TRUE(chat.ok()) << chat.status();
  const absl::Status st = FitToContext(10, "messages", /*chat=*/true, kLimits, chat->common);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(ParamOf(st), "max_completion_tokens");
  EXPECT_NE(st.message().find("max_completion_tokens"), absl::string_view::npos) << st;
}

TEST(OpenAiStopLimitsTest, StopListsAreBounded) {
  using json = nlohmann::json;
  json many = json::array();
  for (size_t i = 0; i <= kMaxStopStrings; ++i) many.push_back("s" + std::to_string(i));
  for (const json& stop : {many, json(std::string(kMaxStopStringBytes + 1, 'x')),
                           json::array({"ok", std::string(kMaxStopStringBytes + 1, 'x')})}) {
    auto parsed = ParseCompletionRequest(json{{"prompt", "x"}, {"stop", stop}}.dump(), kLimits);
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(ParamOf(parsed.status()), "stop");
    EXPECT_NE(parsed.status().message().find("at most"), absl::string_view::npos);
  }
  many.erase(many.end() - 1);
  EXPECT_TRUE(ParseCompletionRequest(json{{"prompt", "x"}, {"stop", many}}.dump(), kLimits).ok());
}

// Issue 15: only bodies declared JSON are read (a browser sends the others cross-origin without
// a preflight).
TEST(OpenAiRequestTest, ContentTypeMustBeJson) {
  for (const char* ok : {"application/json", "application/json; charset=utf-8", "Application/JSON",
                         " application/json ;charset=UTF-8"}) {
    EXPECT_TRUE(CheckJsonContentType(ok).ok()) << ok;
  }
  for (const char* refused :
       {"", "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
        "multipart/form-data; b=x", "application/jsonx", "application/json-seq", "json"}) {
    const absl::Status st = CheckJsonContentType(refused);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << refused;
    EXPECT_NE(st.message().find("Content-Type: application/json"), absl::string_view::npos);
  }
  const http::HttpResponse response = UnsupportedMediaType(CheckJsonContentType("text/plain"));
  EXPECT_EQ(response.status, 415);
  const auto body = nlohmann::json::parse(response.body);
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["code"], "unsupported_media_type");
  EXPECT_NE(body["error"]["message"].get<std::string>().find("`text/plain` given"),
            std::string::npos);
}

}  // namespace
}  // namespace lychee::openai
