// Families 1 and 3 after the library matmul: the swapped-prediction loss of a chunk of score rows
// and its gradient with respect to those scores, and the backward's scaling by the upstream
// gradient (swav_kernels/cuda/contract.py gives each formula). Scores and gradients are addressed
// per (crop v, image i) of a chunk of images: row (v, i) at base + (v·crop_stride + i)·K.
#pragma once

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "../common/launch.h"

namespace swav {

// For the images b = first_image + i, i < images, of a batch of B (codes (|A|, B, K) float32), with
// Q_v[k] = Σ_{a: A[a] ≠ v} codes[a, b, k], w_v = Σ_k Q_v[k], lse_v = LSE_k(inv_tau·s[v, i, k]):
//   loss[b] = loss_scale · Σ_v (w_v·lse_v − inv_tau·Σ_k Q_v[k]·s[v, i, k]) + Σ 0·s + Σ 0·Q   (float32),
//   grad[v, i, k] = w_v·exp(inv_tau·s[v, i, k] − lse_v) − Q_v[k] in grad_dtype, unless grad is 0.
// grad may be the scores themselves (same dtype and crop stride).
void swapped_loss(std::uintptr_t scores, const std::string& scores_dtype, int64_t scores_crop_stride,
                  std::uintptr_t codes, const std::vector<int64_t>& crops_for_assign, int64_t n_crops, int64_t batch,
                  int64_t first_image, int64_t images, int64_t cols, float inv_tau, float loss_scale,
                  std::uintptr_t loss, std::uintptr_t grad, const std::string& grad_dtype, int64_t grad_crop_stride,
                  std::uintptr_t stream);

// One scaling job: dst[m, c] = upstream · coef · src[row(m), c] for m < rows, c < cols, with
// v = m / batch, b = m % batch, b0 = b − b mod chunk, images = min(chunk, batch − b0) and
// row(m) = crops·b0 + v·images + (b − b0) (the chunk-major order in which the loss chunks wrote
// their rows; the identity when chunk = batch). (src, src_dtype, dst, dst_dtype, rows, cols, crops,
// batch, chunk).
using ScaleJob = std::tuple<std::uintptr_t, std::string, std::uintptr_t, std::string, int64_t, int64_t, int64_t,
                            int64_t, int64_t>;
constexpr int kMaxScaleJobs = 2;

// Every job in one launch; upstream is a float32 scalar on the device (read there: no host sync).
void scale_gradients(std::uintptr_t upstream, float coef, const std::vector<ScaleJob>& jobs, std::uintptr_t stream);

}  // namespace swav
