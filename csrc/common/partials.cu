#include <algorithm>

#include "launch.h"
#include "partials.h"
#include "reduce.cuh"

namespace swav {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t count) {
  return static_cast<unsigned>(std::min<int64_t>(ceil_div(count, kThreads), int64_t{1} << 20));
}

__global__ void __launch_bounds__(kThreads)
sum_over_splits_kernel(const float* __restrict__ partial, float* __restrict__ out, int64_t outer, int64_t splits,
                       int64_t inner) {
  const int64_t count = outer * inner;
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < count; i += int64_t{gridDim.x} * kThreads) {
    const int64_t o = i / inner, j = i - o * inner;
    const float* p = partial + o * splits * inner + j;
    float acc = 0.f;
    for (int64_t s = 0; s < splits; ++s) acc += p[s * inner];
    out[i] = acc;
  }
}

__global__ void __launch_bounds__(kThreads)
logsumexp_over_splits_kernel(const float* __restrict__ partial_max, const float* __restrict__ partial_sum,
                             float* __restrict__ out_max, float* __restrict__ out_sum, float* __restrict__ out_lse,
                             int64_t outer, int64_t splits, int64_t inner) {
  const int64_t count = outer * inner;
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < count; i += int64_t{gridDim.x} * kThreads) {
    const int64_t o = i / inner, j = i - o * inner;
    const int64_t first = o * splits * inner + j;
    LogSumExp acc{-INFINITY, 0.f};
    for (int64_t s = 0; s < splits; ++s) {
      acc = lse_merge(acc, LogSumExp{partial_max[first + s * inner], partial_sum[first + s * inner]});
    }
    if (out_max != nullptr) out_max[i] = acc.max;
    if (out_sum != nullptr) out_sum[i] = acc.sum;
    if (out_lse != nullptr) out_lse[i] = lse_value(acc);
  }
}

}  // namespace

void sum_over_splits(const float* partial, float* out, int64_t outer, int64_t splits, int64_t inner,
                     cudaStream_t stream) {
  if (outer * inner == 0) return;
  sum_over_splits_kernel<<<grid_for(outer * inner), kThreads, 0, stream>>>(partial, out, outer, splits, inner);
  check_launch("sum_over_splits");
}

void logsumexp_over_splits(const float* partial_max, const float* partial_sum, float* out_max, float* out_sum,
                           float* out_lse, int64_t outer, int64_t splits, int64_t inner, cudaStream_t stream) {
  if (outer * inner == 0) return;
  logsumexp_over_splits_kernel<<<grid_for(outer * inner), kThreads, 0, stream>>>(
      partial_max, partial_sum, out_max, out_sum, out_lse, outer, splits, inner);
  check_launch("logsumexp_over_splits");
}

}  // namespace swav
