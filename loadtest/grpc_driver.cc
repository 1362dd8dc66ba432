// SPDX-License-Identifier: Apache-2.0
#include "loadtest/grpc_driver.h"

#include <fmt/format.h>

#include <chrono>

namespace lychee::loadtest {
namespace {

std::chrono::system_clock::time_point DeadlineIn(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::microseconds(static_cast<int64_t>(seconds * 1e6));
}

// grpc::StatusCode has no name function in the C++ API; these are the canonical names.
std::string CodeName(grpc::StatusCode code) {
  static constexpr const char* kNames[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < static_cast<int>(std::size(kNames)) ? kNames[i] : fmt::format("CODE_{}", i);
}

}  // namespace

GrpcDriver::GrpcDriver(const std::string& address)
    : address_(address),
      channel_(grpc::CreateChannel(address, grpc::InsecureChannelCredentials())),
      stub_(v1::LycheeService::NewStub(channel_)) {}

absl::Status GrpcDriver::Probe(double timeout_seconds) {
  if (!channel_->WaitForConnected(DeadlineIn(timeout_seconds))) {
    return absl::UnavailableError(
        fmt::format("cannot reach the gRPC server at {} within {} s", address_, timeout_seconds));
  }
  return VocabSize(timeout_seconds).status();
}

absl::StatusOr<int64_t> GrpcDriver::VocabSize(double timeout_seconds) {
  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(timeout_seconds));
  v1::GetModelInfoResponse info;
  const grpc::Status status = stub_->GetModelInfo(&context, v1::GetModelInfoRequest(), &info);
  if (!status.ok()) {
    return absl::UnavailableError(fmt::format("GetModelInfo on {} failed: {} ({})", address_,
                                              status.error_message(),
                                              CodeName(status.error_code())));
  }
  return info.vocab_size();
}

RequestRecord GrpcDriver::Send(const PlannedRequest& request, const RequestOptions& options,
                               Clock::time_point run_start) {
  v1::GenerateRequest message;
  message.mutable_token_ids()->mutable_ids()->Add(request.prompt.begin(), request.prompt.end());
  v1::SamplingParams* sampling = message.mutable_sampling_params();
  // Greedy and ignore_eos: the output length is exactly output_len, so runs are comparable.
  sampling->set_temperature(0.0f);
  sampling->set_max_tokens(static_cast<int32_t>(request.output_len));
  sampling->set_ignore_eos(true);
  sampling->set_seed(options.seed);
  if (!options.policy.empty()) message.mutable_policy()->set_name(options.policy);
  if (options.budget_tokens > 0) message.mutable_policy()->set_budget_tokens(options.budget_tokens);

  grpc::ClientContext context;
  context.set_deadline(DeadlineIn(options.timeout_seconds));
  TokenClock clock(request.index, static_cast<int64_t>(request.prompt.size()), run_start);
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub_->Generate(&context, message);
  // --cancel-fraction: the client gives up mid-stream (TryCancel is thread-safe).
  CancelTimer cancel(request.cancel_after_seconds, [&context] { context.TryCancel(); });
  v1::GenerateResponse response;
  std::string finish_reason;
  std::string stream_error_code, stream_error;
  while (reader->Read(&response)) {
    switch (response.response_case()) {
      case v1::GenerateResponse::kChunk:
        clock.OnTokens(response.chunk().token_ids_size());
        clock.record().cached_tokens = response.chunk().cached_tokens();
        break;
      case v1::GenerateResponse::kComplete:
        finish_reason = response.complete().finish_reason();
        clock.record().cached_tokens = response.complete().cached_tokens();
        break;
      case v1::GenerateResponse::kError:
        stream_error_code = response.error().code();
        stream_error = response.error().message();
        break;
      case v1::GenerateResponse::RESPONSE_NOT_SET:
        break;
    }
  }
  const grpc::Status status = reader->Finish();
  if (cancel.fired() && !status.ok()) {
    return clock.Finish(false, kClientCancelled, status.error_message());
  }
  if (!status.ok()) {
    return clock.Finish(false, CodeName(status.error_code()), status.error_message());
  }
  if (!stream_error.empty() || !stream_error_code.empty()) {
    return clock.Finish(false, stream_error_code.empty() ? "INTERNAL" : stream_error_code,
                        stream_error);
  }
  if (finish_reason == "abort") return clock.Finish(false, "ABORTED", "the server aborted it");
  if (finish_reason.empty()) {
    return clock.Finish(false, "INCOMPLETE", "the stream ended without a complete message");
  }
  return clock.Finish(true);
}

}  // namespace lychee::loadtest
