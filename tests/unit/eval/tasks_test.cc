// SPDX-License-Identifier: Apache-2.0
// The RULER-style task generators (eval/tasks.h) with models/lc20m's real tokenizer and the
// shipped filler texts: every prompt has the requested length and starts with BOS, every
// statement sits in the prompt exactly where the task says and holds the answer, the same seed
// gives the same task (another seed another), cwe's common words really are the most common
// entries, Score() counts answers as whole words, and the needle task equals MakeNeedleTask's.
#include "eval/tasks.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/file.h"
#include "eval/needle.h"
#include "model/tokenizer/tokenizer.h"

namespace lychee::eval {
namespace {

class TasksTest : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    auto tok = Tokenizer::FromDirectory("models/lc20m");
    ASSERT_TRUE(tok.ok()) << tok.status();
    tokenizer_ = std::move(*tok).release();
  }
  static void TearDownTestSuite() {
    delete tokenizer_;
    tokenizer_ = nullptr;
  }
  void SetUp() override {
    auto text = ReadFile(GetParam());
    ASSERT_TRUE(text.ok()) << text.status();
    // A 300 KB slice keeps the test fast; long enough for 16K-token prompts.
    auto h = MakeHaystack(*tokenizer_, text->substr(0, 300000));
    ASSERT_TRUE(h.ok()) << h.status();
    haystack_ = *std::move(h);
  }

  absl::StatusOr<Task> Make(TaskKind kind, const TaskOptions& options, uint64_t seed) {
    std::mt19937_64 rng(seed);
    return MakeTask(kind, *tokenizer_, haystack_, options, rng);
  }

  static inline Tokenizer* tokenizer_ = nullptr;
  Haystack haystack_;
};

TEST_P(TasksTest, PromptLengthEvidenceAndAnswers) {
  for (TaskKind kind : AllTaskKinds()) {
    for (int64_t length : {1024, 2048, 8192}) {
      for (double depth : {0.0, 0.3, 0.95}) {
        SCOPED_TRACE(std::string(TaskName(kind)) + " " + std::to_string(length) + " depth " +
                     std::to_string(depth));
        TaskOptions options;
        options.context_tokens = length;
        options.depth = depth;
        auto task = Make(kind, options, 7);
        ASSERT_TRUE(task.ok()) << task.status();
        EXPECT_EQ(task->kind, kind);
        ASSERT_EQ(static_cast<int64_t>(task->prompt.size()), length);
        EXPECT_EQ(task->prompt.front(), tokenizer_->bos_id().value_or(1));
        ASSERT_FALSE(task->answers.empty());
        ASSERT_FALSE(task->evidence.empty());
        EXPECT_GT(task->max_new_tokens, static_cast<int>(task->reference.size()));
        // The reference continuation is a perfect answer.
        EXPECT_EQ(Score(*task, tokenizer_->Decode(task->reference, true)), 1.0);
        // Each statement is in the prompt exactly where stated; together the asked ones hold
        // every answer.
        std::string asked_text;
        int64_t first_asked = length;
        for (const Evidence& e : task->evidence) {
          ASSERT_GE(e.position, 1);
          ASSERT_LE(e.position + static_cast<int64_t>(e.tokens.size()), length);
          EXPECT_TRUE(
              std::equal(e.tokens.begin(), e.tokens.end(), task->prompt.begin() + e.position))
              << e.text;
          EXPECT_EQ(e.tokens, tokenizer_->Encode(e.text, false));
          if (e.asked) {
            asked_text += e.text;
            first_asked = std::min(first_asked, e.position);
          }
        }
        for (const std::string& a : task->answers) {
          EXPECT_NE(asked_text.find(a), std::string::npos) << a;
        }
        // The question comes last: the prompt's tail asks about the key.
        const std::string tail = tokenizer_->Decode(
            std::vector<int32_t>(task->prompt.end() - 40, task->prompt.end()), true);
        EXPECT_NE(tail.find("Answer:"), std::string::npos) << tail;
        if (kind != TaskKind::kCommonWords) {
          EXPECT_NE(tail.find(task->key), std::string::npos) << tail;
          if (kind != TaskKind::kMultiValue) {
            // The asked fact (vt: the chain's root) sits at the requested depth of the filler.
            const double at = static_cast<double>(first_asked) / static_cast<double>(length);
            EXPECT_NEAR(at, depth, 0.08) << first_asked;
          }
        }
      }
    }
  }
}

TEST_P(TasksTest, DeterministicUnderTheSeed) {
  for (TaskKind kind : AllTaskKinds()) {
    SCOPED_TRACE(std::string(TaskName(kind)));
    TaskOptions options;
    options.context_tokens = 2048;
    auto a = Make(kind, options, 11);
    auto b = Make(kind, options, 11);
    auto c = Make(kind, options, 12);
    ASSERT_TRUE(a.ok() && b.ok() && c.ok());
    EXPECT_EQ(a->prompt, b->prompt);
    EXPECT_EQ(a->answers, b->answers);
    EXPECT_EQ(a->reference, b->reference);
    EXPECT_NE(a->prompt, c->prompt);
  }
}

