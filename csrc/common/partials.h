// Deterministic second-stage reductions over per-block partial results: kernels that
// split a reduction across blocks write partials (outer, splits, inner), and these
// kernels reduce the middle axis in a fixed order (no atomics, bitwise reproducible).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace swav {

// out[o, i] = Σ_s partial[o, s, i].
void sum_over_splits(const float* partial, float* out, int64_t outer, int64_t splits, int64_t inner,
                     cudaStream_t stream);

// Merges running log-sum-exps (max, sum) over s; writes any of out_max/out_sum (the merged
// pair) and out_lse (max + log sum) that is non-null.
void logsumexp_over_splits(const float* partial_max, const float* partial_sum, float* out_max, float* out_sum,
                           float* out_lse, int64_t outer, int64_t splits, int64_t inner, cudaStream_t stream);

}  // namespace swav
