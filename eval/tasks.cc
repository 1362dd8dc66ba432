// SPDX-License-Identifier: Apache-2.0
#include "eval/tasks.h"

#include <algorithm>
#include <cctype>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace lychee::eval {
namespace {

constexpr std::pair<TaskKind, std::string_view> kNames[] = {
    {TaskKind::kNeedle, "needle"},         {TaskKind::kMultiKey, "multikey"},
    {TaskKind::kMultiValue, "multivalue"}, {TaskKind::kVariableTracking, "vt"},
    {TaskKind::kCommonWords, "cwe"},
};

std::string Fact(const std::string& key, const std::string& value) {
  return " The special magic number for " + key + " is " + value + ". ";
}

std::string Question(const std::string& key) {
  return " Question: what is the special magic number for " + key +
         "? Answer: the special magic number for " + key + " is";
}

// Words of the statements themselves make confusing keys ("the special magic number for special").
bool IsTemplateWord(const std::string& w) {
  return w == "special" || w == "magic" || w == "number" || w == "numbers" || w == "question" ||
         w == "answer" || w == "same" || w == "what";
}

// Draws keys (distinct words of the haystack) and 7-digit values (distinct), and tokenizes.
class Drawer {
 public:
  Drawer(const Tokenizer& tokenizer, const Haystack& haystack, std::mt19937_64& rng)
      : tokenizer_(tokenizer), haystack_(haystack), rng_(rng) {}

  std::string Key() {
    std::string w;
    do {
      w = haystack_
              .words[std::uniform_int_distribution<size_t>(0, haystack_.words.size() - 1)(rng_)];
    } while (IsTemplateWord(w) || !keys_.insert(w).second);
    return w;
  }
  std::string Value() {
    std::string v;
    do {
      v = std::to_string(std::uniform_int_distribution<int>(1000000, 9999999)(rng_));
    } while (!values_.insert(v).second);
    return v;
  }
  double Depth() { return std::uniform_real_distribution<double>(0.0, 0.95)(rng_); }
  std::vector<int32_t> Encode(const std::string& s) const { return tokenizer_.Encode(s, false); }

