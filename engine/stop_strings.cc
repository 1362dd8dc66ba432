// SPDX-License-Identifier: Apache-2.0
// StopStringMatcher: search the unshown tail, hold back a possible stop-string prefix.
#include "engine/stop_strings.h"

#include <algorithm>
#include <utility>

namespace lychee {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops) {
  for (std::string& s : stops) {
    if (s.empty()) continue;
    max_stop_len_ = std::max(max_stop_len_, s.size());
    stops_.push_back(std::move(s));
  }
}

StopStringMatcher::Result StopStringMatcher::Push(std::string_view piece) {
  Result result;
  if (stopped_) return result;
  pending_.append(piece);
  if (stops_.empty()) {
    result.text = std::move(pending_);
    pending_.clear();
    return result;
  }
  // Everything shown so far was checked, so a match must end inside `pending_`; the earliest
  // match over all stop strings wins.
  size_t first = std::string::npos;
  const std::string* matched = nullptr;
  for (const std::string& s : stops_) {
    const size_t at = pending_.find(s);
    if (at < first) {
      first = at;
      matched = &s;
    }
  }
  if (matched != nullptr) {
    result.text = pending_.substr(0, first);
    result.stopped = true;
    result.matched = *matched;
    stopped_ = true;
    pending_.clear();
    return result;
  }
  // Hold back the longest suffix of `pending_` that is a proper prefix of some stop string.
  size_t hold = 0;
  const size_t max_hold = std::min(pending_.size(), max_stop_len_ - 1);
  for (size_t len = max_hold; len > 0 && hold == 0; --len) {
    const std::string_view suffix = std::string_view(pending_).substr(pending_.size() - len);
    for (const std::string& s : stops_) {
      if (s.size() > len && std::string_view(s).substr(0, len) == suffix) {
        hold = len;
        break;
      }
    }
  }
  result.text = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return result;
}

std::string StopStringMatcher::Flush() {
  if (stopped_) return {};
  std::string out = std::move(pending_);
  pending_.clear();
  return out;
}

}  // namespace lychee
