// SPDX-License-Identifier: Apache-2.0
// RULER-style synthetic long-context tasks (Hsieh et al., "RULER", 2024), generated from any text
// (the haystack, eval/needle.h) and the served model's tokenizer, deterministic under the seed of
// the std::mt19937_64 passed in. Every prompt is <BOS> … " Question: … Answer: …" and exactly
// TaskOptions::context_tokens long; the answer is what the model should generate next.
//
// The facts use the phrasing models/lc20m was trained on (" The special magic number for KEY is
// VALUE. " and " Question: what is the special magic number for KEY? Answer: the special magic
// number for KEY is") wherever the task allows it. lc20m was trained on the single-key and 3-key
// needle only: on multivalue, vt and cwe its absolute accuracy says little, and what these tasks
// measure on it is how closely a sparse policy follows dense (greedy agreement, answers found vs
// dense's).
//
//   needle      one fact, asked. Identical prompts to MakeNeedleTask for the same rng.
//   multikey    num_keys facts with distinct keys, one asked (the others are distractors).
//   multivalue  one key stated num_values times with distinct values, all asked
//               ("what are all the special magic numbers for KEY?"); score = fraction found.
//   vt          variable tracking: a chain " The special magic number for A is 1234567. " …
//               " The special magic number for B is the same as the special magic number for A. "
//               … (num_hops statements) plus num_chains − 1 distractor chains with other values;
//               the question asks the chain's last variable, the answer is the root value.
//   cwe         common-word extraction: a list of words, num_common of them common_frequency
//               times each and the rest a few times; asks the num_common most common words;
//               score = fraction named. No filler besides a few tokens of padding.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "eval/needle.h"
#include "model/tokenizer/tokenizer.h"

namespace lychee::eval {

enum class TaskKind { kNeedle, kMultiKey, kMultiValue, kVariableTracking, kCommonWords };

// "needle", "multikey", "multivalue", "vt", "cwe".
std::string_view TaskName(TaskKind kind);
absl::StatusOr<TaskKind> ParseTaskKind(std::string_view name);
std::vector<TaskKind> AllTaskKinds();

struct TaskOptions {
  int64_t context_tokens = 2048;  // prompt length, BOS and question included
  double depth = 0.5;  // fraction of the filler where the asked fact (vt: the chain's root) sits
  int num_keys = 4;    // multikey
  int num_values = 4;  // multivalue
  int num_hops = 3;    // vt: statements per chain (root included)
  int num_chains = 2;  // vt: chains (one asked)
  int num_common = 5;  // cwe: words asked
  int common_frequency = 0;  // cwe: occurrences of each common word; 0 = a quarter of the list
  int rare_frequency = 2;    // cwe: occurrences of the other words (about)
};

// A statement placed in the prompt: its first token index and its tokens.
struct Evidence {
  int64_t position = 0;
  std::vector<int32_t> tokens;
  std::string text;
  bool asked = false;  // holds (part of) the answer; false for distractors
};

struct Task {
  TaskKind kind = TaskKind::kNeedle;
  std::vector<int32_t> prompt;       // BOS first; size() == TaskOptions::context_tokens
  std::vector<std::string> answers;  // each expected in the output
  std::vector<int32_t> reference;    // a correct continuation in lc20m's answer format
  std::vector<Evidence> evidence;    // statements inserted into the prompt
  std::string key;                   // the key asked (vt: the chain's last variable)
  int max_new_tokens = 8;            // enough to state every answer
};

// Fraction of task.answers found in `output` (numbers as substrings, words as whole words,
// case-insensitive).
double Score(const Task& task, std::string_view output);

// One task of `kind`; InvalidArgument when the haystack cannot fill the context or the options
// are out of range.
absl::StatusOr<Task> MakeTask(TaskKind kind, const Tokenizer& tokenizer, const Haystack& haystack,
                              const TaskOptions& options, std::mt19937_64& rng);

}  // namespace lychee::eval
