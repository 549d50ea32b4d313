// swapped_loss: one block per image b of the chunk, a warp per crop row (v, b) (warp w takes crops
// w, w + 8, …). The |A| code rows of b are read by every warp of the block, so they come from the
// cache after the first: the codes are read from memory once per image, not once per row. Pass 1
// over a row gives its log-sum-exp, the cross term and the code mass it predicts; pass 2 (when a
// gradient is asked for) writes ∂loss/∂s. The row terms are added per warp, then over the warps
// in warp order: a fixed order, no atomics.
#include <cmath>

#include "../common/reduce.cuh"
#include "loss.h"

namespace swav {
namespace {

constexpr int kLossWarps = 8;

struct LossArgs {
  const void* scores;
  int64_t scores_crop_stride;
  const float* codes;  // (|A|, B, K)
  int assign_count;
  int assign_crop[kMaxGroups];
  int64_t n_crops, batch, first_image, cols;
  float inv_tau, loss_scale;
  float* loss;  // (B,)
  void* grad;   // or null
  int64_t grad_crop_stride;
};

// Σ_{a: A[a] ≠ crop} codes[a, b, k]: the code mass row (crop, b) predicts at prototype k.
__device__ __forceinline__ float predicted_codes(const LossArgs& args, int64_t crop, int64_t b, int64_t k) {
  float q = 0.f;
  for (int a = 0; a < args.assign_count; ++a) {
    if (args.assign_crop[a] != crop) q += args.codes[(a * args.batch + b) * args.cols + k];
  }
  return q;
}

template <typename S, typename G>
__global__ void __launch_bounds__(kLossWarps * 32) swapped_loss_kernel(LossArgs args) {
  __shared__ float warp_loss[kLossWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t i = blockIdx.x, b = args.first_image + i, cols = args.cols;
  float warp_total = 0.f;
  for (int64_t v = warp; v < args.n_crops; v += kLossWarps) {
    const S* s = static_cast<const S*>(args.scores) + (v * args.scores_crop_stride + i) * cols;
    LogSumExp acc{-INFINITY, 0.f};
    float cross = 0.f, mass = 0.f, zero = 0.f;
    for (int64_t k = lane; k < cols; k += 32) {
      const float value = to_float(s[k]);
      const float q = predicted_codes(args, v, b, k);
      lse_add(acc, value * args.inv_tau);
      cross += q * value;
      mass += q;
      zero += 0.f * value + 0.f * q;
    }
    acc = warp_lse_merge(acc);
    cross = warp_sum(cross);
    mass = warp_sum(mass);
    zero = warp_sum(zero);
    const float lse = lse_value(acc);
    warp_total += mass * lse - args.inv_tau * cross + zero;
    if (args.grad != nullptr) {
      G* grad = static_cast<G*>(args.grad) + (v * args.grad_crop_stride + i) * cols;
      for (int64_t k = lane; k < cols; k += 32) {
        const float softmax = expf(to_float(s[k]) * args.inv_tau - lse);
        grad[k] = from_float<G>(mass * softmax - predicted_codes(args, v, b, k));
      }
    }
  }
  if (lane == 0) warp_loss[warp] = warp_total;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.f;
    for (int w = 0; w < kLossWarps; ++w) total += warp_loss[w];
    args.loss[b] = args.loss_scale * total;
  }
}

}  // namespace

void swapped_loss(std::uintptr_t scores, const std::string& scores_dtype, int64_t scores_crop_stride,
                  std::uintptr_t codes, const std::vector<int64_t>& crops_for_assign, int64_t n_crops, int64_t batch,
                  int64_t first_image, int64_t images, int64_t cols, float inv_tau, float loss_scale,
                  std::uintptr_t loss, std::uintptr_t grad, const std::string& grad_dtype, int64_t grad_crop_stride,
                  std::uintptr_t stream) {
  constexpr int64_t kMax32 = (int64_t{1} << 31) - 1;
  const DType score_type = parse_dtype(scores_dtype, "scores_dtype");
  const DType grad_type = parse_dtype(grad_dtype, "grad_dtype");
  require_pointer(scores, "scores", element_size(score_type));
  require_pointer(codes, "codes", sizeof(float));
  require_pointer(loss, "loss", sizeof(float));
  require_range(n_crops, "n_crops", 2, kMax32);
  require_range(batch, "batch", 1, kMax32);
  require_range(images, "images", 1, batch);
  require_range(first_image, "first_image", 0, batch - images);
  require_range(cols, "cols", 1, kMax32);
  require(scores_crop_stride >= images, "scores_crop_stride must be >= images, got " +
                                            std::to_string(scores_crop_stride));
  require(std::isfinite(inv_tau) && inv_tau > 0.f, "inv_tau must be finite and > 0");
  require(std::isfinite(loss_scale), "loss_scale must be finite");
  require(!crops_for_assign.empty() && crops_for_assign.size() <= static_cast<size_t>(kMaxGroups),
          "crops_for_assign must hold 1 to " + std::to_string(kMaxGroups) + " crops, got " +
              std::to_string(crops_for_assign.size()));
  LossArgs args{};
  args.assign_count = static_cast<int>(crops_for_assign.size());
  for (int a = 0; a < args.assign_count; ++a) {
    require_range(crops_for_assign[a], "crops_for_assign entry", 0, n_crops - 1);
    args.assign_crop[a] = static_cast<int>(crops_for_assign[a]);
  }
  if (grad != 0) {
    require_pointer(grad, "grad", element_size(grad_type));
    require(grad_crop_stride >= images, "grad_crop_stride must be >= images, got " + std::to_string(grad_crop_stride));
    if (grad == scores) {
      require(grad_type == score_type && grad_crop_stride == scores_crop_stride,
              "grad may overwrite the scores only with their dtype and crop stride");
    }
  }
  args.scores = reinterpret_cast<const void*>(scores);
  args.scores_crop_stride = scores_crop_stride;
  args.codes = reinterpret_cast<const float*>(codes);
  args.n_crops = n_crops;
  args.batch = batch;
  args.first_image = first_image;
  args.cols = cols;
  args.inv_tau = inv_tau;
  args.loss_scale = loss_scale;
  args.loss = reinterpret_cast<float*>(loss);
  args.grad = reinterpret_cast<void*>(grad);
  args.grad_crop_stride = grad_crop_stride;

  dispatch_dtype(score_type, [&](auto score_tag) {
    dispatch_dtype(grad_type, [&](auto grad_tag) {
      using S = typename decltype(score_tag)::type;
      using G = typename decltype(grad_tag)::type;
      swapped_loss_kernel<S, G><<<static_cast<unsigned>(images), kLossWarps * 32, 0, as_stream(stream)>>>(args);
    });
  });
  check_launch("swapped_loss");
}

}  // namespace swav
