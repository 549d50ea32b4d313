// The per-row log-sum-exp the row step and the codes share: a warp per row, lanes strided over k.
#pragma once

#include "../common/reduce.cuh"
#include "segments.cuh"

namespace swav {

constexpr int kRowWarps = 8;  // rows per block

struct RowLogSumExp {
  LogSumExp lse;  // (max_k u, Σ_k exp(u − max)) of u = x·inv_eps + a[k], the same in every lane
  float zero;     // Σ_k 0·x
};

template <typename T>
__device__ __forceinline__ RowLogSumExp row_logsumexp(const T* row, int64_t cols, float inv_eps,
                                                      const float* potential) {
  const int lane = threadIdx.x % 32;
  LogSumExp acc{-INFINITY, 0.f};
  float zero = 0.f;
  for (int64_t k = lane; k < cols; k += 32) {
    const float x = to_float(row[k]);
    lse_add(acc, sinkhorn_logit(x, inv_eps, potential[k]));
    zero += 0.f * x;
  }
  return RowLogSumExp{warp_lse_merge(acc), warp_sum(zero)};
}

}  // namespace swav
