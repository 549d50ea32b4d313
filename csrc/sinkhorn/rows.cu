// sinkhorn_rows: the row step (steps.h), a warp per row of any group.
#include "row_lse.cuh"
#include "steps.h"

namespace swav {
namespace {

struct RowArgs {
  SinkhornSegments rows;
  float inv_eps;
  const float* column_potential;  // (G, K)
  float* row_potential;           // b[g·potential_stride + n]
  int64_t potential_stride;
};

template <typename T>
__global__ void __launch_bounds__(kRowWarps * 32) sinkhorn_rows_kernel(RowArgs args) {
  const int64_t rows = args.rows.queue_rows + args.rows.batch_rows;
  const int64_t r = int64_t{blockIdx.x} * kRowWarps + threadIdx.x / 32;  // over the G·rows rows
  if (r >= args.rows.groups * rows) return;  // a whole warp leaves: the shuffles below stay full-warp
  const int64_t g = r / rows, n = r % rows;
  const RowLogSumExp row = row_logsumexp(segment_row<T>(args.rows, g, n), args.rows.cols, args.inv_eps,
                                         args.column_potential + g * args.rows.cols);
  if (threadIdx.x % 32 == 0) args.row_potential[g * args.potential_stride + n] = -lse_value(row.lse) + row.zero;
}

}  // namespace

void sinkhorn_rows(std::uintptr_t queue, int64_t queue_rows, std::uintptr_t batch, int64_t batch_rows,
                   const std::vector<int64_t>& batch_first_rows, int64_t cols, const std::string& dtype, float inv_eps,
                   std::uintptr_t column_potential, std::uintptr_t row_potential, int64_t potential_stride,
                   std::uintptr_t stream) {
  const DType type = parse_dtype(dtype, "dtype");
  RowArgs args{};
  args.rows = make_segments(queue, queue_rows, batch, batch_rows, batch_first_rows, cols, type);
  require(std::isfinite(inv_eps) && inv_eps > 0.f, "inv_eps must be finite and > 0");
  require_pointer(column_potential, "column_potential", sizeof(float));
  require_pointer(row_potential, "row_potential", sizeof(float));
  if (args.rows.groups > 1) {
    require(potential_stride >= queue_rows + batch_rows,
            "potential_stride must be >= queue_rows + batch_rows, got " + std::to_string(potential_stride));
  }
  args.inv_eps = inv_eps;
  args.column_potential = reinterpret_cast<const float*>(column_potential);
  args.row_potential = reinterpret_cast<float*>(row_potential);
  args.potential_stride = potential_stride;

  const int64_t blocks = ceil_div(args.rows.groups * (queue_rows + batch_rows), kRowWarps);
  require_range(blocks, "the number of row blocks", 1, (int64_t{1} << 31) - 1);
  dispatch_dtype(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    sinkhorn_rows_kernel<T><<<static_cast<unsigned>(blocks), kRowWarps * 32, 0, as_stream(stream)>>>(args);
  });
  check_launch("sinkhorn_rows");
}

}  // namespace swav
