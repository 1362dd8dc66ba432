// SPDX-License-Identifier: Apache-2.0
// Protobuf messages to and from the raw bytes of a call.
//
// LycheeService registers its methods as *raw* callback methods (requests and responses are
// grpc::ByteBuffer) and parses requests itself. The reason: gRPC C++ deserializes a typed
// method's request before any handler runs, and when that fails its handler template answers
// UNIMPLEMENTED with empty details (grpc/grpc#30454; in 1.51 see RunHandler in
// grpcpp/impl/codegen/server_callback_handlers.h: the parse status is dropped). Parsing here
// lets a message that does not parse be answered INVALID_ARGUMENT with a message, counted as a
// rejection like any other invalid request.
#pragma once

#include <fmt/format.h>
#include <grpcpp/impl/codegen/proto_utils.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/status.h>

#include <string>

namespace lychee::grpc_server {

// Parses `bytes` as a `Message`. A call without a message, or bytes that are not a valid
// encoding of `Message`, give INVALID_ARGUMENT naming the message type (never the bytes).
template <typename Message>
grpc::Status ParseMessage(const grpc::ByteBuffer& bytes, Message* message) {
  const std::string& type = Message::descriptor()->full_name();
  if (!bytes.Valid()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        fmt::format("the call carries no {} message", type));
  }
  grpc::ByteBuffer copy(bytes);  // Deserialize consumes its buffer; the copy shares the slices
  if (!grpc::SerializationTraits<Message>::Deserialize(&copy, message).ok()) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        fmt::format("the request is not a valid {} message ({} bytes that do not parse as one)",
                    type, bytes.Length()));
  }
  return grpc::Status::OK;
}

// `message` serialized into `bytes` (INTERNAL only for a message protobuf cannot encode, over
// 2 GiB).
template <typename Message>
grpc::Status SerializeMessage(const Message& message, grpc::ByteBuffer* bytes) {
  bool own_buffer = false;
  grpc::Status status = grpc::SerializationTraits<Message>::Serialize(message, bytes, &own_buffer);
  if (!status.ok()) {
    return grpc::Status(grpc::StatusCode::INTERNAL,
                        fmt::format("cannot serialize a {} message: {}",
                                    Message::descriptor()->full_name(), status.error_message()));
  }
  return grpc::Status::OK;
}

}  // namespace lychee::grpc_server
