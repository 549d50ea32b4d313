// Row-parallel kernels of the swapped-prediction cross-entropy: one block per score row
// r = v·B + b; the row's log-sum-exp is shared by every (assign crop, v) pair, and the
// cross terms read the code rows codes[a, b, :] of the assign crops other than v.
#include <cmath>

#include "../common/launch.h"
#include "../common/reduce.cuh"
#include "cross_entropy.h"

namespace swav {
namespace {

constexpr int kThreads = 256;

struct AssignCrops {
  int count;
  int crop[kMaxAssignCrops];
};

struct RowLayout {
  int64_t cols, row_stride, batch;
  float inv_tau;
};

// Σ_{a: A[a] ≠ crop} codes[a, b, k].
__device__ __forceinline__ float other_codes_sum(const float* __restrict__ codes, const AssignCrops& assign,
                                                 int64_t crop, int64_t b, int64_t k, const RowLayout& layout) {
  float q = 0.f;
  for (int a = 0; a < assign.count; ++a) {
    if (assign.crop[a] != crop) q += codes[(a * layout.batch + b) * layout.cols + k];
  }
  return q;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
cross_entropy_forward_kernel(const T* __restrict__ s, const float* __restrict__ codes, AssignCrops assign,
                             RowLayout layout, float* __restrict__ lse, float* __restrict__ cross) {
  __shared__ LogSumExp lse_scratch[kThreads / 32];
  __shared__ float sum_scratch[kThreads / 32];
  const int64_t r = blockIdx.x, crop = r / layout.batch, b = r % layout.batch;
  const T* row = s + r * layout.row_stride;
  LogSumExp acc{-INFINITY, 0.f};
  float dot = 0.f;
  for (int64_t k = threadIdx.x; k < layout.cols; k += kThreads) {
    const float value = to_float(row[k]);
    lse_add(acc, value * layout.inv_tau);
    dot += other_codes_sum(codes, assign, crop, b, k, layout) * value;
  }
  acc = block_lse_merge(acc, lse_scratch);
  dot = block_sum(dot, sum_scratch);
  if (threadIdx.x == 0) {
    lse[r] = lse_value(acc);
    cross[r] = dot;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
cross_entropy_backward_kernel(const T* __restrict__ s, const float* __restrict__ codes,
                              const float* __restrict__ lse, const float* __restrict__ row_weight,
                              const float* __restrict__ scale, AssignCrops assign, RowLayout layout,
                              T* __restrict__ grad) {
  const int64_t r = blockIdx.x, crop = r / layout.batch, b = r % layout.batch;
  const float row_lse = lse[r], weight = row_weight[r], factor = *scale;
  const T* row = s + r * layout.row_stride;
  T* grad_row = grad + r * layout.cols;
  for (int64_t k = threadIdx.x; k < layout.cols; k += kThreads) {
    const float softmax = expf(to_float(row[k]) * layout.inv_tau - row_lse);
    const float g = factor * (weight * softmax - other_codes_sum(codes, assign, crop, b, k, layout));
    grad_row[k] = from_float<T>(g);
  }
}

AssignCrops check_arguments(std::uintptr_t s, std::uintptr_t codes, DType type, int64_t rows, int64_t cols,
                            int64_t row_stride, int64_t batch, const std::vector<int64_t>& crops_for_assign,
                            float inv_tau) {
  constexpr int64_t kMax32 = (int64_t{1} << 31) - 1;
  require_pointer(s, "s", element_size(type));
  require_pointer(codes, "codes", sizeof(float));
  require_range(rows, "rows", 1, kMax32);
  require_range(cols, "cols", 1, kMax32);
  require(row_stride >= cols, "row_stride must be >= cols, got " + std::to_string(row_stride));
  require_range(batch, "batch", 1, rows);
  require(rows % batch == 0, "rows must be a multiple of batch, got rows=" + std::to_string(rows) +
                                 " and batch=" + std::to_string(batch));
  require(std::isfinite(inv_tau) && inv_tau > 0.f, "inv_tau must be finite and > 0");
  const int64_t crops = rows / batch;
  require(!crops_for_assign.empty() && crops_for_assign.size() <= static_cast<size_t>(kMaxAssignCrops),
          "crops_for_assign must hold 1 to " + std::to_string(kMaxAssignCrops) + " crops, got " +
              std::to_string(crops_for_assign.size()));
  AssignCrops assign{};
  assign.count = static_cast<int>(crops_for_assign.size());
  for (int a = 0; a < assign.count; ++a) {
    require_range(crops_for_assign[a], "crops_for_assign entry", 0, crops - 1);
    assign.crop[a] = static_cast<int>(crops_for_assign[a]);
  }
  return assign;
}

}  // namespace

void scores_cross_entropy_forward(std::uintptr_t s, std::uintptr_t codes, int64_t rows, int64_t cols,
                                  int64_t row_stride, int64_t batch, const std::vector<int64_t>& crops_for_assign,
                                  const std::string& dtype, float inv_tau, std::uintptr_t lse, std::uintptr_t cross,
                                  std::uintptr_t stream) {
  const DType type = parse_dtype(dtype, "dtype");
  const AssignCrops assign = check_arguments(s, codes, type, rows, cols, row_stride, batch, crops_for_assign, inv_tau);
  require_pointer(lse, "lse", sizeof(float));
  require_pointer(cross, "cross", sizeof(float));
  const RowLayout layout{cols, row_stride, batch, inv_tau};
  dispatch_dtype(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    cross_entropy_forward_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, as_stream(stream)>>>(
        reinterpret_cast<const T*>(s), reinterpret_cast<const float*>(codes), assign, layout,
        reinterpret_cast<float*>(lse), reinterpret_cast<float*>(cross));
  });
  check_launch("scores_cross_entropy_forward");
}

void scores_cross_entropy_backward(std::uintptr_t s, std::uintptr_t codes, std::uintptr_t lse,
                                   std::uintptr_t row_weight, std::uintptr_t scale, int64_t rows, int64_t cols, int64_t row_stride, int64_t batch,
                                   const std::vector<int64_t>& crops_for_assign, const std::string& dtype,
                                   float inv_tau, std::uintptr_t grad, std::uintptr_t stream) {
  const DType type = parse_dtype(dtype, "dtype");
  const AssignCrops assign = check_arguments(s, codes, type, rows, cols, row_stride, batch, crops_for_assign, inv_tau);
  require_pointer(lse, "lse", sizeof(float));
  require_pointer(row_weight, "row_weight", sizeof(float));
  require_pointer(scale, "scale", sizeof(float));
  require_pointer(grad, "grad", element_size(type));
  const RowLayout layout{cols, row_stride, batch, inv_tau};
  dispatch_dtype(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    cross_entropy_backward_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, as_stream(stream)>>>(
        reinterpret_cast<const T*>(s), reinterpret_cast<const float*>(codes), reinterpret_cast<const float*>(lse),
        reinterpret_cast<const float*>(row_weight), reinterpret_cast<const float*>(scale), assign, layout,
        reinterpret_cast<T*>(grad));
  });
  check_launch("scores_cross_entropy_backward");
}

}  // namespace swav
