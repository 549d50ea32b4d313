// Family 2: the Sinkhorn of DESIGN.md §1 as alternating column and row steps over dual potentials,
// on stored scores (swav_kernels/cuda/contract.py gives each formula). The rows of the G groups are
// described by segments.h; every potential and statistic is float32, (G, K) for columns, and
// b[g·potential_stride + n] for rows (n over the call's queue rows, then its batch rows). Each call
// is one launch; nothing is split across blocks, so no partial sums and no atomics: deterministic.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace swav {

// Column step: per group g and prototype k, LSE_n t with t = x·inv_eps + b[g, n] (b = 0 when
// row_potential is 0), merged with (column_max, column_sumexp) when accumulate. Writes any of
// column_max/column_sumexp (the running pair, Σ 0·x added to the sum) and column_potential
// (a = −log_cols − LSE + Σ 0·x) that is not 0.
void sinkhorn_columns(std::uintptr_t queue, int64_t queue_rows, std::uintptr_t batch, int64_t batch_rows,
                      const std::vector<int64_t>& batch_first_rows, int64_t cols, const std::string& dtype,
                      float inv_eps, std::uintptr_t row_potential, int64_t potential_stride,
                      std::uintptr_t column_max, std::uintptr_t column_sumexp, bool accumulate,
                      std::uintptr_t column_potential, float log_cols, std::uintptr_t stream);

// Row step: b[g, n] = −LSE_k(x·inv_eps + a[g, k]) + Σ_k 0·x for every row of the call.
void sinkhorn_rows(std::uintptr_t queue, int64_t queue_rows, std::uintptr_t batch, int64_t batch_rows,
                   const std::vector<int64_t>& batch_first_rows, int64_t cols, const std::string& dtype, float inv_eps,
                   std::uintptr_t column_potential, std::uintptr_t row_potential, int64_t potential_stride,
                   std::uintptr_t stream);

// Codes of the batch rows: with u = x·inv_eps + a[g, k], codes[g, j, k] = exp((u − max_k u) − log Σ_k exp(u −
// max_k u)) + Σ_k 0·x if normalize_rows, else exp(u) + Σ_k 0·x; codes (G, B, K) float32 contiguous, which may be
// the batch segment itself (then batch_first_rows[g] = g·B and dtype float32).
void sinkhorn_codes(std::uintptr_t batch, int64_t batch_rows, const std::vector<int64_t>& batch_first_rows,
                    int64_t cols, const std::string& dtype, float inv_eps, std::uintptr_t column_potential,
                    bool normalize_rows, std::uintptr_t codes, std::uintptr_t stream);

}  // namespace swav
