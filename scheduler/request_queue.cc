// SPDX-License-Identifier: Apache-2.0
// RequestQueue: FCFS deque, or a deque kept sorted by (priority, arrival).
#include "scheduler/request_queue.h"

#include <algorithm>

namespace lychee {

void RequestQueue::Add(SchedRequest* request) {
  switch (policy_) {
    case SchedulingPolicy::kFcfs:
      queue_.push_back(request);
      return;
    case SchedulingPolicy::kPriority:
      InsertByRank(request);
      return;
  }
}

void RequestQueue::AddPreempted(SchedRequest* request) {
  switch (policy_) {
    case SchedulingPolicy::kFcfs:
      // It was admitted before everything still waiting: it resumes first.
      queue_.push_front(request);
      return;
    case SchedulingPolicy::kPriority:
      InsertByRank(request);
      return;
  }
}

SchedRequest* RequestQueue::Peek() const { return queue_.empty() ? nullptr : queue_.front(); }

void RequestQueue::PopFront() { queue_.pop_front(); }

bool RequestQueue::Remove(const SchedRequest* request) {
  const auto it = std::find(queue_.begin(), queue_.end(), request);
  if (it == queue_.end()) return false;
  queue_.erase(it);
  return true;
}

void RequestQueue::InsertByRank(SchedRequest* request) {
  // After every request that ranks before or equal to it: stable among equals.
  const auto it = std::upper_bound(
      queue_.begin(), queue_.end(), request,
      [](const SchedRequest* a, const SchedRequest* b) { return RanksBefore(*a, *b); });
  queue_.insert(it, request);
}

}  // namespace lychee
