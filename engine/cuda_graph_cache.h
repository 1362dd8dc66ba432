// SPDX-License-Identifier: Apache-2.0
// CudaGraphCache: CUDA graphs of decode steps, captured once per (batch bucket, context bucket)
// and replayed. A decode step's kernels depend on the host only through sizes fixed at capture
// (rows, the decode plan's context cap) and through device buffers whose contents change each
// step (token ids, positions, KV slots, block tables, lengths: uploaded before the launch), so a
// step padded to its bucket replays the captured graph with fresh inputs. Replaying ~15 nodes per
// layer as one launch removes the per-kernel launch cost that dominates small-batch decode.
//
// Buckets: batch sizes 1, 2, 4, 8, then multiples of 8 (vLLM's choice: padding wastes at most
// 7 rows); contexts the next power of two from 1024 (the decode kernel's split plan depends on the
// length cap, so one cap per octave keeps at least half of every split busy). Graphs are captured
// lazily, at most `max_graphs` of them; past that, steps run eagerly. Not thread-safe.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <map>
#include <utility>
#include <vector>

#include "absl/status/status.h"

namespace lychee {

int64_t DecodeBatchBucket(int64_t batch);
int64_t DecodeContextBucket(int64_t max_context, int64_t cap);

class CudaGraphCache {
 public:
  explicit CudaGraphCache(size_t max_graphs = 512) : max_graphs_(max_graphs) {}
  ~CudaGraphCache();
  CudaGraphCache(const CudaGraphCache&) = delete;
  CudaGraphCache& operator=(const CudaGraphCache&) = delete;

  struct Key {
    int64_t batch = 0, context = 0;
    // Sparse steps: every host-side value their launches depend on (CudaSparseDecode::GraphKey);
    // empty for dense steps.
    std::vector<int64_t> sparse;
    auto operator<=>(const Key&) const = default;
  };

  // True when a graph for `key` exists or may still be captured.
  bool CanLaunch(const Key& key) const {
    return graphs_.count(key) > 0 || graphs_.size() < max_graphs_;
  }
  // Replays the graph for `key` on `stream`, first capturing `enqueue` (which must only enqueue
  // work on `stream`: no sync, no allocation) when there is none yet.
  absl::Status Launch(const Key& key, cudaStream_t stream,
                      const std::function<absl::Status()>& enqueue);

  size_t num_graphs() const { return graphs_.size(); }
  int64_t num_replays() const { return replays_; }

 private:
  size_t max_graphs_;
  std::map<Key, cudaGraphExec_t> graphs_;
  int64_t replays_ = 0;
};

}  // namespace lychee
