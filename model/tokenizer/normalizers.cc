// SPDX-License-Identifier: Apache-2.0
// Normalizers; Unicode normalization forms and case mapping come from utf8proc.
#include "model/tokenizer/normalizers.h"

#include <fmt/format.h>
#include <utf8proc.h>

#include <cstdlib>
#include <utility>
#include <vector>

#include "common/status.h"
#include "model/tokenizer/regex.h"
#include "model/tokenizer/utf8.h"

namespace lychee::tokenizer_internal {
namespace {

class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(int options) : options_(options) {}
  std::string Normalize(std::string_view text) const override {
    if (text.empty()) return std::string();
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                            static_cast<utf8proc_ssize_t>(text.size()), &out,
                                            static_cast<utf8proc_option_t>(options_));
    if (n < 0) return std::string(text);  // Cannot happen for valid UTF-8; keep the input.
    std::string result(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
    std::free(out);
    return result;
  }

 private:
  int options_;
};

class LowercaseNormalizer final : public Normalizer {
 public:
  std::string Normalize(std::string_view text) const override {
    std::string out;
    out.reserve(text.size());
    size_t pos = 0;
    while (pos < text.size()) {
      utf8proc_int32_t cp = 0;
      const utf8proc_ssize_t n =
          utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(text.data() + pos),
                           static_cast<utf8proc_ssize_t>(text.size() - pos), &cp);
      if (n <= 0) {
        out.push_back(text[pos++]);
        continue;
      }
      AppendUtf8(static_cast<uint32_t>(utf8proc_tolower(cp)), out);
      pos += static_cast<size_t>(n);
    }
    return out;
  }
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  std::string Normalize(std::string_view text) const override {
    // Like Hugging Face: an empty string stays empty.
    if (text.empty()) return std::string();
    return prepend_ + std::string(text);
  }

 private:
  std::string prepend_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(std::string literal, std::unique_ptr<Regex> regex, std::string content)
      : literal_(std::move(literal)), regex_(std::move(regex)), content_(std::move(content)) {}
  std::string Normalize(std::string_view text) const override {
    std::string out;
    out.reserve(text.size());
    if (regex_ != nullptr) {
      size_t last = 0;
      for (const auto& [begin, end] : regex_->FindAll(text)) {
        out.append(text.substr(last, begin - last));
        out.append(content_);
        last = end;
      }
      out.append(text.substr(last));
      return out;
    }
    if (literal_.empty()) return std::string(text);
    size_t last = 0;
    for (size_t pos = text.find(literal_); pos != std::string_view::npos;
         pos = text.find(literal_, last)) {
      out.append(text.substr(last, pos - last));
      out.append(content_);
      last = pos + literal_.size();
    }
    out.append(text.substr(last));
    return out;
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

bool IsAsciiOrUnicodeSpace(std::string_view ch) {
  if (ch.size() == 1) return ch[0] == ' ' || (ch[0] >= '\t' && ch[0] <= '\r');
  utf8proc_int32_t cp = 0;
  utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(ch.data()),
                   static_cast<utf8proc_ssize_t>(ch.size()), &cp);
  return utf8proc_category(cp) == UTF8PROC_CATEGORY_ZS || cp == 0x85 || cp == 0x2028 ||
         cp == 0x2029;
}

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  std::string Normalize(std::string_view text) const override {
    std::vector<std::string_view> chars = SplitUtf8Chars(text);
    size_t begin = 0;
    size_t end = chars.size();
    while (left_ && begin < end && IsAsciiOrUnicodeSpace(chars[begin])) ++begin;
    while (right_ && end > begin && IsAsciiOrUnicodeSpace(chars[end - 1])) --end;
    std::string out;
    for (size_t i = begin; i < end; ++i) out.append(chars[i]);
    return out;
  }

 private:
  bool left_;
  bool right_;
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> stages)
      : stages_(std::move(stages)) {}
  std::string Normalize(std::string_view text) const override {
    std::string current(text);
    for (const auto& stage : stages_) current = stage->Normalize(current);
    return current;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> stages_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const nlohmann::json& spec) {
  if (spec.is_null()) return std::unique_ptr<Normalizer>();
  const std::string type = spec.at("type").get<std::string>();
  constexpr int kStable = UTF8PROC_STABLE;
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(kStable | UTF8PROC_COMPOSE);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(kStable | UTF8PROC_DECOMPOSE);
  if (type == "NFKC") {
    return std::make_unique<UnicodeNormalizer>(kStable | UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  }
  if (type == "NFKD") {
    return std::make_unique<UnicodeNormalizer>(kStable | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Prepend") {
    return std::make_unique<PrependNormalizer>(spec.at("prepend").get<std::string>());
  }
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(spec.value("strip_left", true),
                                             spec.value("strip_right", true));
  }
  if (type == "Replace") {
    const nlohmann::json& pattern = spec.at("pattern");
    std::string content = spec.at("content").get<std::string>();
    if (pattern.contains("Regex")) {
      LY_ASSIGN_OR_RETURN(auto regex, Regex::Compile(pattern.at("Regex").get<std::string>()));
      return std::make_unique<ReplaceNormalizer>("", std::move(regex), std::move(content));
    }
    return std::make_unique<ReplaceNormalizer>(pattern.at("String").get<std::string>(), nullptr,
                                               std::move(content));
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> stages;
    for (const auto& child : spec.at("normalizers")) {
      LY_ASSIGN_OR_RETURN(auto stage, MakeNormalizer(child));
      if (stage != nullptr) stages.push_back(std::move(stage));
    }
    return std::make_unique<SequenceNormalizer>(std::move(stages));
  }
  return absl::UnimplementedError(fmt::format("unsupported normalizer type \"{}\"", type));
}

}  // namespace lychee::tokenizer_internal
