// SPDX-License-Identifier: Apache-2.0
// server/grpc/convert: wire → GenerationRequest (defaults, every field), engine events → wire,
// and status-code mapping.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "model/tokenizer/tokenizer.h"
#include "server/grpc/convert.h"

namespace lychee::grpc_server {
namespace {

class ConvertTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tokenizer = Tokenizer::FromDirectory("models/stories260K");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
  }
  absl::StatusOr<GenerationRequest> Convert(const v1::GenerateRequest& r) {
    return ToGenerationRequest(r, *tokenizer_, tokenizer_->vocab_size(), 512);
  }
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(ConvertTest, CopiesEveryField) {
  v1::GenerateRequest r;
  r.set_request_id("abc");
  r.set_text("Hello");
  r.set_add_special_tokens(false);
  r.set_priority(-3);
  v1::SamplingParams* p = r.mutable_sampling_params();
  p->set_temperature(0.7f);
  p->set_top_p(0.9f);
  p->set_top_k(40);
  p->set_min_p(0.05f);
  p->set_repetition_penalty(1.1f);
  p->set_presence_penalty(0.5f);
  p->set_frequency_penalty(-0.5f);
  p->set_seed(1234);
  p->set_max_tokens(33);
  p->set_min_tokens(2);
  p->add_stop("The end");
  p->add_stop_token_ids(2);
  p->set_ignore_eos(true);
  p->set_skip_special_tokens(false);
  p->set_include_stop_str_in_output(true);
  p->set_top_logprobs(5);
  r.mutable_policy()->set_name("lychee");
  r.mutable_policy()->set_budget_tokens(512);
  r.mutable_policy()->set_max_dropped_mass(0.01);

  absl::StatusOr<GenerationRequest> g = Convert(r);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->request_id, "abc");
  EXPECT_EQ(g->prompt, tokenizer_->Encode("Hello", false));
  EXPECT_EQ(g->priority, -3);
  EXPECT_FLOAT_EQ(g->sampling.temperature, 0.7f);
  EXPECT_FLOAT_EQ(g->sampling.top_p, 0.9f);
  EXPECT_EQ(g->sampling.top_k, 40);
  EXPECT_FLOAT_EQ(g->sampling.min_p, 0.05f);
  EXPECT_FLOAT_EQ(g->sampling.repetition_penalty, 1.1f);
  EXPECT_FLOAT_EQ(g->sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(g->sampling.frequency_penalty, -0.5f);
  EXPECT_TRUE(g->sampling.has_seed);
  EXPECT_EQ(g->sampling.seed, 1234u);
  EXPECT_EQ(g->max_tokens, 33);
  EXPECT_EQ(g->min_tokens, 2);
  EXPECT_EQ(g->stop, std::vector<std::string>{"The end"});
  EXPECT_EQ(g->stop_token_ids, std::vector<int32_t>{2});
  EXPECT_TRUE(g->ignore_eos);
  EXPECT_FALSE(g->skip_special_tokens);
  EXPECT_TRUE(g->include_stop_str_in_output);
  EXPECT_EQ(g->top_logprobs, 5);
  EXPECT_EQ(g->policy.name, "lychee");
  EXPECT_EQ(g->policy.budget_tokens, 512);
  EXPECT_DOUBLE_EQ(g->policy.max_dropped_mass, 0.01);
}

TEST_F(ConvertTest, PolicyKnobsTakeTheServerDefaultsWhenUnset) {
  PolicySpec defaults;
  defaults.name = "quest";
  defaults.budget_tokens = 256;
  defaults.audit_rate = 0.5;
  defaults.prhs.tau = 0.9;
  defaults.lychee.mode = "token";
  v1::GenerateRequest r;
  r.set_text("Hello");
  // No policy message: the defaults, name included.
  auto g = ToGenerationRequest(r, *tokenizer_, tokenizer_->vocab_size(), 512, defaults);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->policy.name, "quest");
  EXPECT_EQ(g->policy.budget_tokens, 256);
  // Naming only prhs: the server's knobs.
  r.mutable_policy()->set_name("prhs");
  g = ToGenerationRequest(r, *tokenizer_, tokenizer_->vocab_size(), 512, defaults);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->policy.name, "prhs");
  EXPECT_EQ(g->policy.budget_tokens, 256);
  EXPECT_DOUBLE_EQ(g->policy.audit_rate, 0.5);
  EXPECT_DOUBLE_EQ(g->policy.prhs.tau, 0.9);
  EXPECT_EQ(g->policy.lychee.mode, "token");
  // Every knob set; a budget of 0 is the default; max_dropped_mass 0 means "read everything".
  v1::SparsityPolicy* p = r.mutable_policy();
  p->set_budget_tokens(0);
  p->set_max_dropped_mass(0);
  p->set_audit_rate(1);
  p->mutable_lychee()->set_mode("block");
  p->mutable_lychee()->set_sink_tokens(8);
  p->mutable_lychee()->set_local_tokens(32);
  p->mutable_lychee()->set_correction_interval(16);
  p->mutable_prhs()->set_tau(-0.5);
  p->mutable_prhs()->set_dilation(2);
  p->mutable_prhs()->set_dilate_fraction(0.5);
  p->mutable_prhs()->set_sink_tokens(0);
  p->mutable_prhs()->set_local_tokens(1);
  p->mutable_prhs()->set_psaw_start_layer(3);
  p->mutable_prhs()->set_psaw_phi(0.5);
  p->mutable_prhs()->set_psaw_alpha(2);
  g = ToGenerationRequest(r, *tokenizer_, tokenizer_->vocab_size(), 512, defaults);
  ASSERT_TRUE(g.ok()) << g.status();
  const PolicySpec& s = g->policy;
  EXPECT_EQ(s.budget_tokens, 256);
  EXPECT_DOUBLE_EQ(s.max_dropped_mass, 0.0);
  EXPECT_DOUBLE_EQ(s.audit_rate, 1.0);
  EXPECT_EQ(s.lychee.mode, "block");
  EXPECT_EQ(s.lychee.sink_tokens, 8);
  EXPECT_EQ(s.lychee.local_tokens, 32);
  EXPECT_EQ(s.lychee.correction_interval, 16);
  EXPECT_DOUBLE_EQ(s.prhs.tau, -0.5);
  EXPECT_EQ(s.prhs.dilation, 2);
  EXPECT_DOUBLE_EQ(s.prhs.dilate_fraction, 0.5);
  EXPECT_EQ(s.prhs.sink_tokens, 0);
  EXPECT_EQ(s.prhs.local_tokens, 1);
  EXPECT_EQ(s.prhs.psaw_start_layer, 3);
  EXPECT_DOUBLE_EQ(s.prhs.psaw_phi, 0.5);
  EXPECT_DOUBLE_EQ(s.prhs.psaw_alpha, 2.0);
}

