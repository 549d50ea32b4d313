// sinkhorn_row_step: one per-sample normalisation of the potentials Sinkhorn, fused with
// the per-prototype sums of the next step and/or the codes (swav_kernels/kernels.py).
// One block per (row block, group). Pass 1: a warp per row computes the exact online
// log-sum-exp of t = x·inv_eps + a[k], kept as its two parts (max, log Σ exp(t − max)).
// Pass 2: a thread per column walks the block's rows, forms log code = (t − max) − log_sum,
// code = exp(log code) and p = exp(log code − log_rows_total), sums p over the rows in order
// and writes one partial per row block; sum_over_splits adds the partials.
//
// Why two parts: |t| reaches thousands when |x|·inv_eps does, and lse = max + log_sum rounded
// to one float there is off by up to half an ulp of |t| (3e-5 at |t| ≈ 1000), an error t − lse
// would pass to every code of the row (a row sum of 1 ± 3e-5). t − max is exact for the codes
// that matter (Sterbenz: t within a factor 2 of max) and log_sum ∈ [0, log cols] is small, so
// each row sums to 1 within float32 rounding.
#include "../common/partials.h"
#include "../common/reduce.cuh"
#include "sinkhorn_common.cuh"

namespace swav {
namespace {

struct RowStepArgs {
  int64_t rows, cols, group_stride, row_stride;
  float inv_eps, log_rows_total;
  const float* col_potential;  // (groups, cols)
  bool normalize_rows;
  int rows_per_block;
  float* partial;  // (groups, row blocks, cols) column-sum partials, or null
  float* codes;    // (groups, rows − codes_from_row, cols), or null
  int64_t codes_from_row;
};

template <typename T>
__global__ void __launch_bounds__(kSinkhornThreads) sinkhorn_row_step_kernel(const T* __restrict__ x, RowStepArgs args) {
  __shared__ float row_max[kSinkhornMaxRowsPerBlock];      // the row lse as two parts:
  __shared__ float row_log_sum[kSinkhornMaxRowsPerBlock];  // lse = row_max + row_log_sum
  const int64_t group = blockIdx.y;
  const int64_t first_row = int64_t{blockIdx.x} * args.rows_per_block;
  const int block_rows =
      static_cast<int>(args.rows - first_row < args.rows_per_block ? args.rows - first_row : args.rows_per_block);
  const T* block_x = x + group * args.group_stride + first_row * args.row_stride;
  const float* potential = args.col_potential + group * args.cols;

  if (args.normalize_rows) {  // pass 1: (max, log sum) of every row of the block, a warp per row
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int r = warp; r < block_rows; r += kSinkhornThreads / 32) {
      const T* row = block_x + r * args.row_stride;
      LogSumExp acc{-INFINITY, 0.f};
      for (int64_t k = lane; k < args.cols; k += 32) {
        lse_add(acc, sinkhorn_logit(to_float(row[k]), args.inv_eps, potential[k]));
      }
      acc = warp_lse_merge(acc);
      if (lane == 0) {
        row_max[r] = acc.max;
        row_log_sum[r] = logf(acc.sum);
      }
    }
    __syncthreads();
  }

  // Rows that contribute to nothing are skipped: without column sums only code rows count.
  int first = 0;
  if (args.partial == nullptr) {
    const int64_t skip = args.codes_from_row - first_row;
    first = skip <= 0 ? 0 : (skip >= block_rows ? block_rows : static_cast<int>(skip));
  }
  const int64_t code_rows = args.rows - args.codes_from_row;
  float* group_codes = args.codes == nullptr ? nullptr : args.codes + group * code_rows * args.cols;
  for (int64_t k = threadIdx.x; k < args.cols; k += kSinkhornThreads) {  // pass 2
    const float a = potential[k];
    float column_sum = 0.f;
    for (int r = first; r < block_rows; ++r) {
      const float t = sinkhorn_logit(to_float(block_x[r * args.row_stride + k]), args.inv_eps, a);
      const float log_code = args.normalize_rows ? (t - row_max[r]) - row_log_sum[r] : t + args.log_rows_total;
      if (args.partial != nullptr) {
        column_sum += expf(args.normalize_rows ? log_code - args.log_rows_total : t);
      }
      const int64_t n = first_row + r;
      if (group_codes != nullptr && n >= args.codes_from_row) {
        group_codes[(n - args.codes_from_row) * args.cols + k] = expf(log_code);
      }
    }
    if (args.partial != nullptr) args.partial[(group * gridDim.x + blockIdx.x) * args.cols + k] = column_sum;
  }
}

}  // namespace

int64_t sinkhorn_row_step_workspace(int64_t groups, int64_t rows, int64_t cols, int64_t rows_per_block,
                                    bool want_column_sums) {
  require_range(rows_per_block, "rows_per_block", 1, kSinkhornMaxRowsPerBlock);
  return want_column_sums ? groups * ceil_div(rows, rows_per_block) * cols : 0;
}

void sinkhorn_row_step(std::uintptr_t x, int64_t groups, int64_t rows, int64_t cols, int64_t group_stride,
                       int64_t row_stride, const std::string& dtype, float inv_eps, std::uintptr_t col_potential,
                       float log_rows_total, bool normalize_rows, int64_t rows_per_block, std::uintptr_t column_sums,
                       std::uintptr_t codes, int64_t codes_from_row, std::uintptr_t workspace,
                       int64_t workspace_floats, std::uintptr_t stream) {
  const DType type = parse_dtype(dtype, "dtype");
  check_sinkhorn_scores(x, type, groups, rows, cols, group_stride, row_stride, rows_per_block);
  require(std::isfinite(inv_eps) && inv_eps > 0.f, "inv_eps must be finite and > 0");
  require(std::isfinite(log_rows_total), "log_rows_total must be finite");
  require_pointer(col_potential, "col_potential", sizeof(float));
  const bool want_column_sums = column_sums != 0;
  if (want_column_sums) require_pointer(column_sums, "column_sums", sizeof(float));
  if (codes != 0) {
    require_pointer(codes, "codes", sizeof(float));
    require_range(codes_from_row, "codes_from_row", 0, rows - 1);
  }
  require(want_column_sums || codes != 0, "at least one of column_sums and codes must be requested");
  require_workspace(workspace, workspace_floats,
                    sinkhorn_row_step_workspace(groups, rows, cols, rows_per_block, want_column_sums));

  const int64_t row_blocks = ceil_div(rows, rows_per_block);
  RowStepArgs args{rows, cols, group_stride, row_stride, inv_eps, log_rows_total,
                   reinterpret_cast<const float*>(col_potential), normalize_rows, static_cast<int>(rows_per_block),
                   want_column_sums ? reinterpret_cast<float*>(workspace) : nullptr,
                   reinterpret_cast<float*>(codes), codes != 0 ? codes_from_row : rows};
  const dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(groups));
  dispatch_dtype(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    sinkhorn_row_step_kernel<T><<<grid, kSinkhornThreads, 0, as_stream(stream)>>>(reinterpret_cast<const T*>(x), args);
  });
  check_launch("sinkhorn_row_step");
  if (want_column_sums) {
    sum_over_splits(args.partial, reinterpret_cast<float*>(column_sums), groups, row_blocks, cols, as_stream(stream));
  }
}

}  // namespace swav
