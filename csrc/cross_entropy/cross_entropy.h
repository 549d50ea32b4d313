// Family 3: the multi-crop swapped-prediction cross-entropy on given scores
// (swav_kernels/kernels.py). s is (V·B, K) crop-major of `dtype`; codes (|A|, B, K) float32
// contiguous; crops_for_assign lists A (1..kMaxAssignCrops entries in [0, V)).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace swav {

constexpr int kMaxAssignCrops = 64;

// lse[r] = log Σ_k exp(inv_tau·s[r, k]);
// cross[v·B + b] = Σ_{a: A[a] ≠ v} Σ_k codes[a, b, k]·s[v·B + b, k]; both (V·B,) float32.
void scores_cross_entropy_forward(std::uintptr_t s, std::uintptr_t codes, int64_t rows, int64_t cols,
                                  int64_t row_stride, int64_t batch, const std::vector<int64_t>& crops_for_assign,
                                  const std::string& dtype, float inv_tau, std::uintptr_t lse, std::uintptr_t cross,
                                  std::uintptr_t stream);

// grad[v·B + b, k] = scale·(row_weight[v·B + b]·exp(inv_tau·s − lse[v·B + b]) − Σ_{a: A[a] ≠ v} codes[a, b, k]),
// row_weight (V·B,) float32 the mass of the codes each row predicts (n_v when code rows sum to 1),
// scale a device float32 scalar; grad (V·B, K) contiguous in `dtype`.
void scores_cross_entropy_backward(std::uintptr_t s, std::uintptr_t codes, std::uintptr_t lse,
                                   std::uintptr_t row_weight, std::uintptr_t scale,
                                   int64_t rows, int64_t cols, int64_t row_stride, int64_t batch,
                                   const std::vector<int64_t>& crops_for_assign, const std::string& dtype,
                                   float inv_tau, std::uintptr_t grad, std::uintptr_t stream);

}  // namespace swav