TEST_F(ConvertTest, PolicyRangeErrorsNameTheField) {
  struct Case {
    std::function<void(v1::SparsityPolicy&)> set;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](auto& p) { p.set_budget_tokens(-1); }, "policy.budget_tokens is -1, must be >= 0"},
      {[](auto& p) { p.set_max_dropped_mass(-0.5); },
       "policy.max_dropped_mass is -0.5, must be in [0, 1]"},
      {[](auto& p) { p.set_max_dropped_mass(1.5); }, "policy.max_dropped_mass is 1.5"},
      {[](auto& p) { p.set_audit_rate(2); }, "policy.audit_rate is 2, must be in [0, 1]"},
      {[](auto& p) { p.mutable_lychee()->set_mode("page"); },
       "policy.lychee.mode is \"page\", must be \"block\" or \"token\""},
      {[](auto& p) { p.mutable_lychee()->set_sink_tokens(-1); },
       "policy.lychee.sink_tokens is -1, must be >= 0"},
      {[](auto& p) { p.mutable_lychee()->set_local_tokens(0); },
       "policy.lychee.local_tokens is 0, must be >= 1"},
      {[](auto& p) { p.mutable_lychee()->set_correction_interval(-1); },
       "policy.lychee.correction_interval is -1, must be >= 0"},
      {[](auto& p) { p.mutable_prhs()->set_tau(1.5); },
       "policy.prhs.tau is 1.5, must be in [-1, 1]"},
      {[](auto& p) { p.mutable_prhs()->set_dilation(-1); }, "policy.prhs.dilation is -1"},
      {[](auto& p) { p.mutable_prhs()->set_dilate_fraction(-0.1); },
       "policy.prhs.dilate_fraction is -0.1, must be in [0, 1]"},
      {[](auto& p) { p.mutable_prhs()->set_sink_tokens(-3); }, "policy.prhs.sink_tokens is -3"},
      {[](auto& p) { p.mutable_prhs()->set_local_tokens(0); }, "policy.prhs.local_tokens is 0"},
      {[](auto& p) { p.mutable_prhs()->set_psaw_start_layer(-1); },
       "policy.prhs.psaw_start_layer is -1"},
      {[](auto& p) { p.mutable_prhs()->set_psaw_phi(0); },
       "policy.prhs.psaw_phi is 0, must be in (0, 1]"},
      {[](auto& p) { p.mutable_prhs()->set_psaw_alpha(-1); }, "policy.prhs.psaw_alpha is -1"},
  };
  for (const Case& c : cases) {
    v1::GenerateRequest r;
    r.set_text("Hello");
    c.set(*r.mutable_policy());
    absl::StatusOr<GenerationRequest> g = Convert(r);
    ASSERT_FALSE(g.ok()) << c.message;
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(g.status().message().find(c.message), absl::string_view::npos) << g.status();
  }
}

