// SPDX-License-Identifier: Apache-2.0
// The OpenAI-compatible HTTP API of the real lychee-server (build/bin) on loopback, with the
// embedded stories260K model, driven over real sockets.
//
// Covers: /v1/models; completions non-streaming and streaming (greedy: the concatenated deltas
// equal the non-streamed text, usage counts, [DONE] last) and equal to lychee-generate; token-id
// prompts; echo; chat completions with the built-in template fallback (stories260K has no
// template), token for token equal to `lychee-generate --chat` (prompt token count included);
// chat streaming (role first); stop strings; logprobs of both shapes; errors (each: HTTP status
// and param); a client that disconnects mid-stream aborts its request in the engine
// (lychee_request_success_total{finished_reason="abort"}); concurrent requests equal their solo
// runs; a full queue is 429; SIGTERM: new requests 503, streams in flight finish, exit 0. Every
// wait is bounded and servers are always killed (ServerProcess's destructor).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/server_process.h"
#include "tests/integration/shared_server_test.h"
#include "tests/unit/server/http_test_client.h"

namespace lychee {
namespace {

using json = nlohmann::json;
using testing::LoopbackServerArgs;
using testing::ProgramResult;
using testing::RunProgram;
using testing::ServerProcess;

constexpr char kModel[] = "models/stories260K";

struct Reply {
  int status = 0;
  json body;                 // the JSON body (non-streaming)
  std::string raw;           // the body as received
  std::vector<json> events;  // SSE data lines, parsed (streaming)
  bool done = false;         // saw data: [DONE] as the last event
};

Reply Post(uint16_t port, const std::string& path, const json& request,
           std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  Reply reply;
  auto response = testing::Fetch("127.0.0.1", port, "POST", path, request.dump(), timeout);
  if (!response.ok()) {
    ADD_FAILURE() << response.status();
    return reply;
  }
  reply.status = response->status;
  reply.raw = response->body;
  if (response->Header("content-type").find("text/event-stream") != std::string::npos) {
    size_t pos = 0;
    while (pos < reply.raw.size()) {
      const size_t end = reply.raw.find("\n\n", pos);
      if (end == std::string::npos) break;
      const std::string event = reply.raw.substr(pos, end - pos);
      pos = end + 2;
      if (event.rfind("data: ", 0) != 0) continue;  // comments (": ping")
      const std::string data = event.substr(6);
      EXPECT_FALSE(reply.done) << "data after [DONE]";
      if (data == "[DONE]") {
        reply.done = true;
      } else {
        reply.events.push_back(json::parse(data));
      }
    }
  } else {
    reply.body = json::parse(reply.raw, nullptr, false);
  }
  return reply;
}

// Concatenated text / delta content of a stream, and the chunk that carries finish_reason.
struct Streamed {
  std::string text;
  std::string finish_reason;
  json usage;
  int num_chunks = 0;
};

Streamed Concatenate(const Reply& reply, bool chat) {
  Streamed s;
  for (const json& e : reply.events) {
    if (e.contains("usage") && e["choices"].empty()) {
      s.usage = e["usage"];
      continue;
    }
    ++s.num_chunks;
    const json& choice = e["choices"][0];
    if (chat) {
      if (choice["delta"].contains("content")) s.text += choice["delta"]["content"];
    } else {
      s.text += choice["text"];
    }
    if (!choice["finish_reason"].is_null()) s.finish_reason = choice["finish_reason"];
  }
  return s;
}

int64_t AbortCount(uint16_t port) {
  auto metrics = testing::Fetch("127.0.0.1", port, "GET", "/metrics");
  if (!metrics.ok()) return -1;
  std::smatch m;
  static const std::regex kAbort(
      R"(lychee_request_success_total\{[^}]*finished_reason="abort"[^}]*\} (\d+))");
  if (!std::regex_search(metrics->body, m, kAbort)) return 0;
  return std::stoll(m[1]);
}

class OpenAiServerTest : public testing::SharedServerTest<OpenAiServerTest> {
 public:
  static std::vector<std::string> SuiteServerArgs() { return LoopbackServerArgs(kModel); }

 protected:
  void SetUp() override {
    SharedServerTest::SetUp();
    if (HasFatalFailure()) return;
    port_ = static_cast<uint16_t>(server_->http_port());
    ASSERT_NE(port_, 0) << server_->output();
  }

