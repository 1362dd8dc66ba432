// SPDX-License-Identifier: Apache-2.0
// cuda_gemm_bench: the linear layers of a decode step, cuBLASLt beside the skinny kernel
// (kernels/cuda/skinny_gemm.h) with its plan's open experiments (more loads in flight, warps
// interleaved along k), and all beside a device-to-device copy of the weight, in the same run.
//
// Shapes: Llama-3-8B's qkv (6144 x 4096), o (4096 x 4096), gate_up (28672 x 4096), down (4096 x
// 14336) and lm_head (128256 x 4096, fp32 logits) at m in {1, 2, 4, 8, 16} rows (--rows).
// Random bf16 weights; CUDA events, L2 flushed before every sample (the weight is read from
// DRAM, as in a step) unless --warm, median of --iters. Bandwidth = weight bytes / time; the
// copy's = bytes read + written / time. Prints a table, --json PATH writes it. Without a GPU it
// says so and exits 0.
#include <cuda_runtime_api.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "bench/cuda_bench_util.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/runner_ops.h"
#include "kernels/cuda/skinny_gemm.h"

namespace lychee::cuda {
namespace {

struct Options {
  int iters = 30;
  std::vector<int64_t> rows = {1, 2, 4, 8, 16};
  bool warm = false;
  std::string json_path;
};

struct Layer {
  const char* name;
  int64_t n, k;
  GemmOutType out;
};

absl::Status Run(const Options& o, const DeviceInfo& dev, nlohmann::json& json) {
  const std::vector<Layer> layers = {{"qkv", 6144, 4096, GemmOutType::kBf16},
                                     {"o", 4096, 4096, GemmOutType::kBf16},
                                     {"gate_up", 28672, 4096, GemmOutType::kBf16},
                                     {"down", 4096, 14336, GemmOutType::kBf16},
                                     {"lm_head", 128256, 4096, GemmOutType::kFp32}};
  int64_t max_w = 0, max_rows = 0;
  for (const Layer& l : layers) max_w = std::max(max_w, l.n * l.k);
  for (const int64_t m : o.rows) max_rows = std::max(max_rows, m);
  DeviceBuffer<bf16> w, w_copy, x;
  DeviceBuffer<float> y;
  DeviceBuffer<uint8_t> workspace, flush;
  LY_CUDA_RETURN_IF_NOT_OK(w.Allocate(max_w));
  LY_CUDA_RETURN_IF_NOT_OK(w_copy.Allocate(max_w));
  LY_CUDA_RETURN_IF_NOT_OK(x.Allocate(max_rows * 14336));
  LY_CUDA_RETURN_IF_NOT_OK(y.Allocate(max_rows * 128256));
  LY_CUDA_RETURN_IF_NOT_OK(workspace.Allocate(kGemmWorkspaceBytes));
  LY_CUDA_RETURN_IF_NOT_OK(flush.Allocate(size_t{512} << 20));  // > 2x the 50 MB L2
  cudaStream_t stream;
  LY_CUDA_RETURN_IF_ERROR(cudaStreamCreate(&stream));
  LY_CUDA_RETURN_IF_NOT_OK(FillUniform({w.get(), max_w, 1}, stream));
  LY_CUDA_RETURN_IF_NOT_OK(FillUniform({x.get(), max_rows * 14336, 2}, stream));
  auto gemm = LtGemm::Create();
  if (!gemm.ok()) return gemm.status();
  DeviceBuffer<int32_t> counters;  // the experiments' own (LtGemm keeps its own)
  LY_CUDA_RETURN_IF_NOT_OK(counters.Allocate(kSkinnyGemmMaxTiles));
  LY_CUDA_RETURN_IF_NOT_OK(counters.FillBytes(0));
  // SkinnyGemmPlan's open experiments beside the measured plan: (unroll, interleave).
  const std::pair<int, bool> experiments[] = {{4, true}, {8, false}, {8, true}};

  std::printf("\n%s, %d SMs, %s L2, median of %d\n", dev.name.c_str(), dev.num_sms,
              o.warm ? "warm" : "cold", o.iters);
  std::printf(
      "| layer | m | weight MB | cuBLASLt us | skinny us | splits | cuBLASLt %% of copy | "
      "skinny %% of copy | skinny speed / cuBLASLt | interleaved us | unroll 8 us | "
      "interleaved, unroll 8 us |\n");
  std::printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  nlohmann::json results = nlohmann::json::array();
  double sum_lt = 0.0, sum_skinny = 0.0;
  for (const Layer& l : layers) {
    const double bytes = static_cast<double>(l.n * l.k) * 2.0;
    auto copy = TimeLaunches(o.iters, o.warm, stream, flush, [&]() -> absl::Status {
      LY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(w_copy.get(), w.get(), static_cast<size_t>(bytes),
                                              cudaMemcpyDeviceToDevice, stream));
      return absl::OkStatus();
    });
    if (!copy.ok()) return copy.status();
    const double copy_gbs = 2.0 * bytes / (*copy * 1e3);
    for (const int64_t m : o.rows) {
      GemmArgs a{x.get(), w.get(), y.get(), m, l.n, l.k, l.out, GemmBackend::kCublasLt};
      auto run = [&](GemmBackend b) {
        a.backend = b;
        return TimeLaunches(o.iters, o.warm, stream, flush, [&] {
          return (*gemm)->Run(a, workspace.get(), workspace.bytes(), stream);
        });
      };
      auto lt = run(GemmBackend::kCublasLt);
      if (!lt.ok()) return lt.status();
      auto skinny = run(GemmBackend::kSkinny);
      if (!skinny.ok()) return skinny.status();
      const SkinnyGemmPlan plan = PlanSkinnyGemm(m, l.n, l.k, dev.num_sms, workspace.bytes());
      double experiment_us[3];
      for (int e = 0; e < 3; ++e) {
        SkinnyGemmPlan variant = plan;
        variant.unroll = experiments[e].first;
        variant.interleave = experiments[e].second;
        auto t = TimeLaunches(o.iters, o.warm, stream, flush, [&] {
          return SkinnyGemm(a, variant, workspace.get(), workspace.bytes(), counters.get(), stream);
        });
        if (!t.ok()) return t.status();
        experiment_us[e] = *t;
      }
      const double lt_pct = 100.0 * bytes / (*lt * 1e3) / copy_gbs;
      const double skinny_pct = 100.0 * bytes / (*skinny * 1e3) / copy_gbs;
      sum_lt += *lt;
      sum_skinny += *skinny;
      std::printf(
          "| %s | %lld | %.1f | %.1f | %.1f | %d | %.0f%% | %.0f%% | %.2fx | %.1f | %.1f | %.1f "
          "|\n",
          l.name, static_cast<long long>(m), bytes / 1e6, *lt, *skinny, plan.splits, lt_pct,
          skinny_pct, *lt / *skinny, experiment_us[0], experiment_us[1], experiment_us[2]);
      results.push_back({{"layer", l.name},
                         {"m", m},
                         {"n", l.n},
                         {"k", l.k},
                         {"weight_bytes", bytes},
                         {"cublaslt_us", *lt},
                         {"skinny_us", *skinny},
                         {"skinny_splits", plan.splits},
                         {"skinny_chunks_per_warp", plan.chunks_per_warp},
                         {"skinny_interleaved_us", experiment_us[0]},
                         {"skinny_unroll8_us", experiment_us[1]},
                         {"skinny_interleaved_unroll8_us", experiment_us[2]},
                         {"copy_us", *copy},
                         {"copy_gb_per_s", copy_gbs}});
    }
  }
  std::printf("all layers and rows: cuBLASLt %.1f us, skinny %.1f us (%.2fx)\n", sum_lt, sum_skinny,
              sum_lt / sum_skinny);
  LY_CUDA_RETURN_IF_ERROR(cudaStreamDestroy(stream));
  json = {{"bench", "cuda_gemm"},           {"device", dev.name}, {"num_sms", dev.num_sms},
          {"l2", o.warm ? "warm" : "cold"}, {"iters", o.iters},   {"results", results}};
  return absl::OkStatus();
}

}  // namespace
}  // namespace lychee::cuda

int main(int argc, char** argv) {
  lychee::cuda::Options o;
  CLI::App app{"Decode-step linear layers: cuBLASLt vs the skinny kernel vs a copy"};
  app.add_option("--iters", o.iters, "timed samples per point (median reported)")
      ->check(CLI::Range(1, 10000));
  app.add_option("--rows", o.rows, "batch rows m (<= 16)")
      ->delimiter(',')
      ->check(CLI::Range(1, 16));
  app.add_flag("--warm", o.warm, "do not flush L2 between samples");
  app.add_option("--json", o.json_path, "write the results as JSON to this path");
  CLI11_PARSE(app, argc, argv);
  return lychee::cuda::RunBenchmark(
      "cuda_gemm_bench", o.json_path,
      [&o](const lychee::cuda::DeviceInfo& device, nlohmann::json& json) {
        return lychee::cuda::Run(o, device, json);
      });
}
