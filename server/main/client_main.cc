// SPDX-License-Identifier: Apache-2.0
// lychee-client: a small command-line client of lychee-server's gRPC API.
//
//   lychee-client [--address host:port] [--timeout SECONDS] generate --prompt TEXT
//                 [--max-tokens N --temperature T --top-p P --top-k K --seed S --stop X
//                  --request-id ID --policy NAME --budget-tokens N --max-dropped-mass X
//                  --audit-rate R]
//   lychee-client abort --request-id ID [--request-id ID2 ...]
//   lychee-client health [--service NAME]
//   lychee-client info
//
// generate streams the text to stdout as it arrives and a summary line to stderr (plus the
// policy report's line for a sparse policy); info prints
// model, server and load information as one JSON object. Exit status 0 on success, 1 on any
// error (printed to stderr with its gRPC status code). Single-threaded, synchronous stubs.
#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "lychee/v1/generate.grpc.pb.h"

namespace lychee {
namespace {

struct GlobalFlags {
  std::string address = "localhost:50051";
  double timeout_seconds = 0;  // 0: no deadline
  std::string api_key;         // sent as `authorization: Bearer <key>`; default $LYCHEE_API_KEY
  std::string tls_ca;          // PEM CA: talk TLS and trust this CA
  std::string tls_cert;        // PEM client certificate and key (mutual TLS)
  std::string tls_key;
};

std::string ReadPem(const std::string& path) {
  if (path.empty()) return "";
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Insecure unless --tls-ca is given.
std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(const GlobalFlags& flags) {
  if (flags.tls_ca.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadPem(flags.tls_ca);
  ssl.pem_cert_chain = ReadPem(flags.tls_cert);
  ssl.pem_private_key = ReadPem(flags.tls_key);
  return grpc::SslCredentials(ssl);
}

struct GenerateFlags {
  std::string prompt;
  std::optional<int32_t> max_tokens;
  std::optional<float> temperature;
  std::optional<float> top_p;
  int32_t top_k = 0;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  std::string request_id;
  // Sparsity policy; unset: the server's default_policy.
  std::string policy;
  std::optional<int64_t> budget_tokens;
  std::optional<double> max_dropped_mass;
  std::optional<double> audit_rate;
};

int Fail(const std::string& what, const grpc::Status& status) {
  std::fprintf(stderr, "lychee-client: %s failed: %s (gRPC code %d)\n", what.c_str(),
               status.error_message().c_str(), static_cast<int>(status.error_code()));
  return 1;
}

// The deadline and the API key of every call.
void SetDeadline(grpc::ClientContext& context, const GlobalFlags& flags) {
  if (!flags.api_key.empty()) context.AddMetadata("authorization", "Bearer " + flags.api_key);
  if (flags.timeout_seconds > 0) {
    context.set_deadline(
        std::chrono::system_clock::now() +
        std::chrono::microseconds(static_cast<int64_t>(flags.timeout_seconds * 1e6)));
  }
}

int Generate(v1::LycheeService::Stub& stub, const GlobalFlags& global, const GenerateFlags& f) {
  v1::GenerateRequest request;
  request.set_request_id(f.request_id);
  request.set_text(f.prompt);
  v1::SamplingParams* sp = request.mutable_sampling_params();
  if (f.max_tokens) sp->set_max_tokens(*f.max_tokens);
  if (f.temperature) sp->set_temperature(*f.temperature);
  if (f.top_p) sp->set_top_p(*f.top_p);
  sp->set_top_k(f.top_k);
  if (f.seed) sp->set_seed(*f.seed);
  for (const std::string& s : f.stop) sp->add_stop(s);
  v1::SparsityPolicy* policy = request.mutable_policy();
  policy->set_name(f.policy);
  if (f.budget_tokens) policy->set_budget_tokens(*f.budget_tokens);
  if (f.max_dropped_mass) policy->set_max_dropped_mass(*f.max_dropped_mass);
  if (f.audit_rate) policy->set_audit_rate(*f.audit_rate);

  grpc::ClientContext context;
  SetDeadline(context, global);
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
      stub.Generate(&context, request);
  v1::GenerateResponse response;
  std::optional<v1::GenerateComplete> complete;
  std::string error;
  while (reader->Read(&response)) {
    switch (response.response_case()) {
      case v1::GenerateResponse::kChunk:
        std::fwrite(response.chunk().text().data(), 1, response.chunk().text().size(), stdout);
        std::fflush(stdout);
        break;
      case v1::GenerateResponse::kComplete:
        complete = response.complete();
        break;
      case v1::GenerateResponse::kError:
        error = response.error().message();
        break;
      case v1::GenerateResponse::RESPONSE_NOT_SET:
        break;
    }
  }
  std::fputc('\n', stdout);
  const grpc::Status status = reader->Finish();
  if (!status.ok()) return Fail("generate", status);
  if (!error.empty()) {
    std::fprintf(stderr, "lychee-client: generate failed: %s\n", error.c_str());
    return 1;
  }
  if (complete) {
    std::fprintf(stderr,
                 "[request %s: finish_reason=%s prompt_tokens=%d completion_tokens=%d "
                 "cached_tokens=%d ttft=%.3fs e2e=%.3fs]\n",
                 response.request_id().c_str(), complete->finish_reason().c_str(),
                 complete->prompt_tokens(), complete->completion_tokens(),
                 complete->cached_tokens(), complete->ttft_seconds(), complete->e2e_seconds());
    if (complete->has_policy_report()) {
      const v1::PolicyReport& r = complete->policy_report();
      std::fprintf(stderr,
                   "[policy %s: max_bound=%g mean_bound=%g max_exact=%g audited_steps=%lld "
                   "kv_read_fraction=%.4f widenings=%lld selections=%lld reused=%lld "
                   "dense_fallbacks=%lld cache_corrections=%lld selection_seconds=%.6f]\n",
                   r.policy().c_str(), r.max_bound(), r.mean_bound(), r.max_exact(),
                   static_cast<long long>(r.audited_steps()), r.kv_read_fraction(),
                   static_cast<long long>(r.widenings()),
                   static_cast<long long>(r.head_selections()), static_cast<long long>(r.reused()),
                   static_cast<long long>(r.dense_fallbacks()),
                   static_cast<long long>(r.cache_corrections()), r.selection_seconds());
    }
  }
  return 0;
}

int Abort(v1::LycheeService::Stub& stub, const GlobalFlags& global,
          const std::vector<std::string>& ids) {
  v1::AbortRequest request;
  for (const std::string& id : ids) request.add_request_ids(id);
  v1::AbortResponse response;
  grpc::ClientContext context;
  SetDeadline(context, global);
  const grpc::Status status = stub.Abort(&context, request, &response);
  if (!status.ok()) return Fail("abort", status);
  return 0;
}

int Health(const std::shared_ptr<grpc::Channel>& channel, const GlobalFlags& global,
           const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::ClientContext context;
  SetDeadline(context, global);
  const grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return Fail("health", status);
  std::printf("%s\n",
              grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status()).c_str());
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

// Calls one unary introspection RPC and stores its JSON form under `key`.
template <typename Request, typename Response, typename Method>
int InfoPart(v1::LycheeService::Stub& stub, const GlobalFlags& global, Method method,
             const char* key, nlohmann::json& out) {
  Request request;
  Response response;
  grpc::ClientContext context;
  SetDeadline(context, global);
  const grpc::Status status = (stub.*method)(&context, request, &response);
  if (!status.ok()) return Fail(key, status);
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(response, &json, options).ok()) {
    std::fprintf(stderr, "lychee-client: cannot print %s as JSON\n", key);
    return 1;
  }
  out[key] = nlohmann::json::parse(json);
  return 0;
}

int Info(v1::LycheeService::Stub& stub, const GlobalFlags& global) {
  using Stub = v1::LycheeService::Stub;
  nlohmann::json out = nlohmann::json::object();
  if (InfoPart<v1::GetModelInfoRequest, v1::GetModelInfoResponse>(
          stub, global,
          static_cast<grpc::Status (Stub::*)(grpc::ClientContext*, const v1::GetModelInfoRequest&,
                                             v1::GetModelInfoResponse*)>(&Stub::GetModelInfo),
          "model", out) != 0 ||
      InfoPart<v1::GetServerInfoRequest, v1::GetServerInfoResponse>(
          stub, global,
          static_cast<grpc::Status (Stub::*)(grpc::ClientContext*, const v1::GetServerInfoRequest&,
                                             v1::GetServerInfoResponse*)>(&Stub::GetServerInfo),
          "server", out) != 0 ||
      InfoPart<v1::GetLoadsRequest, v1::GetLoadsResponse>(
          stub, global,
          static_cast<grpc::Status (Stub::*)(grpc::ClientContext*, const v1::GetLoadsRequest&,
                                             v1::GetLoadsResponse*)>(&Stub::GetLoads),
          "loads", out) != 0) {
    return 1;
  }
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

int Run(int argc, char** argv) {
  CLI::App app{"lychee-client: talk to lychee-server over gRPC"};
  app.require_subcommand(1);
  GlobalFlags global;
  app.add_option("--address", global.address, "server host:port")->capture_default_str();
  app.add_option("--timeout", global.timeout_seconds, "deadline in seconds (0: none)");
  app.add_option("--api-key", global.api_key, "API key (default: $LYCHEE_API_KEY)");
  app.add_option("--tls-ca", global.tls_ca, "PEM CA file: use TLS and trust this CA");
  app.add_option("--tls-cert", global.tls_cert, "PEM client certificate (mutual TLS)");
  app.add_option("--tls-key", global.tls_key, "PEM key of --tls-cert");

  GenerateFlags gen;
  CLI::App* generate = app.add_subcommand("generate", "stream a completion of --prompt");
  generate->add_option("--prompt", gen.prompt, "prompt text")->required();
  generate->add_option("--max-tokens", gen.max_tokens, "tokens to generate at most");
  generate->add_option("--temperature", gen.temperature, "0: greedy (default 1)");
  generate->add_option("--top-p", gen.top_p, "nucleus sampling mass");
  generate->add_option("--top-k", gen.top_k, "keep the k most likely tokens (0: off)");
  generate->add_option("--seed", gen.seed, "sampling seed");
  generate->add_option("--stop", gen.stop, "stop string (repeatable)");
  generate->add_option("--request-id", gen.request_id, "request id (for abort)");
  generate->add_option("--policy", gen.policy,
                       "sparsity policy: dense, streaming, quest, lychee, prhs (default: the "
                       "server's)");
  generate->add_option("--budget-tokens", gen.budget_tokens, "KV tokens per KV head and step");
  generate->add_option("--max-dropped-mass", gen.max_dropped_mass,
                       "certified dropped-mass bound per layer, KV head and step, [0, 1]");
  generate->add_option("--audit-rate", gen.audit_rate,
                       "fraction of sparse decode steps also run densely (exact dropped mass)");

  std::vector<std::string> abort_ids;
  CLI::App* abort = app.add_subcommand("abort", "abort live requests by id");
  abort->add_option("--request-id", abort_ids, "request id (repeatable)")->required();

  std::string health_service;
  CLI::App* health = app.add_subcommand("health", "grpc.health.v1 check (exit 0 if SERVING)");
  health->add_option("--service", health_service, "service name (default: the whole server)");

  CLI::App* info = app.add_subcommand("info", "model, server and load information as JSON");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 1;
  }

  if (global.api_key.empty()) {
    if (const char* key = std::getenv("LYCHEE_API_KEY"); key != nullptr) global.api_key = key;
  }
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateChannel(global.address, ChannelCredentials(global));
  std::unique_ptr<v1::LycheeService::Stub> stub = v1::LycheeService::NewStub(channel);
  if (generate->parsed()) return Generate(*stub, global, gen);
  if (abort->parsed()) return Abort(*stub, global, abort_ids);
  if (health->parsed()) return Health(channel, global, health_service);
  if (info->parsed()) return Info(*stub, global);
  return 1;
}

}  // namespace
}  // namespace lychee

int main(int argc, char** argv) { return lychee::Run(argc, argv); }