TEST(ConvertPolicy, DefaultPolicyMessageHasEveryField) {
  PolicySpec spec;
  spec.name = "prhs";
  spec.prhs.tau = 0.7;
  v1::SparsityPolicy m;
  ToPolicyMessage(spec, &m);
  EXPECT_EQ(m.name(), "prhs");
  EXPECT_TRUE(m.has_budget_tokens() && m.has_max_dropped_mass() && m.has_audit_rate());
  EXPECT_EQ(m.budget_tokens(), spec.budget_tokens);
  EXPECT_EQ(m.lychee().mode(), "block");
  EXPECT_TRUE(m.lychee().has_sink_tokens() && m.lychee().has_local_tokens() &&
              m.lychee().has_correction_interval());
  EXPECT_DOUBLE_EQ(m.prhs().tau(), 0.7);
  EXPECT_TRUE(m.prhs().has_dilation() && m.prhs().has_dilate_fraction() &&
              m.prhs().has_sink_tokens() && m.prhs().has_local_tokens() &&
              m.prhs().has_psaw_start_layer() && m.prhs().has_psaw_phi() &&
              m.prhs().has_psaw_alpha());
}

TEST_F(ConvertTest, TextAddsBosByDefault) {
  v1::GenerateRequest r;
  r.set_text("Hello");
  absl::StatusOr<GenerationRequest> g = Convert(r);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->prompt, tokenizer_->Encode("Hello", true));
  EXPECT_EQ(g->sampling.top_k, 0);
  EXPECT_EQ(g->max_tokens, 16);
}

// Issue 15: bounded work per request, checked before any tokenizing or matching.
TEST_F(ConvertTest, StopListsAndPromptBytesAreBounded) {
  v1::GenerateRequest r;
  r.set_text("Hello");
  for (int i = 0; i <= kMaxStopStrings; ++i) r.mutable_sampling_params()->add_stop("s");
  absl::StatusOr<GenerationRequest> g = Convert(r);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("sampling_params.stop holds"), absl::string_view::npos);
  r.mutable_sampling_params()->clear_stop();
  r.mutable_sampling_params()->add_stop(std::string(kMaxStopStringBytes + 1, 'x'));
  g = Convert(r);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("sampling_params.stop[0]"), absl::string_view::npos);
  r.mutable_sampling_params()->clear_stop();
  r.set_text(std::string(2000, 'a'));
  g = ToGenerationRequest(r, *tokenizer_, 512, 512, {}, /*max_prompt_bytes=*/1000);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(g.status().message().find("max_prompt_bytes=1000"), absl::string_view::npos);
}

TEST_F(ConvertTest, TopKMinusOneIsOff) {
  v1::GenerateRequest r;
  r.set_text("Hello");
  r.mutable_sampling_params()->set_top_k(-1);
  absl::StatusOr<GenerationRequest> g = Convert(r);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->sampling.top_k, 0);
}

