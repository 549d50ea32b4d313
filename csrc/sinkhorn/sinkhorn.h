// Family 2: Sinkhorn in the log domain over dual potentials (swav_kernels/kernels.py).
// x is (groups, rows, cols) of `dtype` with unit column stride; every output is float32.
// Rows are processed in blocks of `rows_per_block` (1..64); per-prototype sums are
// written per row block into `workspace` and reduced in a fixed order (deterministic).
#pragma once

#include <cstdint>
#include <string>

namespace swav {

constexpr int kSinkhornMaxRowsPerBlock = 64;

// Floats of workspace the two Sinkhorn kernels need.
int64_t sinkhorn_column_init_workspace(int64_t groups, int64_t rows, int64_t cols, int64_t rows_per_block);
int64_t sinkhorn_row_step_workspace(int64_t groups, int64_t rows, int64_t cols, int64_t rows_per_block,
                                    bool want_column_sums);

// col_max[g, k] = max_n x[g, n, k]·inv_eps; col_sum[g, k] = Σ_n exp(x[g, n, k]·inv_eps − col_max[g, k]).
void sinkhorn_column_init(std::uintptr_t x, int64_t groups, int64_t rows, int64_t cols, int64_t group_stride,
                          int64_t row_stride, const std::string& dtype, float inv_eps, int64_t rows_per_block,
                          std::uintptr_t col_max, std::uintptr_t col_sum, std::uintptr_t workspace,
                          int64_t workspace_floats, std::uintptr_t stream);

// With t = x·inv_eps + a[g, k] (a = col_potential, (groups, cols)) and, if normalize_rows,
// lse[g, n] = log Σ_k exp(t): log p = (t − lse) − log_rows_total (else t), log code = t − lse
// (else t + log_rows_total), t − lse evaluated as (t − max_k t) − log Σ_k exp(t − max_k t)
// so that rows sum to 1 within float32 rounding at any |t|. column_sums[g, k] = Σ_n p (skipped when 0);
// codes[g, n − codes_from_row, k] = code for n >= codes_from_row (skipped when 0).
void sinkhorn_row_step(std::uintptr_t x, int64_t groups, int64_t rows, int64_t cols, int64_t group_stride,
                       int64_t row_stride, const std::string& dtype, float inv_eps, std::uintptr_t col_potential,
                       float log_rows_total, bool normalize_rows, int64_t rows_per_block, std::uintptr_t column_sums,
                       std::uintptr_t codes, int64_t codes_from_row, std::uintptr_t workspace,
                       int64_t workspace_floats, std::uintptr_t stream);

}  // namespace swav
