// SPDX-License-Identifier: Apache-2.0
// Response building of the OpenAI gateway (server/openai/openai_response.h, sse_stream.h): the
// completion and chat JSON, stream chunks (role first, deltas, finish, usage, errors), both
// logprobs shapes with token texts decoded in context, and SSE framing. Uses the stories260K
// tokenizer for token texts.
#include "server/openai/openai_response.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "model/tokenizer/tokenizer.h"
#include "server/openai/sse_stream.h"

namespace lychee::openai {
namespace {

class OpenAiResponseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tokenizer = Tokenizer::FromDirectory("models/stories260K");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = *std::move(tokenizer);
  }

  // Ids of `text` without BOS.
  std::vector<int32_t> Ids(const std::string& text) const {
    return tokenizer_->Encode(text, /*add_special_tokens=*/false);
  }

  static GenerationOutput Event(std::vector<int32_t> ids, std::string text, int64_t completion,
                                FinishReason finish = FinishReason::kNone) {
    GenerationOutput e;
    e.token_ids = std::move(ids);
    e.text = std::move(text);
    e.prompt_tokens = 5;
    e.completion_tokens = completion;
    e.cached_tokens = 2;
    e.finished = finish != FinishReason::kNone;
    e.finish_reason = finish;
    return e;
  }

  const ResponseMeta meta_{.id = "cmpl-1", .created = 1700000000, .model = "stories260K"};
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(OpenAiResponseTest, CompletionNonStreaming) {
  CompletionsResponseBuilder b(meta_, *tokenizer_, std::nullopt, std::nullopt, "", false, false);
  b.Add(Event({10}, " Once", 1));
  b.Add(Event({11}, " upon", 2));
  GenerationOutput last = Event({}, "", 2, FinishReason::kStop);
  last.matched_stop = "\n";
  b.Add(last);
  ASSERT_TRUE(b.error().ok());
  EXPECT_EQ(b.Complete().dump(),
            R"({"id":"cmpl-1","object":"text_completion","created":1700000000,)"
            R"("model":"stories260K","choices":[{"index":0,"text":" Once upon","logprobs":null,)"
            R"("finish_reason":"stop","stop_reason":"\n"}],"usage":{"prompt_tokens":5,)"
            R"("completion_tokens":2,"total_tokens":7,"prompt_tokens_details":)"
            R"({"cached_tokens":2}}})");
}

TEST_F(OpenAiResponseTest, CompletionEchoPutsThePromptFirst) {
  CompletionsResponseBuilder b(meta_, *tokenizer_, std::nullopt, std::nullopt, "Once", false,
                               false);
  std::vector<Json> begin = b.Begin();
  ASSERT_EQ(begin.size(), 1u);
  EXPECT_EQ(begin[0]["choices"][0]["text"], "Once");
  b.Add(Event({11}, " upon", 1, FinishReason::kLength));
  EXPECT_EQ(b.Complete()["choices"][0]["text"], "Once upon");
  EXPECT_EQ(b.Complete()["choices"][0]["finish_reason"], "length");
}

TEST_F(OpenAiResponseTest, CompletionStreamChunksAndUsage) {
  CompletionsResponseBuilder b(meta_, *tokenizer_, std::nullopt, std::nullopt, "", true, false);
  EXPECT_TRUE(b.Begin().empty());
  std::vector<Json> chunks = b.OnEvent(Event({10}, " Once", 1));
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0]["object"], "text_completion");
  EXPECT_EQ(chunks[0]["choices"][0]["text"], " Once");
  EXPECT_TRUE(chunks[0]["choices"][0]["finish_reason"].is_null());
  EXPECT_FALSE(chunks[0].contains("usage"));
  // Tokens whose text is held back (stop-string prefix) produce no chunk.
  EXPECT_TRUE(b.OnEvent(Event({12}, "", 2)).empty());
  chunks = b.OnEvent(Event({}, "", 2, FinishReason::kLength));
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[0]["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(chunks[0]["choices"][0]["text"], "");
  EXPECT_TRUE(chunks[1]["choices"].empty());
  EXPECT_EQ(chunks[1]["usage"]["completion_tokens"], 2);
  EXPECT_EQ(chunks[1]["usage"]["total_tokens"], 7);
}

