// SPDX-License-Identifier: Apache-2.0
// Decoders, following tokenizers' decode_chain semantics.
#include "model/tokenizer/decoders.h"

#include <fmt/format.h>

#include <utility>

#include "absl/container/flat_hash_map.h"
#include "common/status.h"
#include "model/tokenizer/pre_tokenizers.h"
#include "model/tokenizer/utf8.h"

namespace lychee::tokenizer_internal {
namespace {

class ByteLevelDecoder final : public Decoder {
 public:
  ByteLevelDecoder() {
    const std::vector<std::string>& table = ByteToUnicode();
    for (int b = 0; b < 256; ++b) char_to_byte_[table[b]] = static_cast<char>(b);
  }
  void DecodeChain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    std::string key;
    for (const std::string& token : tokens) {
      // A token with a character outside the byte alphabet (an added token such as "<think>"
      // is fine, but e.g. one with raw CJK) is taken verbatim, as tokenizers does.
      std::string mapped;
      bool ok = true;
      for (std::string_view ch : SplitUtf8Chars(token)) {
        key.assign(ch);
        auto it = char_to_byte_.find(key);
        if (it == char_to_byte_.end()) {
          ok = false;
          break;
        }
        mapped.push_back(it->second);
      }
      bytes.append(ok ? mapped : token);
    }
    tokens.assign(1, std::move(bytes));
  }

 private:
  absl::flat_hash_map<std::string, char> char_to_byte_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(std::string pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void DecodeChain(std::vector<std::string>& tokens) const override {
    if (pattern_.empty()) return;
    for (std::string& token : tokens) {
      std::string out;
      size_t last = 0;
      for (size_t pos = token.find(pattern_); pos != std::string::npos;
           pos = token.find(pattern_, last)) {
        out.append(token, last, pos - last);
        out.append(content_);
        last = pos + pattern_.size();
      }
      out.append(token, last, std::string::npos);
      token = std::move(out);
    }
  }

 private:
  std::string pattern_;
  std::string content_;
};

// Parses "<0xAB>"; -1 otherwise.
int ParseByteToken(const std::string& token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return -1;
  int value = 0;
  for (int i = 3; i < 5; ++i) {
    const char c = token[i];
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

class ByteFallbackDecoder final : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>& tokens) const override {
    // tokenizers turns an invalid run of byte tokens into one U+FFFD per byte; we keep the raw
    // bytes and repair at the end (identical for valid text, and stream-friendly).
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string bytes;
    for (std::string& token : tokens) {
      const int b = ParseByteToken(token);
      if (b >= 0) {
        bytes.push_back(static_cast<char>(b));
        continue;
      }
      if (!bytes.empty()) out.push_back(std::move(bytes));
      bytes.clear();
      out.push_back(std::move(token));
    }
    if (!bytes.empty()) out.push_back(std::move(bytes));
    tokens = std::move(out);
  }
};

class FuseDecoder final : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& token : tokens) all.append(token);
    tokens.assign(1, std::move(all));
  }
};

class StripDecoder final : public Decoder {
 public:
  StripDecoder(std::string content, size_t start, size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void DecodeChain(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) {
      size_t begin = 0;
      for (size_t i = 0; i < start_ && token.compare(begin, content_.size(), content_) == 0 &&
                         begin + content_.size() <= token.size();
           ++i) {
        begin += content_.size();
      }
      size_t end = token.size();
      for (size_t i = 0; i < stop_ && end >= begin + content_.size() &&
                         token.compare(end - content_.size(), content_.size(), content_) == 0;
           ++i) {
        end -= content_.size();
      }
      token = token.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  size_t start_;
  size_t stop_;
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void DecodeChain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& token = tokens[i];
      std::string out;
      size_t last = 0;
      for (size_t pos = token.find(replacement_); pos != std::string::npos;
           pos = token.find(replacement_, last)) {
        out.append(token, last, pos - last);
        // As in tokenizers, the first token's replacement characters are dropped entirely.
        if (!(i == 0 && strip_first_)) out.push_back(' ');
        last = pos + replacement_.size();
      }
      out.append(token, last, std::string::npos);
      token = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> stages)
      : stages_(std::move(stages)) {}
  void DecodeChain(std::vector<std::string>& tokens) const override {
    for (const auto& stage : stages_) stage->DecodeChain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> stages_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const nlohmann::json& spec) {
  if (spec.is_null()) return std::unique_ptr<Decoder>();
  const std::string type = spec.at("type").get<std::string>();
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Replace") {
    const nlohmann::json& pattern = spec.at("pattern");
    if (!pattern.contains("String")) {
      return absl::UnimplementedError("Replace decoder supports only String patterns");
    }
    return std::make_unique<ReplaceDecoder>(pattern.at("String").get<std::string>(),
                                            spec.at("content").get<std::string>());
  }
  if (type == "Strip") {
    return std::make_unique<StripDecoder>(spec.at("content").get<std::string>(),
                                          spec.value("start", size_t{0}),
                                          spec.value("stop", size_t{0}));
  }
  if (type == "Metaspace") {
    bool strip_first = spec.value("add_prefix_space", true);
    if (spec.contains("prepend_scheme")) {
      strip_first = spec.at("prepend_scheme").get<std::string>() != "never";
    }
    return std::make_unique<MetaspaceDecoder>(spec.value("replacement", std::string("▁")),
                                              strip_first);
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> stages;
    for (const auto& child : spec.at("decoders")) {
      LY_ASSIGN_OR_RETURN(auto stage, MakeDecoder(child));
      if (stage != nullptr) stages.push_back(std::move(stage));
    }
    return std::make_unique<SequenceDecoder>(std::move(stages));
  }
  return absl::UnimplementedError(fmt::format("unsupported decoder type \"{}\"", type));
}

}  // namespace lychee::tokenizer_internal
