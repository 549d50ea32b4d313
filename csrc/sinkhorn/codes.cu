// sinkhorn_codes: the codes of the batch rows (steps.h), a warp per row. Pass 1 forms the row's
// log-sum-exp as two parts, max and log Σ exp(u − max); pass 2 writes exp((u − max) − log Σ). Why
// two parts: |u| reaches thousands when |x|·inv_eps does, and lse = max + log Σ rounded to one
// float is off by up to half an ulp of |u| (3e-5 at |u| ≈ 1000), a shift every code of the row
// would inherit; u − max is exact for the codes that matter and log Σ ∈ [0, log K] is small, so each
// row sums to 1 within float32 rounding. The codes may overwrite the rows they are computed from:
// each lane reads and then writes only its own elements of its warp's row.
#include "row_lse.cuh"
#include "steps.h"

namespace swav {
namespace {

struct CodesArgs {
  SinkhornSegments rows;  // batch rows only
  float inv_eps;
  const float* column_potential;  // (G, K)
  bool normalize_rows;
  float* codes;  // (G, B, K); may alias rows.batch
};

template <typename T>
__global__ void __launch_bounds__(kRowWarps * 32) sinkhorn_codes_kernel(CodesArgs args) {
  const int64_t batch = args.rows.batch_rows, cols = args.rows.cols;
  const int64_t r = int64_t{blockIdx.x} * kRowWarps + threadIdx.x / 32;  // over the G·B rows
  if (r >= args.rows.groups * batch) return;
  const int64_t g = r / batch, j = r % batch;
  const T* row = segment_row<T>(args.rows, g, j);
  const float* potential = args.column_potential + g * cols;
  const RowLogSumExp stats = row_logsumexp(row, cols, args.inv_eps, potential);
  const float log_sum = logf(stats.lse.sum);
  float* out = args.codes + r * cols;
  for (int64_t k = threadIdx.x % 32; k < cols; k += 32) {
    const float u = sinkhorn_logit(to_float(row[k]), args.inv_eps, potential[k]);
    out[k] = (args.normalize_rows ? expf((u - stats.lse.max) - log_sum) : expf(u)) + stats.zero;
  }
}

}  // namespace

void sinkhorn_codes(std::uintptr_t batch, int64_t batch_rows, const std::vector<int64_t>& batch_first_rows,
                    int64_t cols, const std::string& dtype, float inv_eps, std::uintptr_t column_potential,
                    bool normalize_rows, std::uintptr_t codes, std::uintptr_t stream) {
  const DType type = parse_dtype(dtype, "dtype");
  require_range(batch_rows, "batch_rows", 1, (int64_t{1} << 31) - 1);
  CodesArgs args{};
  args.rows = make_segments(0, 0, batch, batch_rows, batch_first_rows, cols, type);
  require(std::isfinite(inv_eps) && inv_eps > 0.f, "inv_eps must be finite and > 0");
  require_pointer(column_potential, "column_potential", sizeof(float));
  require_pointer(codes, "codes", sizeof(float));
  if (codes == batch) {
    require(type == DType::kFloat32, "codes may overwrite the batch rows only when they are float32");
    for (int g = 0; g < args.rows.groups; ++g) {
      require(batch_first_rows[g] == g * batch_rows,
              "codes may overwrite the batch rows only when batch_first_rows[g] = g * batch_rows");
    }
  }
  args.inv_eps = inv_eps;
  args.column_potential = reinterpret_cast<const float*>(column_potential);
  args.normalize_rows = normalize_rows;
  args.codes = reinterpret_cast<float*>(codes);

  const int64_t blocks = ceil_div(args.rows.groups * batch_rows, kRowWarps);
  require_range(blocks, "the number of row blocks", 1, (int64_t{1} << 31) - 1);
  dispatch_dtype(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    sinkhorn_codes_kernel<T><<<static_cast<unsigned>(blocks), kRowWarps * 32, 0, as_stream(stream)>>>(args);
  });
  check_launch("sinkhorn_codes");
}

}  // namespace swav
