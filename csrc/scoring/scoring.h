// Family 1: prototype scoring + temperature softmax (swav_kernels/kernels.py), with the
// (rows × prototypes) scores recomputed tile by tile and never stored.
// z (rows, dim) and c (prototypes, dim) of `dtype` with unit column stride; lse, out,
// row_weight and grad float32 contiguous. The reduction over the "key" rows (prototypes
// for the forward, embeddings for the gradient) is split across `key_splits` blocks whose
// partial results go to `workspace` and are reduced in a fixed order (deterministic).
#pragma once

#include <cstdint>
#include <string>

namespace swav {

constexpr int kScoreTileRows = 64;   // query rows per block
constexpr int kScoreTileKeys = 64;   // key rows per step
constexpr int kScoreTileSlice = 64;  // output columns per block

// Floats of workspace scores_logsumexp needs.
int64_t scores_logsumexp_workspace(int64_t rows, int64_t dim, int64_t key_splits, bool with_output);
// Floats of workspace softmax_prototype_grad needs.
int64_t softmax_prototype_grad_workspace(int64_t prototypes, int64_t dim, int64_t key_splits);

// lse[m] = log Σ_k exp(inv_tau·z[m]·c[k]); if out != 0, out[m] = Σ_k exp(inv_tau·z[m]·c[k] − lse[m])·c[k].
void scores_logsumexp(std::uintptr_t z, std::uintptr_t c, int64_t rows, int64_t prototypes, int64_t dim,
                      int64_t z_row_stride, int64_t c_row_stride, const std::string& dtype, float inv_tau,
                      std::uintptr_t lse, std::uintptr_t out, int64_t key_splits, std::uintptr_t workspace,
                      int64_t workspace_floats, std::uintptr_t stream);

// grad[k] = Σ_m row_weight[m]·exp(inv_tau·z[m]·c[k] − lse[m])·z[m]  (prototypes, dim).
void softmax_prototype_grad(std::uintptr_t z, std::uintptr_t c, std::uintptr_t lse, std::uintptr_t row_weight,
                            int64_t rows, int64_t prototypes, int64_t dim, int64_t z_row_stride,
                            int64_t c_row_stride, const std::string& dtype, float inv_tau, std::uintptr_t grad,
                            int64_t key_splits, std::uintptr_t workspace, int64_t workspace_floats,
                            std::uintptr_t stream);

}  // namespace swav
