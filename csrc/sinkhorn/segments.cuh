// Device side of segments.h: where row n of group g lives, and the Sinkhorn logit.
#pragma once

#include "../common/dtype.cuh"
#include "segments.h"

namespace swav {

template <typename T>
__device__ __forceinline__ const T* segment_row(const SinkhornSegments& s, int64_t g, int64_t n) {
  if (n < s.queue_rows) return static_cast<const T*>(s.queue) + (g * s.queue_rows + n) * s.cols;
  return static_cast<const T*>(s.batch) + (s.first_row[g] + n - s.queue_rows) * s.cols;
}

// t = x·inv_eps + potential, rounded once (an explicit fma), so that every pass over a row forms
// bit-identical logits and a row normalised by its own log-sum-exp sums to 1 within fp32 rounding.
__device__ __forceinline__ float sinkhorn_logit(float x, float inv_eps, float potential) {
  return __fmaf_rn(x, inv_eps, potential);
}

}  // namespace swav