 private:
  const Tokenizer& tokenizer_;
  const Haystack& haystack_;
  std::mt19937_64& rng_;
  std::set<std::string> keys_, values_;
};

// Places `statements` (depth, text, asked) in filler before `question`; fills task.prompt and
// task.evidence (in the order given).
absl::Status Place(const Tokenizer& tokenizer, const Haystack& haystack, const TaskOptions& options,
                   const std::vector<std::tuple<double, std::string, bool>>& statements,
                   const std::string& question, std::mt19937_64& rng, Task& task) {
  std::vector<Insert> inserts;
  for (const auto& [depth, text, asked] : statements) {
    inserts.push_back({depth, tokenizer.Encode(text, false)});
  }
  LY_ASSIGN_OR_RETURN(const std::vector<int64_t> positions,
                      ComposePrompt(tokenizer, haystack, options.context_tokens, inserts,
                                    tokenizer.Encode(question, false), rng, &task.prompt));
  for (size_t i = 0; i < statements.size(); ++i) {
    task.evidence.push_back(
        {positions[i], inserts[i].ids, std::get<1>(statements[i]), std::get<2>(statements[i])});
  }
  return absl::OkStatus();
}

absl::StatusOr<Task> MakeNeedle(const Tokenizer& tokenizer, const Haystack& haystack,
                                const TaskOptions& options, std::mt19937_64& rng) {
  NeedleOptions needle;
  needle.context_tokens = options.context_tokens;
  needle.depth = options.depth;
  LY_ASSIGN_OR_RETURN(NeedleTask n, MakeNeedleTask(tokenizer, haystack, needle, rng));
  Task task;
  task.kind = TaskKind::kNeedle;
  task.prompt = std::move(n.prompt);
  task.answers = {n.value};
  task.reference = std::move(n.answer);
  task.key = n.key;
  const std::string text = Fact(n.key, n.value);
  task.evidence.push_back({n.needle_position, tokenizer.Encode(text, false), text, true});
  task.max_new_tokens = static_cast<int>(task.reference.size()) + 2;
  return task;
}

absl::StatusOr<Task> MakeMultiKey(const Tokenizer& tokenizer, const Haystack& haystack,
                                  const TaskOptions& options, std::mt19937_64& rng) {
  if (options.num_keys < 1) return absl::InvalidArgumentError("multikey: num_keys must be >= 1");
  Drawer draw(tokenizer, haystack, rng);
  Task task;
  task.kind = TaskKind::kMultiKey;
  task.key = draw.Key();
  const std::string value = draw.Value();
  std::vector<std::tuple<double, std::string, bool>> statements;
  statements.emplace_back(options.depth, Fact(task.key, value), true);
  for (int i = 1; i < options.num_keys; ++i) {
    const std::string key = draw.Key();
    const double depth = draw.Depth();
    statements.emplace_back(depth, Fact(key, draw.Value()), false);
  }
  LY_RETURN_IF_ERROR(
      Place(tokenizer, haystack, options, statements, Question(task.key), rng, task));
  task.answers = {value};
  task.reference = draw.Encode(" " + value + ".");
  task.max_new_tokens = static_cast<int>(task.reference.size()) + 2;
  return task;
}

absl::StatusOr<Task> MakeMultiValue(const Tokenizer& tokenizer, const Haystack& haystack,
                                    const TaskOptions& options, std::mt19937_64& rng) {
  if (options.num_values < 1) {
    return absl::InvalidArgumentError("multivalue: num_values must be >= 1");
  }
  Drawer draw(tokenizer, haystack, rng);
  Task task;
  task.kind = TaskKind::kMultiValue;
  task.key = draw.Key();
  std::vector<std::tuple<double, std::string, bool>> statements;
  std::vector<std::pair<double, std::string>> values;
  for (int i = 0; i < options.num_values; ++i) {
    const double depth = i == 0 ? options.depth : draw.Depth();
    values.emplace_back(depth, draw.Value());
    statements.emplace_back(depth, Fact(task.key, values.back().second), true);
  }
  LY_RETURN_IF_ERROR(Place(tokenizer, haystack, options, statements,
                           " Question: what are all the special magic numbers for " + task.key +
                               "? Answer: the special magic numbers for " + task.key + " are",
                           rng, task));
  std::stable_sort(values.begin(), values.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> in_order;
  for (const auto& [depth, value] : values) in_order.push_back(value);
  task.answers = in_order;
  task.reference = draw.Encode(" " + absl::StrJoin(in_order, ", ") + ".");
  task.max_new_tokens = static_cast<int>(task.reference.size()) + 4;
  return task;
}

absl::StatusOr<Task> MakeVariableTracking(const Tokenizer& tokenizer, const Haystack& haystack,
                                          const TaskOptions& options, std::mt19937_64& rng) {
  if (options.num_hops < 1 || options.num_chains < 1) {
    return absl::InvalidArgumentError("vt: num_hops and num_chains must be >= 1");
  }
  Drawer draw(tokenizer, haystack, rng);
  Task task;
  task.kind = TaskKind::kVariableTracking;
  std::vector<std::tuple<double, std::string, bool>> statements;
  std::string value;
  for (int c = 0; c < options.num_chains; ++c) {
    const bool asked = c == 0;
    const std::string root_value = draw.Value();
    if (asked) value = root_value;
    std::vector<double> depths;
    if (asked) {
      // Root at the swept depth, the copies spread evenly after it.
      const double d = std::clamp(options.depth, 0.0, 0.95);
      for (int h = 0; h < options.num_hops; ++h) {
        depths.push_back(d + (0.95 - d) * h / options.num_hops);
      }
    } else {
      for (int h = 0; h < options.num_hops; ++h) depths.push_back(draw.Depth());
      std::sort(depths.begin(), depths.end());
    }
    std::string previous;
    for (int h = 0; h < options.num_hops; ++h) {
      const std::string key = draw.Key();
      statements.emplace_back(depths[static_cast<size_t>(h)],
                              h == 0 ? Fact(key, root_value)
                                     : " The special magic number for " + key +
                                           " is the same as the special magic number for " +
                                           previous + ". ",
                              asked);
      previous = key;
    }
    if (asked) task.key = previous;
  }
  LY_RETURN_IF_ERROR(
      Place(tokenizer, haystack, options, statements, Question(task.key), rng, task));
  task.answers = {value};
  task.reference = draw.Encode(" " + value + ".");
  task.max_new_tokens = static_cast<int>(task.reference.size()) + 2;
  return task;
}

absl::StatusOr<Task> MakeCommonWords(const Tokenizer& tokenizer, const Haystack& haystack,
                                     const TaskOptions& options, std::mt19937_64& rng) {
  if (options.num_common < 1 || options.rare_frequency < 1) {
    return absl::InvalidArgumentError("cwe: num_common and rare_frequency must be >= 1");
  }
  auto encode = [&tokenizer](const std::string& s) { return tokenizer.Encode(s, false); };
  Task task;
  task.kind = TaskKind::kCommonWords;
  const std::vector<int32_t> preamble =
      encode(" Below is a list of words. Remember the ones that appear most often.");
  const std::string n = std::to_string(options.num_common);
  const std::vector<int32_t> question =
      encode(" Question: what are the " + n + " most common words in the list? Answer: the " + n +
             " most common words in the list are");
  const int64_t budget = options.context_tokens - 1 - static_cast<int64_t>(preamble.size()) -
                         static_cast<int64_t>(question.size());
  std::vector<std::string> words = haystack.words;
  std::erase_if(words, IsTemplateWord);
  std::shuffle(words.begin(), words.end(), rng);
  if (words.size() < static_cast<size_t>(options.num_common) + 1) {
    return absl::InvalidArgumentError("cwe: the haystack has too few distinct words");
  }
  std::vector<std::vector<int32_t>> entry(words.size());
  for (size_t i = 0; i < words.size(); ++i) entry[i] = encode(words[i] + ",");
  // Common words first, then rare words round-robin over a pool sized so that each appears about
  // rare_frequency times, until the next entry no longer fits.
  int64_t common_tokens = 0;
  double mean_entry = 0;
  for (size_t i = 0; i < words.size(); ++i) mean_entry += static_cast<double>(entry[i].size());
  mean_entry /= static_cast<double>(words.size());
  for (int i = 0; i < options.num_common; ++i) {
    common_tokens += static_cast<int64_t>(entry[static_cast<size_t>(i)].size());
  }
  int frequency = options.common_frequency;
  if (frequency <= 0) {
    const double entries = static_cast<double>(budget) / mean_entry;
    frequency = std::max(3 * options.rare_frequency,
                         static_cast<int>(entries / (4.0 * options.num_common)));
  }
  int64_t used = common_tokens * frequency;
  if (used > budget) {
    return absl::InvalidArgumentError(absl::StrCat("cwe: ", options.num_common, " words × ",
                                                   frequency, " do not fit in ",
                                                   options.context_tokens, " tokens"));
  }
  std::vector<size_t> list;  // word indices, in list order after the shuffle below
  for (int i = 0; i < options.num_common; ++i) {
    for (int k = 0; k < frequency; ++k) list.push_back(static_cast<size_t>(i));
  }
  const size_t rare_begin = static_cast<size_t>(options.num_common);
  const size_t pool = std::clamp<size_t>(static_cast<size_t>(static_cast<double>(budget - used) /
                                                             (mean_entry * options.rare_frequency)),
                                         1, words.size() - rare_begin);
  std::vector<int> count(words.size(), 0);
  for (size_t j = 0;; ++j) {
    const size_t w = rare_begin + j % pool;
    if (used + static_cast<int64_t>(entry[w].size()) > budget) break;
    used += static_cast<int64_t>(entry[w].size());
    list.push_back(w);
    if (++count[w] >= frequency) {
      return absl::InvalidArgumentError(
          "cwe: the haystack has too few distinct words for this length");
    }
  }
  std::shuffle(list.begin(), list.end(), rng);
  // Pad with filler right after BOS so the prompt is exactly context_tokens long.
  const int64_t pad = budget - used;
  const int64_t available = static_cast<int64_t>(haystack.tokens.size());
  if (pad > available) return absl::InvalidArgumentError("cwe: haystack too short to pad");
  const int64_t start = std::uniform_int_distribution<int64_t>(0, available - pad)(rng);
  task.prompt.push_back(tokenizer.bos_id().value_or(1));
  task.prompt.insert(task.prompt.end(), haystack.tokens.begin() + start,
                     haystack.tokens.begin() + start + pad);
  task.prompt.insert(task.prompt.end(), preamble.begin(), preamble.end());
  for (size_t w : list) {
    if (w < rare_begin) {
      task.evidence.push_back(
          {static_cast<int64_t>(task.prompt.size()), entry[w], words[w] + ",", true});
    }
    task.prompt.insert(task.prompt.end(), entry[w].begin(), entry[w].end());
  }
  task.prompt.insert(task.prompt.end(), question.begin(), question.end());
  task.answers.assign(words.begin(), words.begin() + options.num_common);
  task.reference = encode(" " + absl::StrJoin(task.answers, ", ") + ".");
  task.max_new_tokens = static_cast<int>(task.reference.size()) + 4;
  return task;
}

bool FoundAsWord(const std::string& haystack, const std::string& needle) {
  if (needle.empty()) return false;
  auto alnum = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + 1)) {
    const bool left = at == 0 || !alnum(haystack[at - 1]);
    const size_t end = at + needle.size();
    const bool right = end >= haystack.size() || !alnum(haystack[end]);
    if (left && right) return true;
  }
  return false;
}

}  // namespace

