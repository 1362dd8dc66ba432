// SPDX-License-Identifier: Apache-2.0
#include "fuzz/fuzz_checks.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/status/status.h"
#include "model/chat_template/chat_template.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "model/tokenizer/hf_tokenizer.h"
#include "model/tokenizer/sentencepiece_tokenizer.h"
#include "model/tokenizer/tokenizer.h"
#include "model/tokenizer/utf8.h"
#include "server/http/request_parser.h"
#include "server/openai/openai_request.h"

#ifndef LYCHEE_SOURCE_DIR
#define LYCHEE_SOURCE_DIR "."
#endif

namespace lychee::fuzz {
namespace {

using tokenizer_internal::IsValidUtf8;

// Runs `body` (which fills `result`), turning an escaping exception into a problem.
template <typename Body>
CheckResult Guarded(Body body) {
  CheckResult result;
  try {
    body(result);
  } catch (const std::exception& e) {
    result.problem = fmt::format("exception escaped: {}", e.what());
  } catch (...) {
    result.problem = "non-standard exception escaped";
  }
  return result;
}

// Errors must be in our words: never a JSON library exception's text.
bool HasLibraryText(const absl::Status& status) {
  return status.message().find("json.exception") != absl::string_view::npos;
}

// Fixed texts every loaded tokenizer encodes and decodes.
constexpr const char* kTexts[] = {
    "Once upon a time, there was a little girl.",
    " leading space\tand\ttabs\n\nnew lines  ",
    "caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 <s></s><unk>",
    "\xff\xfe invalid \xc3 utf-8 \xed\xa0\x80",
    "",
};

// Encode/decode properties of any tokenizer: ids in [0, vocab), decoded text valid UTF-8, and
// with `streaming` the streaming decoder equal to the whole decode. That last one holds for the
// decoders real tokenizers use, not for every decoder a file may describe: a Strip decoder with
// start > 1 strips each decode window again (found by the tokenizer_json target), so the
// tokenizer-file targets leave it out.
std::string CheckTokenizerOn(const Tokenizer& tokenizer, std::string_view text, bool streaming) {
  const int32_t vocab = tokenizer.vocab_size();
  for (const bool special : {true, false}) {
    const std::vector<int32_t> ids = tokenizer.Encode(text, special);
    for (const int32_t id : ids) {
      if (id < 0 || id >= vocab) {
        return fmt::format("Encode gave id {} outside [0, {})", id, vocab);
      }
    }
    for (const bool skip : {true, false}) {
      const std::string decoded = tokenizer.Decode(ids, skip);
      if (!IsValidUtf8(decoded)) return "Decode gave invalid UTF-8";
      if (!streaming) continue;
      StreamDecoder stream(tokenizer, skip);
      std::string streamed;
      for (const int32_t id : ids) streamed += stream.Push(id);
      streamed += stream.Flush();
      if (streamed != decoded) {
        return fmt::format("streamed decode {:?} differs from Decode {:?}", streamed, decoded);
      }
    }
  }
  return "";
}

// Decoding arbitrary ids (in range or not) never breaks UTF-8.
std::string CheckDecodeIds(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  for (const bool skip : {true, false}) {
    if (!IsValidUtf8(tokenizer.Decode(ids, skip))) return "Decode of raw ids gave invalid UTF-8";
  }
  for (const int32_t id : ids) (void)tokenizer.IdToToken(id);
  return "";
}

std::string CheckLoadedTokenizer(const Tokenizer& tokenizer) {
  if (tokenizer.vocab_size() < 0) return "negative vocab_size";
  for (const char* text : kTexts) {
    if (std::string problem = CheckTokenizerOn(tokenizer, text, /*streaming=*/false);
        !problem.empty()) {
      return problem;
    }
  }
  std::vector<int32_t> ids;
  for (int32_t id = -2; id < std::min(tokenizer.vocab_size(), 300) + 2; ++id) ids.push_back(id);
  return CheckDecodeIds(tokenizer, ids);
}

const openai::ModelLimits kLimits{
    .served_name = "stories260K", .vocab_size = 512, .max_model_len = 512};

const ChatTemplate& ChatMl() {
  static const ChatTemplate* t = new ChatTemplate(*ChatTemplate::BuiltIn("chatml"));
  return *t;
}

}  // namespace

CheckResult CheckOpenAiRequest(std::string_view input) {
  return Guarded([&](CheckResult& r) {
    absl::StatusOr<openai::CompletionParams> completion =
        openai::ParseCompletionRequest(input, kLimits);
    absl::StatusOr<openai::ChatParams> chat = openai::ParseChatRequest(input, kLimits);
    r.accepted = completion.ok() || chat.ok();
    for (const absl::Status& st : {completion.status(), chat.status()}) {
      if (HasLibraryText(st)) {
        r.problem = fmt::format("error shows JSON library text: {}", st.ToString());
        return;
      }
    }
    if (chat.ok()) {
      // The parsed messages go to the chat template; a hostile conversation is an error or
      // text, never more.
      (void)ChatMl().Render(chat->messages, chat->add_generation_prompt, chat->template_variables);
    }
  });
}

CheckResult CheckChatTemplate(std::string_view input) {
  static const nlohmann::json* messages = new nlohmann::json(nlohmann::json::parse(R"([
      {"role": "system", "content": "sys"},
      {"role": "user", "content": "hello {{ '}}' }} \u00e9"},
      {"role": "assistant", "content": "hi"},
      {"role": "user", "content": ""}])"));
  return Guarded([&](CheckResult& r) {
    absl::StatusOr<ChatTemplate> t = ChatTemplate::Parse(std::string(input));
    if (!t.ok()) return;
    r.accepted = true;
    // Rendering is bounded (RenderLimits): an error or text, quickly.
    (void)t->Render(*messages, /*add_generation_prompt=*/true);
  });
}

CheckResult CheckHttpRequest(std::string_view input) {
  constexpr size_t kMaxHeader = 8 * 1024;
  constexpr size_t kMaxBody = 64 * 1024;
  return Guarded([&](CheckResult& r) {
    const http::ParsedRequest parsed = http::ParseRequest(input, kMaxHeader, kMaxBody);
    if (parsed.consumed > input.size()) {
      r.problem = "consumed more bytes than given";
      return;
    }
    if (parsed.status != 0 || parsed.closed) {
      if (parsed.status != 0 && parsed.status != 400 && parsed.status != 413 &&
          parsed.status != 431) {
        r.problem = fmt::format("unexpected status {}", parsed.status);
      }
      return;
    }
    r.accepted = true;
    const http::HttpRequest& req = parsed.request;
    if (req.body.size() > kMaxBody) {
      r.problem =
          fmt::format("body of {} bytes passed the {}-byte limit", req.body.size(), kMaxBody);
      return;
    }
    const size_t question = req.target.find('?');
    const std::string rebuilt =
        question == std::string::npos ? req.path : req.path + "?" + req.query;
    if (rebuilt != req.target) {
      r.problem = fmt::format("path {:?} + query {:?} do not make target {:?}", req.path, req.query,
                              req.target);
      return;
    }
    // What the routes and the access log read from every request.
    for (const char* name : {"Authorization", "X-Request-Id", "Content-Type", "Host"}) {
      (void)req.Header(name);
    }
    (void)openai::IsValidRequestId(req.Header("X-Request-Id"));
  });
}

CheckResult CheckModelConfig(std::string_view input) {
  return Guarded([&](CheckResult& r) {
    absl::StatusOr<ModelConfig> config = ParseModelConfig(input, "config.json");
    if (!config.ok()) {
      // Errors name the file (the operator must know which one is wrong).
      if (config.status().message().find("config.json") == absl::string_view::npos) {
        r.problem = fmt::format("error without the file name: {}", config.status().ToString());
      }
      return;
    }
    r.accepted = true;
    const ModelConfig& c = *config;
    // What the model runner relies on once a config is accepted.
    if (c.hidden_size <= 0 || c.num_layers <= 0 || c.num_heads <= 0 || c.num_kv_heads <= 0 ||
        c.head_dim <= 0 || c.vocab_size <= 0 || c.intermediate_size <= 0) {
      r.problem = "accepted a config with a non-positive size";
    } else if (c.num_heads % c.num_kv_heads != 0) {
      r.problem = "accepted num_key_value_heads that does not divide num_attention_heads";
    } else if (!(c.rms_norm_eps > 0) || !(c.rope_theta > 0)) {
      r.problem = "accepted a non-positive rms_norm_eps or rope_theta";
    }
  });
}

CheckResult CheckSafetensors(std::string_view input) {
  return Guarded([&](CheckResult& r) {
    absl::StatusOr<SafetensorsArchive> archive =
        SafetensorsArchive::FromBuffer("model.safetensors", input);
    if (!archive.ok()) return;
    r.accepted = true;
    const auto* begin = reinterpret_cast<const uint8_t*>(input.data());
    const uint8_t* end = begin + input.size();
    for (const std::string& name : archive->Names()) {
      absl::StatusOr<const TensorView*> view = archive->Find(name);
      if (!view.ok()) {
        r.problem = fmt::format("listed tensor {:?} not found", name);
        return;
      }
      const TensorView& t = **view;
      if (t.nbytes > 0 && (t.data < begin || t.data > end || t.nbytes > size_t(end - t.data))) {
        r.problem = fmt::format("tensor {:?} points outside the file", name);
        return;
      }
      if (t.NumElements() * static_cast<int64_t>(DTypeSize(t.dtype)) !=
          static_cast<int64_t>(t.nbytes)) {
        r.problem = fmt::format("tensor {:?}: shape and byte size disagree", name);
        return;
      }
      // Reading converts every element (bounded by the input's size).
      if (t.dtype == DType::kI32 || t.dtype == DType::kI64) {
        (void)archive->ReadI64(name);
      } else {
        (void)archive->ReadF32(name);
      }
    }
  });
}

CheckResult CheckTokenizerJson(std::string_view input) {
  return Guarded([&](CheckResult& r) {
    auto tokenizer =
        tokenizer_internal::HfTokenizer::FromJsonText(std::string(input), "tokenizer.json");
    if (!tokenizer.ok()) {
      // Operator-facing: the error names the file (the JSON library's words about the field
      // may follow: "tokenizer.json: \"added_tokens\": malformed: ... key 'id' not found").
      if (tokenizer.status().message().find("tokenizer.json") == absl::string_view::npos) {
        r.problem = fmt::format("error without the file name: {}", tokenizer.status().ToString());
      }
      return;
    }
    r.accepted = true;
    r.problem = CheckLoadedTokenizer(**tokenizer);
  });
}

CheckResult CheckTokenizerSpm(std::string_view input) {
  return Guarded([&](CheckResult& r) {
    auto tokenizer =
        tokenizer_internal::SentencePieceTokenizer::FromSerialized(input, "tokenizer.model");
    if (!tokenizer.ok()) return;
    r.accepted = true;
    r.problem = CheckLoadedTokenizer(**tokenizer);
  });
}

CheckResult CheckTokenizerText(std::string_view input) {
  static const std::vector<std::unique_ptr<Tokenizer>>* tokenizers = [] {
    auto* list = new std::vector<std::unique_ptr<Tokenizer>>();
    for (const char* dir : {"models/stories260K", "tests/data/llama2-tokenizer"}) {
      absl::StatusOr<std::unique_ptr<Tokenizer>> t =
          Tokenizer::FromDirectory(SourceDir() + "/" + dir);
      if (!t.ok()) {
        std::fprintf(stderr, "cannot load the tokenizer in %s: %s\n", dir,
                     t.status().ToString().c_str());
        std::abort();
      }
      list->push_back(*std::move(t));
    }
    return list;
  }();
  return Guarded([&](CheckResult& r) {
    r.accepted = true;
    if (input.empty()) return;
    const bool as_ids = (static_cast<uint8_t>(input[0]) & 1) != 0;
    const std::string_view rest = input.substr(1);
    for (const auto& tokenizer : *tokenizers) {
      if (as_ids) {
        std::vector<int32_t> ids(rest.size() / sizeof(int32_t));
        if (!ids.empty()) std::memcpy(ids.data(), rest.data(), ids.size() * sizeof(int32_t));
        r.problem = CheckDecodeIds(*tokenizer, ids);
      } else {
        r.problem = CheckTokenizerOn(*tokenizer, rest, /*streaming=*/true);
      }
      if (!r.problem.empty()) return;
    }
  });
}

CheckResult Check(std::string_view target, std::string_view input) {
  if (target == "openai_request") return CheckOpenAiRequest(input);
  if (target == "chat_template") return CheckChatTemplate(input);
  if (target == "http_request") return CheckHttpRequest(input);
  if (target == "model_config") return CheckModelConfig(input);
  if (target == "safetensors") return CheckSafetensors(input);
  if (target == "tokenizer_json") return CheckTokenizerJson(input);
  if (target == "tokenizer_spm") return CheckTokenizerSpm(input);
  if (target == "tokenizer_text") return CheckTokenizerText(input);
  return {.problem = fmt::format("no fuzz target {:?}", target)};
}

std::string SourceDir() {
  const char* env = std::getenv("LYCHEE_SOURCE_DIR");
  return env != nullptr && *env != '\0' ? env : LYCHEE_SOURCE_DIR;
}

std::vector<std::string> LoadCorpus(std::string_view target) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(SourceDir()) / "fuzz" / std::string(target) / "corpus";
  std::vector<fs::path> paths;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_regular_file()) paths.push_back(entry.path());
  }
  std::sort(paths.begin(), paths.end());
  std::vector<std::string> corpus;
  for (const fs::path& path : paths) {
    std::ifstream in(path, std::ios::binary);
    corpus.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  return corpus;
}

std::vector<std::string> LoadDictionary(std::string_view target) {
  std::ifstream in(std::filesystem::path(SourceDir()) / "fuzz" / std::string(target) / "dict");
  std::vector<std::string> tokens;
  std::string line;
  while (std::getline(in, line)) {
    const size_t open = line.find('"');
    const size_t close = line.rfind('"');
    if (line.empty() || line[0] == '#' || open == std::string::npos || close <= open) continue;
    std::string token;
    for (size_t i = open + 1; i < close; ++i) {
      if (line[i] != '\\' || i + 1 >= close) {
        token += line[i];
      } else if (line[i + 1] == 'x' && i + 3 < close) {
        token += static_cast<char>(std::strtol(line.substr(i + 2, 2).c_str(), nullptr, 16));
        i += 3;
      } else {
        token += line[++i];
      }
    }
    tokens.push_back(std::move(token));
  }
  return tokens;
}

}  // namespace lychee::fuzz
