// SPDX-License-Identifier: Apache-2.0
// Stop strings over streamed text: decides how much of the generated text may be shown now.
//
// Generation stops when the text produced so far contains any stop string; the stop string and
// everything after it is never shown. Text that could still become the start of a stop string
// is held back until the next piece settles it. One matcher per sequence, used by the thread
// that streams it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace lychee {

class StopStringMatcher {
 public:
  // Empty strings in `stops` are ignored.
  explicit StopStringMatcher(std::vector<std::string> stops);

  struct Result {
    std::string text;      // safe to show now
    bool stopped = false;  // a stop string matched: `text` ends right before it
    std::string matched;   // which one (the earliest match; the first listed on a tie)
  };

  // Appends a piece of generated text. After a stop, further pushes return nothing.
  Result Push(std::string_view piece);
  // End of generation without a stop: releases the held-back text.
  std::string Flush();

 private:
  std::vector<std::string> stops_;
  size_t max_stop_len_ = 0;
  std::string pending_;  // generated text not shown yet
  bool stopped_ = false;
};

}  // namespace lychee
