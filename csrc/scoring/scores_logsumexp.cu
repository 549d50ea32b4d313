// scores_logsumexp: lse[m] = log Σ_k exp(inv_tau·z[m]·c[k]) and, optionally, the attention
// output out[m] = Σ_k softmax_k(inv_tau·z[m]·Cᵀ)·c[k]. Two tiled passes (score_tiles.cuh):
// the exact lse first, then the output with the final lse, so nothing is rescaled.
#include <cmath>

#include "../common/partials.h"
#include "score_tiles.cuh"

namespace swav {

int64_t scores_logsumexp_workspace(int64_t rows, int64_t dim, int64_t key_splits, bool with_output) {
  require_range(key_splits, "key_splits", 1, 65535);
  return 2 * key_splits * rows + (with_output && key_splits > 1 ? key_splits * rows * dim : 0);
}

void scores_logsumexp(std::uintptr_t z, std::uintptr_t c, int64_t rows, int64_t prototypes, int64_t dim,
                      int64_t z_row_stride, int64_t c_row_stride, const std::string& dtype, float inv_tau,
                      std::uintptr_t lse, std::uintptr_t out, int64_t key_splits, std::uintptr_t workspace,
                      int64_t workspace_floats, std::uintptr_t stream) {
  const DType type = parse_dtype(dtype, "dtype");
  check_score_operands(z, c, type, rows, prototypes, dim, z_row_stride, c_row_stride, inv_tau, key_splits);
  require_pointer(lse, "lse", sizeof(float));
  if (out != 0) require_pointer(out, "out", sizeof(float));
  require_workspace(workspace, workspace_floats, scores_logsumexp_workspace(rows, dim, key_splits, out != 0));

  const KeySplit split = split_keys(prototypes, key_splits);
  float* partial_max = reinterpret_cast<float*>(workspace);
  float* partial_sum = partial_max + split.splits * rows;
  TileArgs args{};
  args.query = reinterpret_cast<const void*>(z);
  args.query_rows = rows;
  args.query_stride = z_row_stride;
  args.keys = reinterpret_cast<const void*>(c);
  args.key_rows = prototypes;
  args.key_stride = c_row_stride;
  args.dim = dim;
  args.inv_tau = inv_tau;
  args.keys_per_split = split.keys_per_split;
  args.partial = partial_max;
  args.partial_sum = partial_sum;
  launch_score_tiles<TileMode::kLogSumExp>(type, args, 1, split.splits, as_stream(stream));
  check_launch("scores_logsumexp");
  logsumexp_over_splits(partial_max, partial_sum, nullptr, nullptr, reinterpret_cast<float*>(lse), 1, split.splits,
                        rows, as_stream(stream));
  if (out == 0) return;

  args.query_lse = reinterpret_cast<const float*>(lse);
  args.partial = split.splits == 1 ? reinterpret_cast<float*>(out) : partial_sum + split.splits * rows;
  args.partial_sum = nullptr;
  launch_score_tiles<TileMode::kSoftmaxOutput>(type, args, ceil_div(dim, kScoreTileSlice), split.splits,
                                               as_stream(stream));
  check_launch("scores_logsumexp (attention output)");
  if (split.splits > 1) {
    sum_over_splits(args.partial, reinterpret_cast<float*>(out), 1, split.splits, rows * dim, as_stream(stream));
  }
}

}  // namespace swav