// Sparse requests: usage.policy_report on the final response and the final usage chunk only;
// dense requests have none.
TEST_F(OpenAiResponseTest, PolicyReportInTheFinalUsage) {
  PolicyReport report;
  report.policy = "prhs";
  report.max_bound = 0.02f;
  report.mean_bound = 0.005;
  report.max_exact = 0.01f;
  report.audited_steps = 3;
  report.kv_read_fraction = 0.25;
  report.widenings = 1;
  report.head_selections = 96;
  report.reused = 64;
  report.dense_fallbacks = 2;
  report.cache_corrections = 0;
  report.selection_seconds = 0.5;
  GenerationOutput last = Event({}, "", 2, FinishReason::kLength);
  last.policy_report = report;

  CompletionsResponseBuilder b(meta_, *tokenizer_, std::nullopt, std::nullopt, "", false, false);
  b.Add(Event({10}, " Once", 1));
  b.Add(last);
  EXPECT_EQ(b.Complete()["usage"]["policy_report"].dump(),
            R"({"policy":"prhs","max_bound":0.02,"mean_bound":0.005,"max_exact":0.01,)"
            R"("audited_steps":3,"kv_read_fraction":0.25,"widenings":1,"head_selections":96,)"
            R"("reused":64,"dense_fallbacks":2,"cache_corrections":0,"selection_seconds":0.5})");

  ChatResponseBuilder s(meta_, *tokenizer_, std::nullopt, std::nullopt, true, true);
  std::vector<Json> chunks = s.OnEvent(Event({10}, "a", 1));
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_FALSE(chunks[0]["usage"].contains("policy_report"));
  chunks = s.OnEvent(last);
  ASSERT_EQ(chunks.size(), 2u);
  EXPECT_EQ(chunks[1]["usage"]["policy_report"]["policy"], "prhs");
  EXPECT_EQ(chunks[1]["usage"]["policy_report"]["reused"], 64);

  GenerationOutput dense_last = Event({}, "", 1, FinishReason::kStop);
  dense_last.policy_report.policy = "dense";
  ChatResponseBuilder d(meta_, *tokenizer_, std::nullopt, std::nullopt, false, false);
  d.Add(dense_last);
  EXPECT_FALSE(d.Complete()["usage"].contains("policy_report"));
}

TEST_F(OpenAiResponseTest, ContinuousUsageInEveryChunk) {
  ChatResponseBuilder b(meta_, *tokenizer_, std::nullopt, std::nullopt, false, true);
  std::vector<Json> chunks = b.OnEvent(Event({10}, "a", 1));
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0]["usage"]["completion_tokens"], 1);
}