std::string_view TaskName(TaskKind kind) {
  for (const auto& [k, name] : kNames) {
    if (k == kind) return name;
  }
  return "?";
}

absl::StatusOr<TaskKind> ParseTaskKind(std::string_view name) {
  for (const auto& [k, n] : kNames) {
    if (n == name) return k;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown task '", std::string(name),
                                                 "' (needle, multikey, multivalue, vt, cwe)"));
}

std::vector<TaskKind> AllTaskKinds() {
  std::vector<TaskKind> all;
  for (const auto& [k, name] : kNames) all.push_back(k);
  return all;
}

double Score(const Task& task, std::string_view output) {
  if (task.answers.empty()) return 0.0;
  const std::string text = absl::AsciiStrToLower(std::string(output));
  int found = 0;
  for (const std::string& a : task.answers) {
    found += FoundAsWord(text, absl::AsciiStrToLower(a)) ? 1 : 0;
  }
  return static_cast<double>(found) / static_cast<double>(task.answers.size());
}

absl::StatusOr<Task> MakeTask(TaskKind kind, const Tokenizer& tokenizer, const Haystack& haystack,
                              const TaskOptions& options, std::mt19937_64& rng) {
  switch (kind) {
    case TaskKind::kNeedle:
      return MakeNeedle(tokenizer, haystack, options, rng);
    case TaskKind::kMultiKey:
      return MakeMultiKey(tokenizer, haystack, options, rng);
    case TaskKind::kMultiValue:
      return MakeMultiValue(tokenizer, haystack, options, rng);
    case TaskKind::kVariableTracking:
      return MakeVariableTracking(tokenizer, haystack, options, rng);
    case TaskKind::kCommonWords:
      return MakeCommonWords(tokenizer, haystack, options, rng);
  }
  return absl::InvalidArgumentError("unknown task kind");
}

}  // namespace lychee::eval
