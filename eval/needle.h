// SPDX-License-Identifier: Apache-2.0
// Needle-in-a-haystack prompts in the format models/lc20m was trained on (its train.py):
//   <BOS> filler … " The special magic number for KEY is VALUE. " … filler …
//   " Question: what is the special magic number for KEY? Answer: the special magic number for
//   KEY is"   → answer " VALUE."
// Filler is a window of a tokenized text at a seeded offset; pieces are tokenized separately and
// concatenated, as in training. Used by lychee-calibrate (head roles) and the fidelity tests.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/tokenizer/tokenizer.h"

namespace lychee::eval {

struct NeedleTask {
  std::vector<int32_t> prompt;  // BOS first
  std::vector<int32_t> answer;  // " VALUE." tokens
  std::string key, value;       // value: 7 digits
  int64_t needle_position = 0;  // token index where the fact starts
};

struct NeedleOptions {
  int64_t context_tokens = 2048;  // prompt length (the answer comes after)
  double depth = 0.5;             // where the fact sits, as a fraction of the filler
  int num_distractors = 0;        // other facts (other keys) placed at random depths
};

// Filler: the tokenized text (no BOS) and the words keys are drawn from.
struct Haystack {
  std::vector<int32_t> tokens;
  std::vector<std::string> words;  // lowercase words of 4-9 letters, deduplicated
};

// Tokenizes `text`; InvalidArgument when it is too short for a useful haystack.
absl::StatusOr<Haystack> MakeHaystack(const Tokenizer& tokenizer, const std::string& text);

// A piece of text inserted into the filler: `ids` placed at `depth` (fraction of the filler).
struct Insert {
  double depth = 0;
  std::vector<int32_t> ids;
};

// <BOS> + a filler window of the haystack (seeded start) with `inserts` placed at their depths
// (stable order for equal depths) + `tail`, exactly `context_tokens` long. Returns the token
// index where each insert starts, in the order given. InvalidArgument when the haystack cannot
// fill the context (or leaves fewer than 16 filler tokens).
absl::StatusOr<std::vector<int64_t>> ComposePrompt(const Tokenizer& tokenizer,
                                                   const Haystack& haystack, int64_t context_tokens,
                                                   const std::vector<Insert>& inserts,
                                                   const std::vector<int32_t>& tail,
                                                   std::mt19937_64& rng,
                                                   std::vector<int32_t>* prompt);

// One task; InvalidArgument when the haystack cannot fill the context.
absl::StatusOr<NeedleTask> MakeNeedleTask(const Tokenizer& tokenizer, const Haystack& haystack,
                                          const NeedleOptions& options, std::mt19937_64& rng);

}  // namespace lychee::eval
