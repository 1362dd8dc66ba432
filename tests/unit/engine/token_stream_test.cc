// SPDX-License-Identifier: Apache-2.0
#include "engine/token_stream.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>

namespace lychee {
namespace {

GenerationOutput Event(int32_t token, std::string text, bool finished = false) {
  GenerationOutput out;
  out.token_ids = {token};
  out.text = std::move(text);
  out.completion_tokens = token;
  out.finished = finished;
  if (finished) out.finish_reason = FinishReason::kLength;
  return out;
}

TEST(TokenStreamTest, DeliversEventsInOrderAndEndsAfterTheFinishedOne) {
  TokenStream stream("r1");
  stream.Push(Event(1, "a"));
  stream.Push(Event(2, "b", /*finished=*/true));
  stream.Push(Event(3, "c"));  // after finish: dropped
  auto first = stream.Next();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->text, "a");
  auto second = stream.Next();
  ASSERT_TRUE(second.has_value());
  EXPECT_TRUE(second->finished);
  EXPECT_EQ(second->finish_reason, FinishReason::kLength);
  EXPECT_FALSE(stream.Next().has_value());
}

TEST(TokenStreamTest, ASlowReaderGetsMergedEventsNotALongQueue) {
  TokenStream stream("r2", /*capacity=*/2);
  for (int i = 1; i <= 5; ++i)
    stream.Push(Event(i, std::string(1, static_cast<char>('a' + i - 1))));
  stream.Push(Event(6, "f", /*finished=*/true));
  auto first = stream.Next();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->token_ids, std::vector<int32_t>({1}));
  auto merged = stream.Next();
  ASSERT_TRUE(merged.has_value());
  EXPECT_EQ(merged->token_ids, std::vector<int32_t>({2, 3, 4, 5, 6}));
  EXPECT_EQ(merged->text, "bcdef");
  EXPECT_EQ(merged->completion_tokens, 6);  // cumulative: the newest value
  EXPECT_TRUE(merged->finished);
}

TEST(TokenStreamTest, NextTimesOutWithoutEvents) {
  TokenStream stream("r3");
  EXPECT_FALSE(stream.Next(absl::Now() + absl::Milliseconds(5)).has_value());
  EXPECT_FALSE(stream.finished());
}

TEST(TokenStreamTest, ReaderOnAnotherThreadSeesEveryToken) {
  TokenStream stream("r4", /*capacity=*/3);
  std::thread producer([&] {
    for (int i = 0; i < 1000; ++i) stream.Push(Event(i, "x", /*finished=*/i == 999));
  });
  int tokens = 0;
  std::string text;
  while (auto event = stream.Next(absl::Now() + absl::Seconds(10))) {
    tokens += static_cast<int>(event->token_ids.size());
    text += event->text;
    if (event->finished) break;
  }
  producer.join();
  EXPECT_EQ(tokens, 1000);
  EXPECT_EQ(text.size(), 1000u);
}

TEST(TokenStreamTest, CancelIsVisibleToTheEngine) {
  TokenStream stream("r5");
  EXPECT_FALSE(stream.cancelled());
  stream.Cancel();
  EXPECT_TRUE(stream.cancelled());
}

TEST(FinishReasonTest, OpenAiSpelling) {
  EXPECT_EQ(FinishReasonName(FinishReason::kStop), "stop");
  EXPECT_EQ(FinishReasonName(FinishReason::kLength), "length");
  EXPECT_EQ(FinishReasonName(FinishReason::kAbort), "abort");
}

}  // namespace
}  // namespace lychee
