// SPDX-License-Identifier: Apache-2.0
// HostMemoryBytes from sysconf and the cgroup limit files.
#include "common/host_memory.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <string>

namespace lychee {
namespace {

// The number in `path` ("max" or a missing file: 0).
int64_t ReadLimit(const char* path) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text) || text.empty() || text == "max") return 0;
  int64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return error == std::errc() && end == text.data() + text.size() ? value : 0;
}

int64_t ComputeHostMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  int64_t bytes = pages > 0 && page_size > 0 ? int64_t{pages} * page_size : 0;
  for (const char* path :
       {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    const int64_t limit = ReadLimit(path);
    // cgroup v1 reports "no limit" as a huge number; it then loses against physical memory.
    if (limit > 0) bytes = bytes > 0 ? std::min(bytes, limit) : limit;
  }
  return bytes > 0 ? bytes : int64_t{1} << 30;
}

}  // namespace

int64_t HostMemoryBytes() {
  static const int64_t bytes = ComputeHostMemoryBytes();
  return bytes;
}

}  // namespace lychee
