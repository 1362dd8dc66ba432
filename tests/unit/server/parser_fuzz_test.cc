// SPDX-License-Identifier: Apache-2.0
// Randomized-input tests (issue 15) for every parser that sees outside bytes: the same targets,
// checks, seed corpora and dictionaries as the libFuzzer targets (fuzz/fuzz_checks.h), driven
// here by a small mutator (byte flips, dictionary tokens, truncation, splicing, deep nesting)
// with a fixed seed for a bounded number of iterations (LYCHEE_FUZZ_ITERATIONS; default 3000 per
// target, 300 for the tokenizer-file targets), so CI covers them without clang. Every input
// must get an answer (a value or an error status; never an exception, crash or hang) and keep
// the target's properties. Run under ASan/UBSan (the asan preset) to also catch memory errors;
// scripts/fuzz.sh runs the coverage-guided fuzzers.
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "fuzz/fuzz_checks.h"

namespace lychee {
namespace {

// LYCHEE_FUZZ_ITERATIONS, else 3000 (300 for the targets that load a whole tokenizer per input).
int Iterations(const std::string& target) {
  const char* env = std::getenv("LYCHEE_FUZZ_ITERATIONS");
  const int n = env != nullptr ? std::atoi(env) : 0;
  if (n > 0) return n;
  return target == "tokenizer_json" || target == "tokenizer_spm" ? 300 : 3000;
}

// One random edit of `input`.
std::string Mutate(std::string input, const std::vector<std::string>& seeds,
                   const std::vector<std::string>& tokens, std::mt19937_64& rng) {
  auto pick = [&rng](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    switch (rng() % 7) {
      case 0:  // flip a byte
        if (!input.empty()) input[pick(input.size())] = static_cast<char>(rng() & 0xff);
        break;
      case 1:  // insert a meaningful token
        input.insert(pick(input.size() + 1), tokens[pick(tokens.size())]);
        break;
      case 2:  // delete a run
        if (!input.empty()) {
          const size_t at = pick(input.size());
          input.erase(at, 1 + pick(8));
        }
        break;
      case 3:  // truncate
        input.resize(pick(input.size() + 1));
        break;
      case 4: {  // splice another seed's tail
        const std::string& other = seeds[pick(seeds.size())];
        input = input.substr(0, pick(input.size() + 1)) + other.substr(pick(other.size() + 1));
        break;
      }
      case 5:  // duplicate a run
        if (!input.empty()) {
          const size_t at = pick(input.size());
          input.insert(at, input.substr(at, 1 + pick(16)));
        }
        break;
      default: {  // nest
        const size_t depth = 1 + pick(200);
        input.insert(pick(input.size() + 1), std::string(depth, rng() % 2 ? '[' : '{'));
        break;
      }
    }
  }
  return input;
}

// Every fuzz target of fuzz/ (fuzz_checks.h), from its seed corpus, with its dictionary's
// tokens as insertions: every input must get an answer and keep the target's properties.
class ParserFuzzTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ParserFuzzTest, AnswersEveryInput) {
  const std::string& target = GetParam();
  const std::vector<std::string> seeds = fuzz::LoadCorpus(target);
  ASSERT_FALSE(seeds.empty()) << "no seeds in fuzz/" << target << "/corpus";
  std::vector<std::string> tokens = fuzz::LoadDictionary(target);
  if (tokens.empty()) tokens = {"\x00", "\xff", "{", "}", "\""};
  // The seeds themselves hold every property.
  int accepted = 0;
  for (const std::string& seed : seeds) {
    const fuzz::CheckResult r = fuzz::Check(target, seed);
    ASSERT_TRUE(r.problem.empty()) << target << ": " << r.problem << "\nseed: " << seed;
    accepted += r.accepted;
  }
  EXPECT_GT(accepted, 0) << target << ": no seed parses";
  std::mt19937_64 rng(std::hash<std::string>{}(target) ^ 15);
  const int n = Iterations(target);
  for (int i = 0; i < n; ++i) {
    const std::string input = Mutate(seeds[rng() % seeds.size()], seeds, tokens, rng);
    const fuzz::CheckResult r = fuzz::Check(target, input);
    ASSERT_TRUE(r.problem.empty()) << target << ": " << r.problem << "\ninput: " << input;
  }
}

INSTANTIATE_TEST_SUITE_P(Targets, ParserFuzzTest,
                         ::testing::ValuesIn(std::vector<std::string>(std::begin(fuzz::kTargets),
                                                                      std::end(fuzz::kTargets))),
                         [](const ::testing::TestParamInfo<std::string>& target) {
                           return target.param;
                         });

}  // namespace
}  // namespace lychee
