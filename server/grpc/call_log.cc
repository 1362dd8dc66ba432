// SPDX-License-Identifier: Apache-2.0
// The call-log interceptor (see call_log.h).
#include "server/grpc/call_log.h"

#include <grpcpp/server_context.h>

#include <chrono>
#include <utility>

namespace lychee::grpc_server {
namespace {

namespace gx = grpc::experimental;

class CallLogInterceptor final : public gx::Interceptor {
 public:
  CallLogInterceptor(gx::ServerRpcInfo* info, const OnCallDone* on_call_done)
      : info_(info), on_call_done_(on_call_done), start_(std::chrono::steady_clock::now()) {}

  void Intercept(gx::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(gx::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      CallRecord record;
      record.method = info_->method() == nullptr ? "-" : info_->method();
      record.code = static_cast<int>(status.error_code());
      record.duration_seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      if (info_->server_context() != nullptr) record.peer = info_->server_context()->peer();
      (*on_call_done_)(record);
    }
    methods->Proceed();
  }

 private:
  gx::ServerRpcInfo* const info_;
  const OnCallDone* const on_call_done_;  // owned by the factory, which outlives the server's calls
  const std::chrono::steady_clock::time_point start_;
};

class CallLogFactory final : public gx::ServerInterceptorFactoryInterface {
 public:
  explicit CallLogFactory(OnCallDone on_call_done) : on_call_done_(std::move(on_call_done)) {}
  gx::Interceptor* CreateServerInterceptor(gx::ServerRpcInfo* info) override {
    return new CallLogInterceptor(info, &on_call_done_);  // gRPC owns and deletes it
  }

 private:
  const OnCallDone on_call_done_;
};

}  // namespace

std::vector<std::unique_ptr<gx::ServerInterceptorFactoryInterface>> CallLogInterceptors(
    OnCallDone on_call_done) {
  std::vector<std::unique_ptr<gx::ServerInterceptorFactoryInterface>> creators;
  if (on_call_done) creators.push_back(std::make_unique<CallLogFactory>(std::move(on_call_done)));
  return creators;
}

}  // namespace lychee::grpc_server
