// SPDX-License-Identifier: Apache-2.0
// The HTTP status that answers an absl::Status code: one mapping for the OpenAI gateway's
// responses and the gRPC error messages' http_status_code (as vLLM/SGLang workers report it).
#pragma once

#include "absl/status/status.h"

namespace lychee {

// 400 (invalid argument, out of range, failed precondition), 401, 403, 404, 409 (already
// exists, aborted), 429 (resource exhausted), 499 (cancelled), 501, 503 (unavailable), 504
// (deadline exceeded), 500 otherwise; 200 for OK.
int HttpStatusFor(absl::StatusCode code);

}  // namespace lychee