TEST_F(OpenAiResponseTest, ChatStreamRoleFirstThenDeltas) {
  ChatResponseBuilder b({.id = "chatcmpl-1", .created = 1, .model = "m"}, *tokenizer_, std::nullopt,
                        std::nullopt, true, false);
  std::vector<Json> begin = b.Begin();
  ASSERT_EQ(begin.size(), 1u);
  EXPECT_EQ(begin[0].dump(),
            R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",)"
            R"("choices":[{"index":0,"delta":{"role":"assistant","content":""},)"
            R"("logprobs":null,"finish_reason":null,"stop_reason":null}]})");
  std::vector<Json> chunks = b.OnEvent(Event({10}, "Hi", 1));
  ASSERT_EQ(chunks.size(), 1u);
  EXPECT_EQ(chunks[0]["choices"][0]["delta"].dump(), R"({"content":"Hi"})");
  chunks = b.OnEvent(Event({11}, "!", 2, FinishReason::kStop));
  ASSERT_EQ(chunks.size(), 2u);  // the last text with the finish reason, then usage
  EXPECT_EQ(chunks[0]["choices"][0]["delta"]["content"], "!");
  EXPECT_EQ(chunks[0]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(chunks[1]["object"], "chat.completion.chunk");
  EXPECT_EQ(chunks[1]["usage"]["prompt_tokens"], 5);
}

TEST_F(OpenAiResponseTest, ChatNonStreamingAndAbort) {
  ChatResponseBuilder b(meta_, *tokenizer_, std::nullopt, std::nullopt, false, false);
  b.Add(Event({10}, "Hello", 1));
  b.Add(Event({}, "", 1, FinishReason::kAbort));
  const Json response = b.Complete();
  EXPECT_EQ(response["object"], "chat.completion");
  EXPECT_EQ(response["choices"][0]["message"].dump(), R"({"role":"assistant","content":"Hello"})");
  EXPECT_EQ(response["choices"][0]["finish_reason"], "abort");
  EXPECT_TRUE(response["choices"][0]["stop_reason"].is_null());
}

TEST_F(OpenAiResponseTest, EngineErrorMidStream) {
  ChatResponseBuilder b(meta_, *tokenizer_, std::nullopt, std::nullopt, true, false);
  GenerationOutput failed = Event({}, "", 1, FinishReason::kError);
  failed.error = absl::DeadlineExceededError("the request's deadline passed");
  std::vector<Json> chunks = b.OnEvent(failed);
  ASSERT_EQ(chunks.size(), 1u);  // no finish chunk, no usage: the error object
  EXPECT_EQ(chunks[0]["error"]["message"], "the request's deadline passed");
  EXPECT_EQ(chunks[0]["error"]["code"], 504);
  // Non-streaming, the error is the response.
  ChatResponseBuilder c(meta_, *tokenizer_, std::nullopt, std::nullopt, false, false);
  c.Add(failed);
  EXPECT_EQ(c.error().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST_F(OpenAiResponseTest, CompletionLogprobsLegacyShape) {
  const std::vector<int32_t> prompt = Ids("Once upon a");
  const std::vector<int32_t> out = Ids("Once upon a time there");
  ASSERT_GT(out.size(), prompt.size() + 1);
  const int32_t t1 = out[prompt.size()];
  const int32_t t2 = out[prompt.size() + 1];
  OutputLogprob a{.token_id = t1, .logprob = -0.5f, .top = {{t1, -0.5f}, {t2, -1.5f}}};
  // The chosen token is outside the top 1 (sampled): it is listed anyway, as vLLM does.
  OutputLogprob b{.token_id = t2,
                  .logprob = -std::numeric_limits<float>::infinity(),
                  .top = {{t1, -0.1f}, {t2, -2.0f}}};
  CompletionsResponseBuilder builder(meta_, *tokenizer_, 1, prompt.back(), "", false, false);
  GenerationOutput e = Event({t1, t2}, " time there", 2);
  e.logprobs = {a, b};
  std::vector<Json> chunks = builder.OnEvent(e);
  ASSERT_EQ(chunks.size(), 1u);
  const Json& lp = chunks[0]["choices"][0]["logprobs"];
  // Decoded after the previous token: SentencePiece's "▁time" reads " time".
  EXPECT_EQ(lp["tokens"], Json::array({" time", " there"}));
  EXPECT_EQ(lp["token_logprobs"][0], -0.5);
  EXPECT_EQ(lp["token_logprobs"][1], -9999.0);  // -inf has no JSON spelling
  EXPECT_EQ(lp["text_offset"], Json::array({0, 5}));
  EXPECT_EQ(lp["top_logprobs"][0].dump(), R"({" time":-0.5})");
  EXPECT_EQ(lp["top_logprobs"][1].size(), 2u);  // top 1 (" time") + the chosen " there"
  EXPECT_EQ(lp["top_logprobs"][1][" there"], -9999.0);
}

TEST_F(OpenAiResponseTest, ChatLogprobsShape) {
  const std::vector<int32_t> prompt = Ids("Once upon a");
  const std::vector<int32_t> out = Ids("Once upon a time");
  const int32_t t1 = out[prompt.size()];
  OutputLogprob a{.token_id = t1, .logprob = -0.25f, .top = {{t1, -0.25f}, {5, -3.0f}}};
  ChatResponseBuilder builder(meta_, *tokenizer_, 2, prompt.back(), false, false);
  GenerationOutput e = Event({t1}, " time", 1, FinishReason::kLength);
  e.logprobs = {a};
  builder.Add(e);
  const Json lp = builder.Complete()["choices"][0]["logprobs"];
  ASSERT_EQ(lp["content"].size(), 1u);
  const Json& item = lp["content"][0];
  EXPECT_EQ(item["token"], " time");
  EXPECT_EQ(item["logprob"], -0.25);
  EXPECT_EQ(item["bytes"], Json::array({32, 116, 105, 109, 101}));
  ASSERT_EQ(item["top_logprobs"].size(), 2u);
  EXPECT_EQ(item["top_logprobs"][0]["token"], " time");
  EXPECT_EQ(item["top_logprobs"][1]["logprob"], -3.0);
}

TEST(OpenAiSseTest, Framing) {
  Json chunk = Json::object();
  chunk["a"] = "b\n";
  EXPECT_EQ(SseData(chunk), "data: {\"a\":\"b\\n\"}\n\n");
  EXPECT_EQ(kSseDone, "data: [DONE]\n\n");
  EXPECT_EQ(kSsePing.substr(0, 1), ":");  // an SSE comment
}

}  // namespace
}  // namespace lychee::openai
