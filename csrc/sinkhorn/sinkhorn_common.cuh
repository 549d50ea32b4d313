// Pieces shared by the two Sinkhorn kernels.
#pragma once

#include <cstdint>
#include <string>

#include "../common/dtype.cuh"
#include "../common/launch.h"
#include "sinkhorn.h"

namespace swav {

constexpr int kSinkhornThreads = 256;

// t = x·inv_eps + a, rounded once (an explicit fma), so that every pass over a row forms
// bit-identical logits and a row normalised by its own lse sums to 1 within fp32 rounding.
__device__ __forceinline__ float sinkhorn_logit(float x, float inv_eps, float a) {
  return __fmaf_rn(x, inv_eps, a);
}

// Validates the (groups, rows, cols) scores argument shared by both kernels.
inline void check_sinkhorn_scores(std::uintptr_t x, DType type, int64_t groups, int64_t rows, int64_t cols,
                                  int64_t group_stride, int64_t row_stride, int64_t rows_per_block) {
  constexpr int64_t kMax32 = (int64_t{1} << 31) - 1;
  require_pointer(x, "x", element_size(type));
  require_range(groups, "groups", 1, 65535);
  require_range(rows, "rows", 1, kMax32);
  require_range(cols, "cols", 1, kMax32);
  require(row_stride >= cols, "row_stride must be >= cols, got " + std::to_string(row_stride));
  require(group_stride >= rows * row_stride,
          "group_stride must be >= rows * row_stride, got " + std::to_string(group_stride));
  require_range(rows_per_block, "rows_per_block", 1, kSinkhornMaxRowsPerBlock);
}

}  // namespace swav
