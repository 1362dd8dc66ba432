// SPDX-License-Identifier: Apache-2.0
// Error-propagation macros over absl::Status / absl::StatusOr.
//
// The packaged Abseil (20220623) lacks status_macros.h, so lychee carries its own:
//   LY_RETURN_IF_ERROR(expr);             returns the status of `expr` when it is not OK.
//   LY_ASSIGN_OR_RETURN(lhs, expr);       unwraps a StatusOr or returns its status.
// Errors are values across modules; LY_CHECK (logging.h) is for bugs only.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LY_STATUS_CONCAT_INNER_(a, b) a##b
#define LY_STATUS_CONCAT_(a, b) LY_STATUS_CONCAT_INNER_(a, b)

#define LY_RETURN_IF_ERROR(expr)                     \
  do {                                               \
    const ::absl::Status ly_status_ = (expr);        \
    if (!ly_status_.ok()) [[unlikely]] return ly_status_; \
  } while (0)

#define LY_ASSIGN_OR_RETURN(lhs, rexpr) \
  LY_ASSIGN_OR_RETURN_IMPL_(LY_STATUS_CONCAT_(ly_statusor_, __LINE__), lhs, rexpr)

#define LY_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr)        \
  auto statusor = (rexpr);                                     \
  if (!statusor.ok()) [[unlikely]] return statusor.status();   \
  lhs = std::move(statusor).value()
