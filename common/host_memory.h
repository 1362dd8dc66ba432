// SPDX-License-Identifier: Apache-2.0
// HostMemoryBytes: how much RAM this process may use, for sizing CPU buffers (the CPU KV cache)
// from a fraction of it: the machine's physical memory, or the cgroup's memory limit when a
// container sets a lower one (cgroup v2 memory.max, else v1 memory.limit_in_bytes).
#pragma once

#include <cstdint>

namespace lychee {

// Bytes of RAM available to this process as above; read once, then cached. Never 0: falls back
// to 1 GiB when the system reports nothing usable.
int64_t HostMemoryBytes();

}  // namespace lychee