TEST_P(TasksTest, NeedleIsMakeNeedleTask) {
  TaskOptions options;
  options.context_tokens = 4096;
  options.depth = 0.4;
  auto task = Make(TaskKind::kNeedle, options, 3);
  ASSERT_TRUE(task.ok()) << task.status();
  std::mt19937_64 rng(3);
  NeedleOptions needle;
  needle.context_tokens = 4096;
  needle.depth = 0.4;
  auto n = MakeNeedleTask(*tokenizer_, haystack_, needle, rng);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(task->prompt, n->prompt);
  EXPECT_EQ(task->reference, n->answer);
  EXPECT_EQ(task->answers, std::vector<std::string>{n->value});
  EXPECT_EQ(task->evidence.front().position, n->needle_position);
}

TEST_P(TasksTest, TaskShapes) {
  TaskOptions options;
  options.context_tokens = 4096;
  options.num_keys = 5;
  options.num_values = 3;
  options.num_hops = 4;
  options.num_chains = 3;
  auto mk = Make(TaskKind::kMultiKey, options, 1);
  ASSERT_TRUE(mk.ok());
  EXPECT_EQ(mk->evidence.size(), 5u);
  EXPECT_EQ(std::count_if(mk->evidence.begin(), mk->evidence.end(),
                          [](const Evidence& e) { return e.asked; }),
            1);
  auto mv = Make(TaskKind::kMultiValue, options, 1);
  ASSERT_TRUE(mv.ok());
  EXPECT_EQ(mv->answers.size(), 3u);
  EXPECT_NEAR(Score(*mv, " " + mv->answers[0] + ", 1234567"), 1.0 / 3, 1e-9);
  auto vt = Make(TaskKind::kVariableTracking, options, 1);
  ASSERT_TRUE(vt.ok());
  ASSERT_EQ(vt->evidence.size(), 12u);
  // The asked chain: root value first, then each statement names the previous variable, the
  // last being the key asked; statements in prompt order.
  EXPECT_NE(vt->evidence[0].text.find(vt->answers[0]), std::string::npos);
  for (size_t h = 1; h < 4; ++h) {
    EXPECT_GT(vt->evidence[h].position, vt->evidence[h - 1].position);
    EXPECT_NE(vt->evidence[h].text.find("is the same as"), std::string::npos);
  }
  EXPECT_NE(vt->evidence[3].text.find(" for " + vt->key + " is"), std::string::npos);
  for (size_t i = 4; i < 12; ++i) EXPECT_FALSE(vt->evidence[i].asked);

  options.num_common = 4;
  auto cwe = Make(TaskKind::kCommonWords, options, 1);
  ASSERT_TRUE(cwe.ok()) << cwe.status();
  ASSERT_EQ(cwe->answers.size(), 4u);
  // Count every entry of the list by decoding the prompt's words after the preamble.
  const std::string text = tokenizer_->Decode(cwe->prompt, true);
  const size_t list_at = text.find("appear most often.");
  const size_t question_at = text.find(" Question:");
  ASSERT_NE(list_at, std::string::npos);
  ASSERT_NE(question_at, std::string::npos);
  std::map<std::string, int> counts;
  std::string word;
  for (size_t i = list_at + 18; i < question_at; ++i) {
    if (text[i] == ',') {
      ++counts[word];
      word.clear();
    } else if (text[i] != ' ') {
      word += text[i];
    }
  }
  int common = -1;
  for (const std::string& a : cwe->answers) {
    if (common < 0) common = counts[a];
    EXPECT_EQ(counts[a], common) << a;
  }
  EXPECT_GE(common, 6);
  EXPECT_EQ(static_cast<int>(cwe->evidence.size()), 4 * common);
  int rare_max = 0;
  for (const auto& [w, n] : counts) {
    if (std::find(cwe->answers.begin(), cwe->answers.end(), w) == cwe->answers.end()) {
      rare_max = std::max(rare_max, n);
    }
  }
  EXPECT_GT(rare_max, 0);
  EXPECT_LT(rare_max, common);
  EXPECT_GT(counts.size(), 50u);
}

TEST_P(TasksTest, ErrorsAndNames) {
  TaskOptions options;
  options.context_tokens = 1 << 20;  // far more than the slice
  EXPECT_FALSE(Make(TaskKind::kNeedle, options, 1).ok());
  options.context_tokens = 2048;
  options.common_frequency = 1000;  // 5 words × 1000 entries do not fit in 2K
  EXPECT_FALSE(Make(TaskKind::kCommonWords, options, 1).ok());
  options.num_values = 0;
  EXPECT_FALSE(Make(TaskKind::kMultiValue, options, 1).ok());
  for (TaskKind kind : AllTaskKinds()) {
    auto parsed = ParseTaskKind(TaskName(kind));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, kind);
  }
  EXPECT_FALSE(ParseTaskKind("ruler").ok());
}

TEST(TaskScoreTest, WholeWordsCaseInsensitive) {
  Task t;
  t.answers = {"1234567", "river"};
  EXPECT_EQ(Score(t, "is 1234567. and River"), 1.0);
  EXPECT_EQ(Score(t, "is 12345678 and rivers"), 0.0);
  EXPECT_EQ(Score(t, "(1234567)"), 0.5);
  t.answers.clear();
  EXPECT_EQ(Score(t, "anything"), 0.0);
}

INSTANTIATE_TEST_SUITE_P(Fillers, TasksTest,
                         ::testing::Values("eval/data/filler-licenses.txt",
                                           "eval/data/filler-web-bible.txt"),
                         [](const auto& param_info) {
                           return std::string(param_info.index == 0 ? "Licenses" : "Bible");
                         });

}  // namespace
}  // namespace lychee::eval