TEST(ConvertEvents, ChunkAndComplete) {
  GenerationOutput e;
  e.token_ids = {5, 6};
  e.text = "ab";
  e.logprobs.resize(2);
  e.logprobs[0].token_id = 5;
  e.logprobs[0].logprob = -0.5f;
  e.logprobs[0].top = {{5, -0.5f}, {9, -1.5f}};
  e.prompt_tokens = 4;
  e.completion_tokens = 2;
  e.cached_tokens = 1;
  e.finished = true;
  e.finish_reason = FinishReason::kStop;
  e.matched_stop = "</s>";
  e.timings = {0.1, 0.2, 0.3};
  ASSERT_TRUE(HasOutput(e));
  v1::GenerateStreamChunk chunk;
  ToChunk(e, &chunk);
  EXPECT_EQ(chunk.token_ids_size(), 2);
  EXPECT_EQ(chunk.text(), "ab");
  ASSERT_EQ(chunk.logprobs_size(), 2);
  EXPECT_EQ(chunk.logprobs(0).top_logprobs_size(), 2);
  EXPECT_EQ(chunk.logprobs(0).top_logprobs(1).token_id(), 9);
  EXPECT_EQ(chunk.cached_tokens(), 1);
  v1::GenerateComplete complete;
  ToComplete(e, &complete);
  EXPECT_EQ(complete.finish_reason(), "stop");
  EXPECT_EQ(complete.matched_stop(), "</s>");
  EXPECT_DOUBLE_EQ(complete.ttft_seconds(), 0.2);
  EXPECT_DOUBLE_EQ(complete.e2e_seconds(), 0.3);
  EXPECT_FALSE(complete.has_policy_report());  // no sparse policy ran
  EXPECT_FALSE(HasOutput(GenerationOutput{}));

  e.policy_report.policy = "dense";
  complete.Clear();
  ToComplete(e, &complete);
  EXPECT_FALSE(complete.has_policy_report());

  PolicyReport& report = e.policy_report;
  report.policy = "quest";
  report.max_bound = 0.02f;
  report.mean_bound = 0.005;
  report.max_exact = 0.01f;
  report.audited_steps = 3;
  report.kv_read_fraction = 0.25;
  report.widenings = 1;
  report.head_selections = 96;
  report.reused = 64;
  report.dense_fallbacks = 2;
  report.cache_corrections = 4;
  report.selection_seconds = 0.5;
  complete.Clear();
  ToComplete(e, &complete);
  ASSERT_TRUE(complete.has_policy_report());
  const v1::PolicyReport& r = complete.policy_report();
  EXPECT_EQ(r.policy(), "quest");
  EXPECT_EQ(r.max_bound(), 0.02);  // the float's shortest decimal, not 0.0199999995...
  EXPECT_EQ(r.mean_bound(), 0.005);
  EXPECT_EQ(r.max_exact(), 0.01);
  EXPECT_EQ(r.audited_steps(), 3);
  EXPECT_EQ(r.kv_read_fraction(), 0.25);
  EXPECT_EQ(r.widenings(), 1);
  EXPECT_EQ(r.head_selections(), 96);
  EXPECT_EQ(r.reused(), 64);
  EXPECT_EQ(r.dense_fallbacks(), 2);
  EXPECT_EQ(r.cache_corrections(), 4);
  EXPECT_EQ(r.selection_seconds(), 0.5);
}

TEST(ConvertStatus, Codes) {
  EXPECT_EQ(ToGrpcStatus(absl::InvalidArgumentError("x")).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(ToGrpcStatus(absl::ResourceExhaustedError("x")).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ToGrpcStatus(absl::UnavailableError("x")).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ToGrpcStatus(absl::AlreadyExistsError("x")).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(ToGrpcStatus(absl::AlreadyExistsError("msg")).error_message(), "msg");
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusFor(absl::StatusCode::kInternal), 500);
}

}  // namespace
}  // namespace lychee::grpc_server

namespace lychee::grpc_server {
namespace {

// A tokenizer.model loads and encodes in a process that links gRPC and libprotobuf. (With
// libsentencepiece, whose bundled protobuf clashed with libprotobuf, it did not; the model is now
// read by our own wire-format reader.)
TEST(ConvertTokenizer, SentencePieceWorksBesideLibprotobuf) {
  auto tokenizer = Tokenizer::FromDirectory("tests/data/llama2-tokenizer");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const std::vector<int32_t> ids = (*tokenizer)->Encode("Hello world", false);
  EXPECT_EQ(ids, (std::vector<int32_t>{15043, 3186}));  // As sentencepiece encodes it.
  EXPECT_EQ((*tokenizer)->Decode(ids, true), "Hello world");
  v1::GenerateRequest r;
  r.set_text("Hello world");
  auto g = ToGenerationRequest(r, **tokenizer, (*tokenizer)->vocab_size(), 4096);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->prompt, (std::vector<int32_t>{1, 15043, 3186}));  // BOS added.
}

}  // namespace
}  // namespace lychee::grpc_server
