// SPDX-License-Identifier: Apache-2.0
// LY_HOST_DEVICE marks helpers that both host code (g++) and kernels (nvcc) call.
#pragma once

#if defined(__CUDACC__)
#define LY_HOST_DEVICE __host__ __device__
#else
#define LY_HOST_DEVICE
#endif
