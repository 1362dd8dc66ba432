// SPDX-License-Identifier: Apache-2.0
// Driver over lychee.v1.LycheeService/Generate: token ids in, streamed chunks out. One channel
// (one HTTP/2 connection) is shared by all threads, as a gRPC client normally does; each request
// uses the synchronous streaming stub on its caller's thread with a deadline of --timeout.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "loadtest/driver.h"
#include "lychee/v1/generate.grpc.pb.h"

namespace lychee::loadtest {

class GrpcDriver : public Driver {
 public:
  explicit GrpcDriver(const std::string& address);

  absl::Status Probe(double timeout_seconds) override;
  RequestRecord Send(const PlannedRequest& request, const RequestOptions& options,
                     Clock::time_point run_start) override;

  // The served model's vocabulary size (GetModelInfo), to draw prompt token ids from.
  absl::StatusOr<int64_t> VocabSize(double timeout_seconds);

 private:
  std::string address_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::LycheeService::Stub> stub_;
};

}  // namespace lychee::loadtest
