// sinkhorn_columns: the column step (steps.h). A block owns 32 prototypes of one group (a lane per
// prototype, so each warp reads 32 consecutive values of a row) and all of its rows: warp w walks
// rows w, w + 8, …, keeping a running log-sum-exp per prototype; the 8 warps' pairs are merged in
// warp order through shared memory. No other block touches these prototypes: no partials.
#include "../common/reduce.cuh"
#include "segments.cuh"
#include "steps.h"

namespace swav {
namespace {

constexpr int kColumnWarps = 8;
constexpr int kColumnsPerBlock = 32;

struct ColumnArgs {
  SinkhornSegments rows;
  float inv_eps;
  const float* row_potential;  // b[g·potential_stride + n], or null (b = 0)
  int64_t potential_stride;
  float* column_max;     // (G, K) or null
  float* column_sumexp;  // (G, K) or null
  bool accumulate;       // merge with what column_max/column_sumexp hold
  float* column_potential;  // (G, K) or null
  float log_cols;
};

template <typename T>
__global__ void __launch_bounds__(kColumnWarps * 32) sinkhorn_columns_kernel(ColumnArgs args) {
  __shared__ float warp_max[kColumnWarps][kColumnsPerBlock];
  __shared__ float warp_sum[kColumnWarps][kColumnsPerBlock];
  __shared__ float warp_zero[kColumnWarps][kColumnsPerBlock];
  const int64_t g = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t k = int64_t{blockIdx.x} * kColumnsPerBlock + lane;
  const int64_t cols = args.rows.cols, rows = args.rows.queue_rows + args.rows.batch_rows;
  LogSumExp acc{-INFINITY, 0.f};
  float zero = 0.f;  // Σ 0·x: NaN when a value read is NaN or ±inf
  if (k < cols) {
    const float* b = args.row_potential == nullptr ? nullptr : args.row_potential + g * args.potential_stride;
    for (int64_t n = warp; n < rows; n += kColumnWarps) {
      const float x = to_float(segment_row<T>(args.rows, g, n)[k]);
      lse_add(acc, sinkhorn_logit(x, args.inv_eps, b == nullptr ? 0.f : b[n]));
      zero += 0.f * x;
    }
  }
  warp_max[warp][lane] = acc.max;
  warp_sum[warp][lane] = acc.sum;
  warp_zero[warp][lane] = zero;
  __syncthreads();
  if (warp != 0 || k >= cols) return;
  LogSumExp total{-INFINITY, 0.f};
  zero = 0.f;
  for (int w = 0; w < kColumnWarps; ++w) {
    total = lse_merge(total, LogSumExp{warp_max[w][lane], warp_sum[w][lane]});
    zero += warp_zero[w][lane];
  }
  const int64_t out = g * cols + k;
  if (args.accumulate) total = lse_merge(LogSumExp{args.column_max[out], args.column_sumexp[out]}, total);
  if (args.column_max != nullptr) {
    args.column_max[out] = total.max;
    args.column_sumexp[out] = total.sum + zero;
  }
  if (args.column_potential != nullptr) args.column_potential[out] = -args.log_cols - lse_value(total) + zero;
}

}  // namespace

void sinkhorn_columns(std::uintptr_t queue, int64_t queue_rows, std::uintptr_t batch, int64_t batch_rows,
                      const std::vector<int64_t>& batch_first_rows, int64_t cols, const std::string& dtype,
                      float inv_eps, std::uintptr_t row_potential, int64_t potential_stride,
                      std::uintptr_t column_max, std::uintptr_t column_sumexp, bool accumulate,
                      std::uintptr_t column_potential, float log_cols, std::uintptr_t stream) {
  const DType type = parse_dtype(dtype, "dtype");
  ColumnArgs args{};
  args.rows = make_segments(queue, queue_rows, batch, batch_rows, batch_first_rows, cols, type);
  require(std::isfinite(inv_eps) && inv_eps > 0.f, "inv_eps must be finite and > 0");
  require(std::isfinite(log_cols), "log_cols must be finite");
  if (row_potential != 0) {
    require_pointer(row_potential, "row_potential", sizeof(float));
    if (args.rows.groups > 1) {
      require(potential_stride >= queue_rows + batch_rows,
              "potential_stride must be >= queue_rows + batch_rows, got " + std::to_string(potential_stride));
    }
  }
  require((column_max != 0) == (column_sumexp != 0), "column_max and column_sumexp must be given together");
  if (column_max != 0) {
    require_pointer(column_max, "column_max", sizeof(float));
    require_pointer(column_sumexp, "column_sumexp", sizeof(float));
  }
  require(!accumulate || column_max != 0, "accumulate needs column_max and column_sumexp");
  if (column_potential != 0) require_pointer(column_potential, "column_potential", sizeof(float));
  require(column_max != 0 || column_potential != 0, "at least one of column_max and column_potential must be given");
  args.inv_eps = inv_eps;
  args.row_potential = reinterpret_cast<const float*>(row_potential);
  args.potential_stride = potential_stride;
  args.column_max = reinterpret_cast<float*>(column_max);
  args.column_sumexp = reinterpret_cast<float*>(column_sumexp);
  args.accumulate = accumulate;
  args.column_potential = reinterpret_cast<float*>(column_potential);
  args.log_cols = log_cols;

  const dim3 grid(static_cast<unsigned>(ceil_div(cols, kColumnsPerBlock)), static_cast<unsigned>(args.rows.groups));
  dispatch_dtype(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    sinkhorn_columns_kernel<T><<<grid, kColumnWarps * 32, 0, as_stream(stream)>>>(args);
  });
  check_launch("sinkhorn_columns");
}

}  // namespace swav
