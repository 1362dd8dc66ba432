// SPDX-License-Identifier: Apache-2.0
// RequestQueue: the waiting queue, ordered by the scheduling policy.
//
// Policies are a closed set chosen once at construction (STYLE habit 8):
//   kFcfs      first come, first served: arrival order; preempted requests go back to the front.
//   kPriority  lower `priority` first, then earlier arrival (vLLM's priority policy). A preempted
//              request keeps its priority and arrival, so it re-enters at its rank.
// Holds non-owning pointers to requests owned by the Scheduler; engine thread only.
#pragma once

#include <cstddef>
#include <deque>

#include "scheduler/request_state.h"

namespace lychee {

enum class SchedulingPolicy { kFcfs, kPriority };

class RequestQueue {
 public:
  explicit RequestQueue(SchedulingPolicy policy) : policy_(policy) {}

  SchedulingPolicy policy() const { return policy_; }
  bool empty() const { return queue_.empty(); }
  size_t size() const { return queue_.size(); }

  // A new arrival.
  void Add(SchedRequest* request);
  // A preempted request: the front under kFcfs, its rank under kPriority.
  void AddPreempted(SchedRequest* request);
  // The request to admit next (nullptr when empty).
  SchedRequest* Peek() const;
  void PopFront();
  // Removes `request` if queued; returns whether it was.
  bool Remove(const SchedRequest* request);

  // Iteration in admission order.
  auto begin() const { return queue_.begin(); }
  auto end() const { return queue_.end(); }

 private:
  void InsertByRank(SchedRequest* request);

  SchedulingPolicy policy_;
  std::deque<SchedRequest*> queue_;  // kept in admission order for both policies
};

// True when `a` should run before `b` under kPriority: (priority, arrival) ascending.
inline bool RanksBefore(const SchedRequest& a, const SchedRequest& b) {
  if (a.priority != b.priority) return a.priority < b.priority;
  return a.arrival < b.arrival;
}

}  // namespace lychee
