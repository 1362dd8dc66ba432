// SPDX-License-Identifier: Apache-2.0
// Names of request lifecycle states (logs, metrics labels, test messages).
#include "scheduler/request_state.h"

namespace lychee {

std::string_view RequestStatusName(RequestStatus status) {
  switch (status) {
    case RequestStatus::kWaiting:
      return "waiting";
    case RequestStatus::kRunning:
      return "running";
    case RequestStatus::kPreempted:
      return "preempted";
    case RequestStatus::kFinishedStopped:
      return "finished_stopped";
    case RequestStatus::kFinishedLength:
      return "finished_length";
    case RequestStatus::kFinishedAborted:
      return "finished_aborted";
  }
  return "unknown";
}

bool IsFinished(RequestStatus status) {
  switch (status) {
    case RequestStatus::kWaiting:
    case RequestStatus::kRunning:
    case RequestStatus::kPreempted:
      return false;
    case RequestStatus::kFinishedStopped:
    case RequestStatus::kFinishedLength:
    case RequestStatus::kFinishedAborted:
      return true;
  }
  return false;
}

}  // namespace lychee
