// Block-wide reductions used by the row-wise kernels.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

namespace swav {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// Running (max, Σ exp(x - max)) pair of an online log-sum-exp.
struct LogSumExp {
  float max;
  float sum;
};

__device__ __forceinline__ LogSumExp combine(LogSumExp a, LogSumExp b) {
  float m = fmaxf(a.max, b.max);
  if (m == -INFINITY) return {m, 0.f};
  return {m, a.sum * __expf(a.max - m) + b.sum * __expf(b.max - m)};
}

// Reduces one LogSumExp per thread to one per block; the result is valid in every thread.
// `scratch` must hold blockDim.x / 32 entries.
__device__ __forceinline__ LogSumExp block_combine(LogSumExp value, LogSumExp* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) {
    LogSumExp other{__shfl_xor_sync(0xffffffffu, value.max, offset),
                    __shfl_xor_sync(0xffffffffu, value.sum, offset)};
    value = combine(value, other);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  value = lane < warps ? scratch[lane] : LogSumExp{-INFINITY, 0.f};
  for (int offset = 16; offset > 0; offset /= 2) {
    LogSumExp other{__shfl_xor_sync(0xffffffffu, value.max, offset),
                    __shfl_xor_sync(0xffffffffu, value.sum, offset)};
    value = combine(value, other);
  }
  return value;
}

}  // namespace swav
