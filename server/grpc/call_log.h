// SPDX-License-Identifier: Apache-2.0
// A server interceptor that reports every finished gRPC call (every service: LycheeService,
// health, reflection) to a callback, for the access log. It sees the call's full method name,
// the status the server sends, the time from the call's start to that status, and the peer.
//
//   builder.experimental().SetInterceptorCreators(CallLogInterceptors(on_call_done));
//
// Threading: `on_call_done` runs on gRPC's threads, once per call that sends a status; it must be
// quick and thread-safe.
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace lychee::grpc_server {

struct CallRecord {
  std::string method;  // "/lychee.v1.LycheeService/Generate"
  int code = 0;        // grpc::StatusCode
  double duration_seconds = 0;
  std::string peer;  // "ipv4:127.0.0.1:53122"
};

using OnCallDone = std::function<void(const CallRecord&)>;

// The interceptor creators for ServerBuilder (empty when `on_call_done` is unset).
std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
CallLogInterceptors(OnCallDone on_call_done);

}  // namespace lychee::grpc_server
