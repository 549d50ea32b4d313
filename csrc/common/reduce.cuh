// Warp- and block-wide reductions, and the running log-sum-exp the kernels share.
#pragma once

#include <cmath>

#include "dtype.cuh"

namespace swav {

// Running (max, Σ exp(x - max)) pair of an online log-sum-exp.
struct LogSumExp {
  float max;
  float sum;
};

// Adds the term exp(t) to a running log-sum-exp; t = -inf adds nothing.
__device__ __forceinline__ void lse_add(LogSumExp& acc, float t) {
  if (t > acc.max) {
    acc.sum = acc.sum * expf(acc.max - t) + 1.f;  // expf(-inf) = 0 on the first term
    acc.max = t;
  } else if (t != -INFINITY) {
    acc.sum += expf(t - acc.max);
  }
}

__device__ __forceinline__ LogSumExp lse_merge(LogSumExp a, LogSumExp b) {
  const float m = fmaxf(a.max, b.max);
  if (m == -INFINITY) return {m, a.sum + b.sum};  // both empty: 0, unless a NaN term was added to either
  return {m, a.sum * expf(a.max - m) + b.sum * expf(b.max - m)};
}

__device__ __forceinline__ float lse_value(LogSumExp a) { return a.max + logf(a.sum); }

// Merges over the lanes whose index differs in the bits of [1, width); width a power of 2.
template <int kWidth = 32>
__device__ __forceinline__ LogSumExp warp_lse_merge(LogSumExp value) {
  for (int offset = kWidth / 2; offset > 0; offset /= 2) {
    LogSumExp other{__shfl_xor_sync(0xffffffffu, value.max, offset),
                    __shfl_xor_sync(0xffffffffu, value.sum, offset)};
    value = lse_merge(value, other);
  }
  return value;
}

__device__ __forceinline__ float warp_sum(float value) {
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

// Block-wide merge, fixed order (deterministic); valid in every thread. `scratch` holds
// blockDim.x / 32 entries; the caller must __syncthreads() before reusing it.
__device__ __forceinline__ LogSumExp block_lse_merge(LogSumExp value, LogSumExp* scratch) {
  value = warp_lse_merge(value);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  return warp_lse_merge(lane < warps ? scratch[lane] : LogSumExp{-INFINITY, 0.f});
}

// Block-wide sum, fixed order (deterministic); valid in every thread. Same scratch rules.
__device__ __forceinline__ float block_sum(float value, float* scratch) {
  value = warp_sum(value);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  return warp_sum(lane < warps ? scratch[lane] : 0.f);
}

}  // namespace swav
