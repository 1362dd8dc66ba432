// SPDX-License-Identifier: Apache-2.0
// Pre-tokenizers, following the Hugging Face tokenizers semantics piece for piece.
#include "model/tokenizer/pre_tokenizers.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "common/status.h"
#include "model/tokenizer/regex.h"
#include "model/tokenizer/utf8.h"

namespace lychee::tokenizer_internal {
namespace {

// GPT-2's pattern, used by ByteLevel when use_regex is set.
constexpr char kGpt2Pattern[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

absl::StatusOr<Behavior> ParseBehavior(const std::string& name) {
  if (name == "Removed") return Behavior::kRemoved;
  if (name == "Isolated") return Behavior::kIsolated;
  if (name == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::kMergedWithNext;
  if (name == "Contiguous") return Behavior::kContiguous;
  return absl::InvalidArgumentError(fmt::format("unknown split behavior \"{}\"", name));
}

// Splits `text` at the [begin, end) `matches` (the delimiters) as `behavior` says.
void SplitWithBehavior(const std::string& text, const std::vector<std::pair<size_t, size_t>>& m,
                       Behavior behavior, bool invert, std::vector<std::string>& out) {
  // Alternate gaps and matches as (begin, end, is_delimiter) spans.
  struct Span {
    size_t begin, end;
    bool delimiter;
  };
  std::vector<Span> spans;
  size_t last = 0;
  for (const auto& [begin, end] : m) {
    if (begin > last) spans.push_back({last, begin, invert});
    spans.push_back({begin, end, !invert});
    last = end;
  }
  if (last < text.size()) spans.push_back({last, text.size(), invert});

  // Mirrors tokenizers' SplitDelimiterBehavior fold, including how runs of delimiters merge.
  std::vector<std::pair<size_t, size_t>> pieces;
  bool previous_delimiter = false;
  switch (behavior) {
    case Behavior::kRemoved:
      for (const Span& s : spans) {
        if (!s.delimiter) pieces.emplace_back(s.begin, s.end);
      }
      break;
    case Behavior::kIsolated:
      for (const Span& s : spans) pieces.emplace_back(s.begin, s.end);
      break;
    case Behavior::kContiguous:
      for (const Span& s : spans) {
        if (s.delimiter && previous_delimiter && !pieces.empty()) {
          pieces.back().second = s.end;
        } else {
          pieces.emplace_back(s.begin, s.end);
        }
        previous_delimiter = s.delimiter;
      }
      break;
    case Behavior::kMergedWithPrevious:
      for (const Span& s : spans) {
        if (s.delimiter && !previous_delimiter && !pieces.empty()) {
          pieces.back().second = s.end;
        } else {
          pieces.emplace_back(s.begin, s.end);
        }
        previous_delimiter = s.delimiter;
      }
      break;
    case Behavior::kMergedWithNext:
      // Walk backwards: a delimiter joins the piece after it unless that piece is a delimiter.
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->delimiter && !previous_delimiter && !pieces.empty()) {
          pieces.back().first = it->begin;
        } else {
          pieces.emplace_back(it->begin, it->end);
        }
        previous_delimiter = it->delimiter;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
  }
  for (const auto& [begin, end] : pieces) {
    if (end > begin) out.push_back(text.substr(begin, end - begin));
  }
}

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> regex, std::string literal, Behavior behavior,
                    bool invert)
      : regex_(std::move(regex)),
        literal_(std::move(literal)),
        behavior_(behavior),
        invert_(invert) {}

  void PreTokenize(std::vector<std::string>& pieces, bool) const override {
    std::vector<std::string> out;
    for (const std::string& piece : pieces) {
      std::vector<std::pair<size_t, size_t>> matches;
      if (regex_ != nullptr) {
        matches = regex_->FindAll(piece);
      } else if (!literal_.empty()) {
        for (size_t pos = piece.find(literal_); pos != std::string::npos;
             pos = piece.find(literal_, pos + literal_.size())) {
          matches.emplace_back(pos, pos + literal_.size());
        }
      }
      SplitWithBehavior(piece, matches, behavior_, invert_, out);
    }
    pieces = std::move(out);
  }

