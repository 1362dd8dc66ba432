// SPDX-License-Identifier: Apache-2.0
#include "eval/needle.h"

#include <algorithm>
#include <cctype>
#include <set>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace lychee::eval {

absl::StatusOr<Haystack> MakeHaystack(const Tokenizer& tokenizer, const std::string& text) {
  Haystack h;
  h.tokens = tokenizer.Encode(text, /*add_special_tokens=*/false);
  // Keys are words of the text: maximal alphanumeric runs of 4-9 lowercase letters.
  std::set<std::string> words;
  size_t i = 0;
  while (i < text.size()) {
    if (std::isalnum(static_cast<unsigned char>(text[i])) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    bool lower = true;
    while (j < text.size() && std::isalnum(static_cast<unsigned char>(text[j])) != 0) {
      lower = lower && std::islower(static_cast<unsigned char>(text[j])) != 0;
      ++j;
    }
    if (lower && j - i >= 4 && j - i <= 9) words.insert(text.substr(i, j - i));
    i = j;
  }
  h.words.assign(words.begin(), words.end());
  if (h.tokens.size() < 256 || h.words.size() < 16) {
    return absl::InvalidArgumentError(absl::StrCat("filler text too short: ", h.tokens.size(),
                                                   " tokens, ", h.words.size(), " words"));
  }
  return h;
}

absl::StatusOr<NeedleTask> MakeNeedleTask(const Tokenizer& tokenizer, const Haystack& haystack,
                                          const NeedleOptions& options, std::mt19937_64& rng) {
  auto encode = [&tokenizer](const std::string& s) { return tokenizer.Encode(s, false); };
  auto pick_word = [&]() {
    return haystack.words[std::uniform_int_distribution<size_t>(0, haystack.words.size() - 1)(rng)];
  };
  auto pick_value = [&]() {
    return std::to_string(std::uniform_int_distribution<int>(1000000, 9999999)(rng));
  };
  NeedleTask task;
  task.key = pick_word();
  task.value = pick_value();
  std::vector<Insert> inserts;
  inserts.push_back({options.depth, encode(" The special magic number for " + task.key + " is " +
                                           task.value + ". ")});
  std::uniform_real_distribution<double> depth(0.0, 0.95);
  for (int i = 0; i < options.num_distractors; ++i) {
    std::string other = pick_word();
    while (other == task.key) other = pick_word();
    const double d = depth(rng);
    inserts.push_back(
        {d, encode(" The special magic number for " + other + " is " + pick_value() + ". ")});
  }
  const std::vector<int32_t> question =
      encode(" Question: what is the special magic number for " + task.key +
             "? Answer: the special magic number for " + task.key + " is");
  task.answer = encode(" " + task.value + ".");
  LY_ASSIGN_OR_RETURN(const std::vector<int64_t> positions,
                      ComposePrompt(tokenizer, haystack, options.context_tokens, inserts, question,
                                    rng, &task.prompt));
  task.needle_position = positions.front();
  return task;
}

absl::StatusOr<std::vector<int64_t>> ComposePrompt(const Tokenizer& tokenizer,
                                                   const Haystack& haystack, int64_t context_tokens,
                                                   const std::vector<Insert>& inserts,
                                                   const std::vector<int32_t>& tail,
                                                   std::mt19937_64& rng,
                                                   std::vector<int32_t>* prompt) {
  int64_t fixed = 1 + static_cast<int64_t>(tail.size());  // BOS + tail
  for (const Insert& f : inserts) fixed += static_cast<int64_t>(f.ids.size());
  const int64_t filler_len = context_tokens - fixed;
  const int64_t available = static_cast<int64_t>(haystack.tokens.size());
  if (filler_len < 16 || filler_len > available) {
    return absl::InvalidArgumentError(absl::StrCat("cannot fill a ", context_tokens,
                                                   "-token prompt from a haystack of ", available,
                                                   " tokens (", fixed, " tokens of facts)"));
  }
  const int64_t start = std::uniform_int_distribution<int64_t>(0, available - filler_len)(rng);
  std::vector<size_t> order(inserts.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return inserts[a].depth < inserts[b].depth; });
  std::vector<int64_t> positions(inserts.size());
  prompt->clear();
  prompt->reserve(static_cast<size_t>(context_tokens));
  prompt->push_back(tokenizer.bos_id().value_or(1));
  int64_t taken = 0;
  for (size_t i : order) {
    const Insert& f = inserts[i];
    const int64_t upto = std::clamp<int64_t>(
        static_cast<int64_t>(f.depth * static_cast<double>(filler_len)), taken, filler_len);
    prompt->insert(prompt->end(), haystack.tokens.begin() + start + taken,
                   haystack.tokens.begin() + start + upto);
    taken = upto;
    positions[i] = static_cast<int64_t>(prompt->size());
    prompt->insert(prompt->end(), f.ids.begin(), f.ids.end());
  }
  prompt->insert(prompt->end(), haystack.tokens.begin() + start + taken,
                 haystack.tokens.begin() + start + filler_len);
  prompt->insert(prompt->end(), tail.begin(), tail.end());
  return positions;
}

}  // namespace lychee::eval
