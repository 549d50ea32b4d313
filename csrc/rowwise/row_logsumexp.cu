// out[r] = log Σ_k exp(scale · x[r, k]): the per-row log-sum-exp of the temperature softmax
// (DESIGN §1, lse(s/τ) with scale = 1/τ). One block per row, online max/sum in fp32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "../common/launch.h"
#include "../common/reduce.cuh"
#include "row_logsumexp.h"

namespace swav {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads)
row_logsumexp_kernel(const T* __restrict__ x, float* __restrict__ out, int64_t cols, int64_t row_stride, float scale) {
  __shared__ LogSumExp scratch[kThreads / 32];
  const T* row = x + static_cast<int64_t>(blockIdx.x) * row_stride;
  LogSumExp acc{-INFINITY, 0.f};
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
    acc = combine(acc, LogSumExp{to_float(row[c]) * scale, 1.f});
  }
  acc = block_combine(acc, scratch);
  if (threadIdx.x == 0) out[blockIdx.x] = acc.max + logf(acc.sum);
}

template <typename T>
void launch(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t cols, int64_t row_stride, float scale,
            cudaStream_t stream) {
  row_logsumexp_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
      reinterpret_cast<const T*>(x), reinterpret_cast<float*>(out), cols, row_stride, scale);
}

}  // namespace

void row_logsumexp(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t cols, int64_t row_stride,
                   const std::string& dtype, float scale, std::uintptr_t stream) {
  const DType type = parse_dtype(dtype, "dtype");
  require(x != 0, "x must be a non-null device pointer");
  require(out != 0, "out must be a non-null device pointer");
  require(rows >= 0 && rows < (int64_t{1} << 31), "rows must be in [0, 2^31), got " + std::to_string(rows));
  require(cols >= 1, "cols must be >= 1, got " + std::to_string(cols));
  require(row_stride >= cols, "row_stride must be >= cols, got " + std::to_string(row_stride));
  require(std::isfinite(scale), "scale must be finite");
  if (rows == 0) return;
  switch (type) {
    case DType::kFloat32: launch<float>(x, out, rows, cols, row_stride, scale, as_stream(stream)); break;
    case DType::kFloat16: launch<__half>(x, out, rows, cols, row_stride, scale, as_stream(stream)); break;
    case DType::kBFloat16: launch<__nv_bfloat16>(x, out, rows, cols, row_stride, scale, as_stream(stream)); break;
  }
  check_launch("row_logsumexp");
}

}  // namespace swav