 private:
  std::unique_ptr<Regex> regex_;
  std::string literal_;
  Behavior behavior_;
  bool invert_;
};

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}

  void PreTokenize(std::vector<std::string>& pieces, bool) const override {
    std::vector<std::string> split;
    for (std::string& piece : pieces) {
      if (add_prefix_space_ && (piece.empty() || piece[0] != ' ')) piece.insert(0, " ");
      if (regex_ != nullptr) {
        SplitWithBehavior(piece, regex_->FindAll(piece), Behavior::kIsolated, false, split);
      } else {
        split.push_back(std::move(piece));
      }
    }
    const std::vector<std::string>& table = ByteToUnicode();
    pieces.clear();
    for (const std::string& piece : split) {
      std::string mapped;
      mapped.reserve(piece.size() * 2);
      for (char c : piece) mapped.append(table[static_cast<uint8_t>(c)]);
      pieces.push_back(std::move(mapped));
    }
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}

  void PreTokenize(std::vector<std::string>& pieces, bool first_segment) const override {
    std::vector<std::string> out;
    for (size_t i = 0; i < pieces.size(); ++i) {
      std::string text;
      for (char c : pieces[i]) {
        if (c == ' ') {
          text.append(replacement_);
        } else {
          text.push_back(c);
        }
      }
      const bool prepend = scheme_ == PrependScheme::kAlways ||
                           (scheme_ == PrependScheme::kFirst && first_segment && i == 0);
      if (prepend && text.compare(0, replacement_.size(), replacement_) != 0) {
        text.insert(0, replacement_);
      }
      if (!split_) {
        out.push_back(std::move(text));
        continue;
      }
      std::vector<std::pair<size_t, size_t>> matches;
      for (size_t pos = text.find(replacement_); pos != std::string::npos;
           pos = text.find(replacement_, pos + replacement_.size())) {
        matches.emplace_back(pos, pos + replacement_.size());
      }
      SplitWithBehavior(text, matches, Behavior::kMergedWithNext, false, out);
    }
    pieces = std::move(out);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class DigitsPreTokenizer final : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
  void PreTokenize(std::vector<std::string>& pieces, bool) const override {
    std::vector<std::string> out;
    for (const std::string& piece : pieces) {
      std::vector<std::pair<size_t, size_t>> matches;
      for (size_t pos = 0; pos < piece.size();) {
        if (piece[pos] < '0' || piece[pos] > '9') {
          ++pos;
          continue;
        }
        size_t end = pos + 1;
        if (!individual_) {
          while (end < piece.size() && piece[end] >= '0' && piece[end] <= '9') ++end;
        }
        matches.emplace_back(pos, end);
        pos = end;
      }
      SplitWithBehavior(piece, matches, Behavior::kIsolated, false, out);
    }
    pieces = std::move(out);
  }

 private:
  bool individual_;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> stages)
      : stages_(std::move(stages)) {}
  void PreTokenize(std::vector<std::string>& pieces, bool first_segment) const override {
    for (const auto& stage : stages_) stage->PreTokenize(pieces, first_segment);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> stages_;
};

}  // namespace

const std::vector<std::string>& ByteToUnicode() {
  static const std::vector<std::string>* const kTable = [] {
    auto* table = new std::vector<std::string>(256);
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      AppendUtf8(printable ? b : next++, (*table)[b]);
    }
    return table;
  }();
  return *kTable;
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const nlohmann::json& spec) {
  if (spec.is_null()) return std::unique_ptr<PreTokenizer>();
  const std::string type = spec.at("type").get<std::string>();
  if (type == "Split") {
    LY_ASSIGN_OR_RETURN(Behavior behavior, ParseBehavior(spec.at("behavior").get<std::string>()));
    const bool invert = spec.value("invert", false);
    const nlohmann::json& pattern = spec.at("pattern");
    if (pattern.contains("Regex")) {
      LY_ASSIGN_OR_RETURN(auto regex, Regex::Compile(pattern.at("Regex").get<std::string>()));
      return std::make_unique<SplitPreTokenizer>(std::move(regex), "", behavior, invert);
    }
    return std::make_unique<SplitPreTokenizer>(nullptr, pattern.at("String").get<std::string>(),
                                               behavior, invert);
  }
  if (type == "ByteLevel") {
    std::unique_ptr<Regex> regex;
    if (spec.value("use_regex", true)) {
      LY_ASSIGN_OR_RETURN(regex, Regex::Compile(kGpt2Pattern));
    }
    return std::make_unique<ByteLevelPreTokenizer>(spec.value("add_prefix_space", true),
                                                   std::move(regex));
  }
  if (type == "Metaspace") {
    PrependScheme scheme = PrependScheme::kAlways;
    if (spec.contains("prepend_scheme")) {
      const std::string name = spec.at("prepend_scheme").get<std::string>();
      if (name == "first") {
        scheme = PrependScheme::kFirst;
      } else if (name == "never") {
        scheme = PrependScheme::kNever;
      } else if (name != "always") {
        return absl::InvalidArgumentError(
            fmt::format("unknown Metaspace prepend_scheme \"{}\"", name));
      }
    } else if (!spec.value("add_prefix_space", true)) {
      scheme = PrependScheme::kNever;
    }
    return std::make_unique<MetaspacePreTokenizer>(spec.value("replacement", std::string("▁")),
                                                   scheme, spec.value("split", true));
  }
  if (type == "Digits") {
    return std::make_unique<DigitsPreTokenizer>(spec.value("individual_digits", false));
  }
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> stages;
    for (const auto& child : spec.at("pretokenizers")) {
      LY_ASSIGN_OR_RETURN(auto stage, MakePreTokenizer(child));
      if (stage != nullptr) stages.push_back(std::move(stage));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(stages));
  }
  return absl::UnimplementedError(fmt::format("unsupported pre_tokenizer type \"{}\"", type));
}

}  // namespace lychee::tokenizer_internal