  static json Greedy(json request) {
    request["temperature"] = 0;
    return request;
  }

  uint16_t port_ = 0;
};

TEST_F(OpenAiServerTest, ModelsListsTheServedModel) {
  auto response = testing::Fetch("127.0.0.1", port_, "GET", "/v1/models");
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status, 200);
  const json body = json::parse(response->body);
  EXPECT_EQ(body["object"], "list");
  ASSERT_EQ(body["data"].size(), 1u);
  EXPECT_EQ(body["data"][0]["id"], "stories260K");
  EXPECT_EQ(body["data"][0]["object"], "model");
  EXPECT_EQ(body["data"][0]["max_model_len"], 512);
  EXPECT_TRUE(body["data"][0]["created"].is_number_integer());
  auto one = testing::Fetch("127.0.0.1", port_, "GET", "/v1/models/stories260K");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->status, 200);
  EXPECT_EQ(json::parse(one->body)["id"], "stories260K");
  auto missing = testing::Fetch("127.0.0.1", port_, "GET", "/v1/models/gpt-4");
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(json::parse(missing->body)["error"]["code"], "model_not_found");
}

TEST_F(OpenAiServerTest, CompletionStreamEqualsNonStreamAndLycheeGenerate) {
  const std::string prompt = "Once upon a time, there was a little girl";
  const json request = Greedy({{"model", "stories260K"}, {"prompt", prompt}, {"max_tokens", 48}});
  const Reply whole = Post(port_, "/v1/completions", request);
  ASSERT_EQ(whole.status, 200) << whole.raw;
  const json& choice = whole.body["choices"][0];
  const std::string text = choice["text"];
  EXPECT_EQ(whole.body["object"], "text_completion");
  EXPECT_EQ(whole.body["model"], "stories260K");
  EXPECT_EQ(whole.body["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  const json& usage = whole.body["usage"];
  EXPECT_EQ(usage["total_tokens"],
            usage["prompt_tokens"].get<int>() + usage["completion_tokens"].get<int>());
  if (choice["finish_reason"] == "length") {
    EXPECT_EQ(usage["completion_tokens"], 48);
  }
  EXPECT_TRUE(usage["prompt_tokens_details"]["cached_tokens"].is_number_integer());

  json stream_request = request;
  stream_request["stream"] = true;
  stream_request["stream_options"] = {{"include_usage", true}};
  const Reply streamed = Post(port_, "/v1/completions", stream_request);
  ASSERT_EQ(streamed.status, 200) << streamed.raw;
  EXPECT_TRUE(streamed.done);
  const Streamed s = Concatenate(streamed, /*chat=*/false);
  EXPECT_EQ(s.text, text);
  EXPECT_EQ(s.finish_reason, choice["finish_reason"]);
  EXPECT_EQ(s.usage["completion_tokens"], usage["completion_tokens"]);
  EXPECT_EQ(s.usage["prompt_tokens"], usage["prompt_tokens"]);
  EXPECT_GT(s.num_chunks, 1);
  for (const json& e : streamed.events) EXPECT_EQ(e["id"], streamed.events[0]["id"]);

  // lychee-generate prints the output's own decoding; the server's text continues the prompt
  // (a leading SentencePiece space stays).
  ProgramResult reference = RunProgram(
      "lychee-generate",
      {"--model", kModel, "--prompt", prompt, "--max-tokens", "48", "--temperature", "0"});
  ASSERT_EQ(reference.exit_code, 0) << reference.err;
  ASSERT_GE(text.size(), reference.out.size());
  EXPECT_EQ(text.substr(text.size() - reference.out.size()), reference.out);
}

TEST_F(OpenAiServerTest, TokenIdPromptAndEcho) {
  const Reply by_text =
      Post(port_, "/v1/completions", Greedy({{"prompt", "Once upon a time"}, {"max_tokens", 12}}));
  ASSERT_EQ(by_text.status, 200) << by_text.raw;
  // stories260K: BOS (1) then the text's ids; the same ids as a list give the same completion.
  auto tokenize = RunProgram("lychee-generate", {"--model", kModel, "--prompt", "Once upon a time",
                                                 "--max-tokens", "0", "--verbose"});
  ASSERT_EQ(tokenize.exit_code, 0) << tokenize.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(tokenize.err, m, std::regex(R"(prompt ids \(\d+\): ([\d ]+))")))
      << tokenize.err;
  json ids = json::array();
  std::istringstream in(m[1].str());
  for (int id; in >> id;) ids.push_back(id);
  const Reply by_ids =
      Post(port_, "/v1/completions", Greedy({{"prompt", ids}, {"max_tokens", 12}}));
  ASSERT_EQ(by_ids.status, 200) << by_ids.raw;
  EXPECT_EQ(by_ids.body["choices"][0]["text"], by_text.body["choices"][0]["text"]);
  EXPECT_EQ(by_ids.body["usage"]["prompt_tokens"], by_text.body["usage"]["prompt_tokens"]);

  const Reply echoed =
      Post(port_, "/v1/completions",
           Greedy({{"prompt", "Once upon a time"}, {"max_tokens", 12}, {"echo", true}}));
  ASSERT_EQ(echoed.status, 200) << echoed.raw;
  EXPECT_EQ(echoed.body["choices"][0]["text"],
            "Once upon a time" + by_text.body["choices"][0]["text"].get<std::string>());
}

TEST_F(OpenAiServerTest, ChatUsesTheBuiltInTemplateLikeLycheeGenerate) {
  const std::string user = "Tell me a story about a cat.";
  ProgramResult reference =
      RunProgram("lychee-generate", {"--model", kModel, "--chat", "--prompt", user, "--max-tokens",
                                     "40", "--temperature", "0", "--verbose"});
  ASSERT_EQ(reference.exit_code, 0) << reference.err;
  std::smatch m;
  ASSERT_TRUE(std::regex_search(reference.err, m, std::regex(R"(prompt ids \((\d+)\))")))
      << reference.err;
  const int reference_prompt_tokens = std::stoi(m[1]);

  const json request = Greedy({{"model", "stories260K"},
                               {"messages", {{{"role", "user"}, {"content", user}}}},
                               {"max_tokens", 40}});
  const Reply whole = Post(port_, "/v1/chat/completions", request);
  ASSERT_EQ(whole.status, 200) << whole.raw;
  EXPECT_EQ(whole.body["object"], "chat.completion");
  EXPECT_EQ(whole.body["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  const json& message = whole.body["choices"][0]["message"];
  EXPECT_EQ(message["role"], "assistant");
  const std::string content = message["content"];
  // The same rendered prompt (built-in chatml, BOS in front) and the same greedy tokens.
  EXPECT_EQ(whole.body["usage"]["prompt_tokens"], reference_prompt_tokens);
  ASSERT_GE(content.size(), reference.out.size());
  EXPECT_EQ(content.substr(content.size() - reference.out.size()), reference.out);

  // The list-of-parts form renders the same prompt.
  json parts = request;
  parts["messages"][0]["content"] = json::array({{{"type", "text"}, {"text", user}}});
  const Reply by_parts = Post(port_, "/v1/chat/completions", parts);
  ASSERT_EQ(by_parts.status, 200) << by_parts.raw;
  EXPECT_EQ(by_parts.body["choices"][0]["message"]["content"], content);

  // Streaming: role first, then content deltas that add up to the same text.
  json stream_request = request;
  stream_request["stream"] = true;
  stream_request["stream_options"] = {{"include_usage", true}};
  const Reply streamed = Post(port_, "/v1/chat/completions", stream_request);
  ASSERT_EQ(streamed.status, 200) << streamed.raw;
  ASSERT_FALSE(streamed.events.empty());
  EXPECT_TRUE(streamed.done);
  EXPECT_EQ(streamed.events[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(streamed.events[0]["choices"][0]["delta"]["role"], "assistant");
  const Streamed s = Concatenate(streamed, /*chat=*/true);
  EXPECT_EQ(s.text, content);
  EXPECT_EQ(s.finish_reason, whole.body["choices"][0]["finish_reason"]);
  EXPECT_EQ(s.usage["prompt_tokens"], reference_prompt_tokens);
}

TEST_F(OpenAiServerTest, ChatTemplateKwargsAndSystemMessages) {
  const json request = Greedy({{"messages",
                                {{{"role", "system"}, {"content", "You tell stories."}},
                                 {{"role", "user"}, {"content", "Hi"}}}},
                               {"chat_template_kwargs", {{"enable_thinking", false}}},
                               {"max_completion_tokens", 5}});
  const Reply reply = Post(port_, "/v1/chat/completions", request);
  ASSERT_EQ(reply.status, 200) << reply.raw;
  EXPECT_EQ(reply.body["usage"]["completion_tokens"], 5);
}

TEST_F(OpenAiServerTest, StopStrings) {
  const json base = Greedy({{"prompt", "Once upon a time"}, {"max_tokens", 60}});
  const Reply free = Post(port_, "/v1/completions", base);
  ASSERT_EQ(free.status, 200) << free.raw;
  const std::string text = free.body["choices"][0]["text"];
  // Stop at a word the free run produces.
  const size_t at = text.find(" was");
  ASSERT_NE(at, std::string::npos) << text;
  json stopped = base;
  stopped["stop"] = {" was", "never-seen"};
  for (bool stream : {false, true}) {
    stopped["stream"] = stream;
    const Reply reply = Post(port_, "/v1/completions", stopped);
    ASSERT_EQ(reply.status, 200) << reply.raw;
    if (stream) {
      const Streamed s = Concatenate(reply, false);
      EXPECT_EQ(s.text, text.substr(0, at));
      EXPECT_EQ(s.finish_reason, "stop");
    } else {
      EXPECT_EQ(reply.body["choices"][0]["text"], text.substr(0, at));
      EXPECT_EQ(reply.body["choices"][0]["finish_reason"], "stop");
      EXPECT_EQ(reply.body["choices"][0]["stop_reason"], " was");
    }
  }
}

TEST_F(OpenAiServerTest, Logprobs) {
  const Reply completion =
      Post(port_, "/v1/completions",
           Greedy({{"prompt", "Once upon a time"}, {"max_tokens", 8}, {"logprobs", 3}}));
  ASSERT_EQ(completion.status, 200) << completion.raw;
  const json& lp = completion.body["choices"][0]["logprobs"];
  const int n = completion.body["usage"]["completion_tokens"];
  ASSERT_EQ(lp["tokens"].size(), static_cast<size_t>(n));
  ASSERT_EQ(lp["token_logprobs"].size(), static_cast<size_t>(n));
  ASSERT_EQ(lp["top_logprobs"].size(), static_cast<size_t>(n));
  std::string joined;
  for (int i = 0; i < n; ++i) {
    joined += lp["tokens"][i].get<std::string>();
    EXPECT_EQ(lp["text_offset"][i],
              static_cast<int64_t>(joined.size()) -
                  static_cast<int64_t>(lp["tokens"][i].get<std::string>().size()));
    // Greedy: the chosen token is the most likely one.
    double best = -1e9;
    for (const auto& [token, value] : lp["top_logprobs"][i].items())
      best = std::max(best, value.get<double>());
    EXPECT_DOUBLE_EQ(lp["token_logprobs"][i].get<double>(), best);
    EXPECT_LE(lp["top_logprobs"][i].size(), 3u);
    EXPECT_LE(lp["token_logprobs"][i].get<double>(), 0.0);
  }
  EXPECT_EQ(joined, completion.body["choices"][0]["text"]);

  const Reply chat = Post(port_, "/v1/chat/completions",
                          Greedy({{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                                  {"max_tokens", 6},
                                  {"logprobs", true},
                                  {"top_logprobs", 2}}));
  ASSERT_EQ(chat.status, 200) << chat.raw;
  const json& content = chat.body["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), chat.body["usage"]["completion_tokens"].get<size_t>());
  std::string chat_joined;
  for (const json& item : content) {
    chat_joined += item["token"].get<std::string>();
    ASSERT_EQ(item["top_logprobs"].size(), 2u);
    EXPECT_EQ(item["top_logprobs"][0]["token"], item["token"]);
    EXPECT_EQ(item["bytes"].size(), item["token"].get<std::string>().size());
  }
  EXPECT_EQ(chat_joined, chat.body["choices"][0]["message"]["content"]);
}

TEST_F(OpenAiServerTest, ErrorsNameTheParam) {
  struct Case {
    std::string path;
    std::string body;  // raw
    int status;
    json param;  // null or the name
  };
  const std::string long_ids = [] {
    std::string s = "[";
    for (int i = 0; i < 600; ++i) s += (i ? ",5" : "1");
    return s + "]";
  }();
  const std::vector<Case> cases = {
      {"/v1/completions", "{not json", 400, nullptr},
      {"/v1/completions", R"({"prompt": "x", "model": "gpt-4"})", 404, "model"},
      {"/v1/completions", R"({"prompt": "x", "max_tokens": -1})", 400, "max_tokens"},
      {"/v1/completions", R"({"prompt": "x", "max_tokens": 600})", 400, "max_tokens"},
      {"/v1/completions", R"({"prompt": )" + long_ids + "}", 400, "prompt"},
      {"/v1/completions", R"({"prompt": "x", "temperature": "hot"})", 400, "temperature"},
      {"/v1/completions", R"({"prompt": "x", "n": 2})", 400, "n"},
      {"/v1/completions", R"({"prompt": ["a", "b"]})", 400, "prompt"},
      {"/v1/completions", R"({"prompt": [1, 9999]})", 400, "prompt"},
      {"/v1/completions", R"({"prompt": "x", "echo": true, "logprobs": 1})", 400, "echo"},
      {"/v1/completions", R"({"prompt": "x", "policy": {"name": "nope"}})", 400, "policy.name"},
      {"/v1/chat/completions", R"({"messages": []})", 400, "messages"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": 5}]})", 400,
       "messages[0].content"},
      {"/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 512})", 400, "max_tokens"},
      {"/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", 400,
       "top_logprobs"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": "x"}], "model": "m"})",
       404, "model"},
  };
  for (const Case& c : cases) {
    auto response = testing::Fetch("127.0.0.1", port_, "POST", c.path, c.body);
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->status, c.status) << c.body << " → " << response->body;
    const json body = json::parse(response->body, nullptr, false);
    ASSERT_TRUE(body.contains("error")) << response->body;
    EXPECT_EQ(body["error"]["param"], c.param) << c.body << " → " << response->body;
    EXPECT_TRUE(body["error"]["message"].is_string());
    EXPECT_TRUE(body["error"]["type"].is_string());
    EXPECT_TRUE(body["error"].contains("code"));
  }
  // Wrong method and unknown paths answer in the same JSON shape.
  auto get = testing::Fetch("127.0.0.1", port_, "GET", "/v1/completions");
  ASSERT_TRUE(get.ok());
  EXPECT_EQ(get->status, 405);
  // A streaming request refused before it starts is a plain JSON error, not an event stream.
  auto refused = testing::Fetch("127.0.0.1", port_, "POST", "/v1/completions",
                                R"({"prompt": "x", "stream": true, "max_tokens": 0})");
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(refused->status, 400);
  EXPECT_EQ(refused->Header("content-type"), "application/json");
}

// A raw connection that sends one streaming request, reads the start of the answer and hangs
// up: the server must notice at its next write and abort the request in the engine.
TEST_F(OpenAiServerTest, DisconnectMidStreamAbortsTheRequest) {
  const int64_t aborts_before = AbortCount(port_);
  ASSERT_GE(aborts_before, 0);
  const std::string body =
      json({{"prompt", "Once"}, {"max_tokens", 500}, {"ignore_eos", true}, {"stream", true}})
          .dump();
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port_);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  timeval tv{.tv_sec = 10, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  const std::string request =
      "POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
      "Content-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  std::string received;
  char buffer[512];
  while (received.find("data: ") == std::string::npos) {
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    ASSERT_GT(n, 0) << received;
    received.append(buffer, static_cast<size_t>(n));
  }
  EXPECT_NE(received.find("200 OK"), std::string::npos) << received;
  close(fd);
  // The abort shows in the engine's request counter.
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (AbortCount(port_) <= aborts_before && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(AbortCount(port_), aborts_before + 1) << "the request was not aborted";
}

// Completions and chat, streamed and not, at once: each equals its solo run.
TEST_F(OpenAiServerTest, ConcurrentRequestsEqualTheirSoloRuns) {
  const std::vector<std::string> prompts = {
      "Once upon a time", "The cat",       "Lily and Ben went", "One day, a big dog",
      "The sun was",      "Tom had a red", "There was a tree",  "Mom said"};
  // Request i: chat when i % 4 >= 2, streamed when i is even.
  auto run = [this](size_t i, const std::string& prompt, bool stream) {
    const bool chat = i % 4 >= 2;
    json r =
        chat ? Greedy({{"messages", {{{"role", "user"}, {"content", prompt}}}}, {"max_tokens", 40}})
             : Greedy({{"prompt", prompt}, {"max_tokens", 40}});
    if (stream) r["stream"] = true;
    const Reply reply = Post(port_, chat ? "/v1/chat/completions" : "/v1/completions", r);
    EXPECT_EQ(reply.status, 200) << reply.raw;
    if (stream) return Concatenate(reply, chat).text;
    return chat ? reply.body["choices"][0]["message"]["content"].get<std::string>()
                : reply.body["choices"][0]["text"].get<std::string>();
  };
  std::vector<std::string> solo;
  for (size_t i = 0; i < prompts.size(); ++i) solo.push_back(run(i, prompts[i], false));
  std::vector<std::string> together(prompts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < prompts.size(); ++i) {
    threads.emplace_back([&, i] { together[i] = run(i, prompts[i], i % 2 == 0); });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(together[i], solo[i]) << prompts[i];
}

// Long requests (nearly the whole context, EOS ignored) keep a small engine busy.
json Long(const std::string& prompt, bool stream) {
  json r = {{"prompt", prompt}, {"max_tokens", 400}, {"ignore_eos", true}, {"temperature", 0}};
  if (stream) r["stream"] = true;
  return r;
}

TEST(OpenAiServerLimitsTest, FullQueueIs429) {
  auto server = ServerProcess::Start(
      LoopbackServerArgs(kModel, {"--max-num-seqs", "1", "--max-queue-len", "1"}));
  ASSERT_TRUE(server.ok()) << server.status();
  const auto port = static_cast<uint16_t>((*server)->http_port());
  constexpr int kRequests = 8;
  std::vector<Reply> replies(kRequests);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back(
        [&, i] { replies[i] = Post(port, "/v1/completions", Long("Once", false)); });
  }
  for (auto& t : threads) t.join();
  int ok = 0, exhausted = 0;
  for (const Reply& r : replies) {
    if (r.status == 200) {
      ++ok;
      EXPECT_EQ(r.body["usage"]["completion_tokens"], 400);
    } else {
      EXPECT_EQ(r.status, 429) << r.raw;
      EXPECT_EQ(r.body["error"]["type"], "rate_limit_error") << r.raw;
      ++exhausted;
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(exhausted, 1);
}

// SIGTERM: the streams in flight finish, new requests get 503 while the server drains, and the
// process exits 0. One sequence at a time and a queue of long requests keep it draining for a
// while.
TEST(OpenAiServerDrainTest, SigtermRefusesNewRequestsAndFinishesStreams) {
  auto server = ServerProcess::Start(
      LoopbackServerArgs(kModel, {"--max-num-seqs", "1", "--shutdown-grace-seconds", "60"}));
  ASSERT_TRUE(server.ok()) << server.status();
  const auto port = static_cast<uint16_t>((*server)->http_port());
  constexpr int kInFlight = 12;
  std::vector<Reply> replies(kInFlight);
  std::vector<std::thread> threads;
  for (int i = 0; i < kInFlight; ++i) {
    threads.emplace_back(
        [&, i] { replies[i] = Post(port, "/v1/completions", Long("Once", true)); });
  }
  // Wait until the engine holds the requests (running or waiting), then signal.
  absl::SleepFor(absl::Milliseconds(200));
  (*server)->Signal(SIGTERM);
  ASSERT_TRUE((*server)->WaitForOutput("draining", absl::Seconds(10))) << (*server)->output();
  auto refused = testing::Fetch("127.0.0.1", port, "POST", "/v1/completions",
                                R"({"prompt": "Hi", "max_tokens": 2})");
  // The queued streams take a while (one sequence at a time): the HTTP port still serves.
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->status, 503) << refused->body;
  EXPECT_EQ(json::parse(refused->body)["error"]["type"], "service_unavailable_error");
  for (auto& t : threads) t.join();
  for (const Reply& r : replies) {
    ASSERT_EQ(r.status, 200) << r.raw;
    EXPECT_TRUE(r.done);
    const Streamed s = Concatenate(r, false);
    EXPECT_EQ(s.finish_reason, "length");
  }
  const std::optional<int> code = (*server)->WaitExit(absl::Seconds(30));
  ASSERT_TRUE(code.has_value()) << (*server)->output();
  EXPECT_EQ(*code, 0) << (*server)->output();
}

}  // namespace
}  // namespace lychee
