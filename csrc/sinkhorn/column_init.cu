// sinkhorn_column_init: per prototype k, the running log-sum-exp of x[g, n, k]·inv_eps over
// the rows n (the exact first per-prototype step of the potentials Sinkhorn). One block per
// (row block, group); a thread per column walks the block's rows; the per-row-block
// partials are merged in a fixed order by logsumexp_over_splits.
#include "../common/partials.h"
#include "../common/reduce.cuh"
#include "sinkhorn_common.cuh"

namespace swav {
namespace {

template <typename T>
__global__ void __launch_bounds__(kSinkhornThreads)
sinkhorn_column_init_kernel(const T* __restrict__ x, int64_t rows, int64_t cols, int64_t group_stride,
                            int64_t row_stride, float inv_eps, int rows_per_block, float* __restrict__ partial_max,
                            float* __restrict__ partial_sum) {
  const int64_t group = blockIdx.y;
  const int64_t first_row = int64_t{blockIdx.x} * rows_per_block;
  const int block_rows = static_cast<int>(rows - first_row < rows_per_block ? rows - first_row : rows_per_block);
  const T* block_x = x + group * group_stride + first_row * row_stride;
  const int64_t out_offset = (group * gridDim.x + blockIdx.x) * cols;
  for (int64_t k = threadIdx.x; k < cols; k += kSinkhornThreads) {
    LogSumExp acc{-INFINITY, 0.f};
    for (int r = 0; r < block_rows; ++r) lse_add(acc, to_float(block_x[r * row_stride + k]) * inv_eps);
    partial_max[out_offset + k] = acc.max;
    partial_sum[out_offset + k] = acc.sum;
  }
}

}  // namespace

int64_t sinkhorn_column_init_workspace(int64_t groups, int64_t rows, int64_t cols, int64_t rows_per_block) {
  require_range(rows_per_block, "rows_per_block", 1, kSinkhornMaxRowsPerBlock);
  return 2 * groups * ceil_div(rows, rows_per_block) * cols;
}

void sinkhorn_column_init(std::uintptr_t x, int64_t groups, int64_t rows, int64_t cols, int64_t group_stride,
                          int64_t row_stride, const std::string& dtype, float inv_eps, int64_t rows_per_block,
                          std::uintptr_t col_max, std::uintptr_t col_sum, std::uintptr_t workspace,
                          int64_t workspace_floats, std::uintptr_t stream) {
  const DType type = parse_dtype(dtype, "dtype");
  check_sinkhorn_scores(x, type, groups, rows, cols, group_stride, row_stride, rows_per_block);
  require(std::isfinite(inv_eps) && inv_eps > 0.f, "inv_eps must be finite and > 0");
  require_pointer(col_max, "col_max", sizeof(float));
  require_pointer(col_sum, "col_sum", sizeof(float));
  const int64_t row_blocks = ceil_div(rows, rows_per_block);
  require_workspace(workspace, workspace_floats, sinkhorn_column_init_workspace(groups, rows, cols, rows_per_block));

  float* partial_max = reinterpret_cast<float*>(workspace);
  float* partial_sum = partial_max + groups * row_blocks * cols;
  const dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(groups));
  dispatch_dtype(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    sinkhorn_column_init_kernel<T><<<grid, kSinkhornThreads, 0, as_stream(stream)>>>(
        reinterpret_cast<const T*>(x), rows, cols, group_stride, row_stride, inv_eps,
        static_cast<int>(rows_per_block), partial_max, partial_sum);
  });
  check_launch("sinkhorn_column_init");
  logsumexp_over_splits(partial_max, partial_sum, reinterpret_cast<float*>(col_max),
                        reinterpret_cast<float*>(col_sum), nullptr, groups, row_blocks, cols, as_stream(stream));
}

}  // namespace swav
