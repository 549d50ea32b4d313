// softmax_prototype_grad: g[k] = Σ_m row_weight[m]·exp(inv_tau·z[m]·c[k] − lse[m])·z[m], the
// flash-attention dK/dV-shaped pass. Blocks own 64 prototypes × a 64-column slice of dim and
// loop over the rows of Z (score_tiles.cuh with the prototypes as queries); the row split
// partials are added in a fixed order. No atomics: bitwise reproducible.
#include "../common/partials.h"
#include "score_tiles.cuh"

namespace swav {

int64_t softmax_prototype_grad_workspace(int64_t prototypes, int64_t dim, int64_t key_splits) {
  require_range(key_splits, "key_splits", 1, 65535);
  return key_splits > 1 ? key_splits * prototypes * dim : 0;
}

void softmax_prototype_grad(std::uintptr_t z, std::uintptr_t c, std::uintptr_t lse, std::uintptr_t row_weight,
                            int64_t rows, int64_t prototypes, int64_t dim, int64_t z_row_stride,
                            int64_t c_row_stride, const std::string& dtype, float inv_tau, std::uintptr_t grad,
                            int64_t key_splits, std::uintptr_t workspace, int64_t workspace_floats,
                            std::uintptr_t stream) {
  const DType type = parse_dtype(dtype, "dtype");
  check_score_operands(z, c, type, rows, prototypes, dim, z_row_stride, c_row_stride, inv_tau, key_splits);
  require_pointer(lse, "lse", sizeof(float));
  require_pointer(row_weight, "row_weight", sizeof(float));
  require_pointer(grad, "grad", sizeof(float));
  require_workspace(workspace, workspace_floats, softmax_prototype_grad_workspace(prototypes, dim, key_splits));

  const KeySplit split = split_keys(rows, key_splits);
  TileArgs args{};
  args.query = reinterpret_cast<const void*>(c);
  args.query_rows = prototypes;
  args.query_stride = c_row_stride;
  args.keys = reinterpret_cast<const void*>(z);
  args.key_rows = rows;
  args.key_stride = z_row_stride;
  args.dim = dim;
  args.inv_tau = inv_tau;
  args.keys_per_split = split.keys_per_split;
  args.key_lse = reinterpret_cast<const float*>(lse);
  args.key_weight = reinterpret_cast<const float*>(row_weight);
  args.partial = split.splits == 1 ? reinterpret_cast<float*>(grad) : reinterpret_cast<float*>(workspace);
  launch_score_tiles<TileMode::kPrototypeGrad>(type, args, ceil_div(dim, kScoreTileSlice), split.splits,
                                               as_stream(stream));
  check_launch("softmax_prototype_grad");
  if (split.splits > 1) {
    sum_over_splits(args.partial, reinterpret_cast<float*>(grad), 1, split.splits, prototypes * dim,
                    as_stream(stream));
  }
}

}  // namespace swav
