// Runs every kernel of csrc/ per dtype and split configuration on exactly sized heap buffers,
// under the CPU emulation (emu.h). build.py builds it with -fsanitize=address (an
// out-of-bounds access of a kernel is a heap overflow here) or -fsanitize=thread (a missing
// __syncthreads is a data race between the emulated threads of a block).
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cross_entropy/cross_entropy.h"
#include "loss/loss.h"
#include "queue/queue.h"
#include "scoring/scoring.h"
#include "sinkhorn/sinkhorn.h"
#include "sinkhorn/steps.h"

namespace {

std::mt19937 rng(0);

template <typename T>
std::vector<T> random_values(int64_t count, float scale) {
  std::normal_distribution<float> normal(0.f, scale);
  std::vector<T> data(count);
  for (auto& v : data) v = static_cast<T>(normal(rng));
  return data;
}

std::vector<float> filled(int64_t count, float value) { return std::vector<float>(count, value); }

template <typename V>
std::uintptr_t ptr(V& buffer) {
  return buffer.empty() ? 0 : reinterpret_cast<std::uintptr_t>(buffer.data());
}

// The kernels of the CUDA backend: Sinkhorn steps over two row segments (crop-major batch rows of
// group g at crop 2 − g), the loss of a chunk of images with its gradient, the scaling, the queue shift.
template <typename T>
void run_backend_kernels(const std::string& dtype) {
  const int64_t groups = 2, queued = 11, batch = 5, crops = 3, cols = 70;
  auto queue = random_values<T>(groups * queued * cols, 10.f);
  auto scores = random_values<T>(crops * batch * cols, 10.f);
  const std::vector<int64_t> first_rows{2 * batch, 1 * batch};
  auto row_potential = filled(groups * (queued + batch), 0.5f);
  auto column_max = filled(groups * cols, 0.f), column_sumexp = filled(groups * cols, 1.f);
  auto potential = filled(groups * cols, 0.f);
  swav::sinkhorn_columns(ptr(queue), queued, ptr(scores), batch, first_rows, cols, dtype, 20.f, ptr(row_potential),
                         queued + batch, ptr(column_max), ptr(column_sumexp), true, ptr(potential), 4.f, 0);
  swav::sinkhorn_rows(ptr(queue), queued, ptr(scores), batch, first_rows, cols, dtype, 20.f, ptr(potential),
                      ptr(row_potential), queued + batch, 0);
  auto codes = filled(groups * batch * cols, 0.f);
  swav::sinkhorn_codes(ptr(scores), batch, first_rows, cols, dtype, 20.f, ptr(potential), true, ptr(codes), 0);
  swav::sinkhorn_codes(ptr(codes), batch, {0, batch}, cols, "float32", 20.f, ptr(potential), false, ptr(codes), 0);
  // loss of images 1 … 3 of 5 (the chunk's rows (v, i) at v·3 + i), gradient in T and, in place, in fp32
  const std::vector<int64_t> assign{2, 1};
  auto chunk = random_values<T>(crops * 3 * cols, 0.5f);
  auto chunk32 = random_values<float>(crops * 3 * cols, 0.5f);
  auto loss = filled(batch, 0.f);
  std::vector<T> grad(crops * 3 * cols);
  swav::swapped_loss(ptr(chunk), dtype, 3, ptr(codes), assign, crops, batch, 1, 3, cols, 10.f, 0.1f, ptr(loss),
                     ptr(grad), dtype, 3, 0);
  swav::swapped_loss(ptr(chunk32), "float32", 3, ptr(codes), assign, crops, batch, 1, 3, cols, 10.f, 0.1f, ptr(loss),
                     ptr(chunk32), "float32", 3, 0);
  auto upstream = filled(1, 2.f);
  auto grad32 = random_values<float>(crops * batch * 9, 1.f);
  std::vector<T> scaled(crops * batch * 9), scaled_codes(groups * batch * cols);
  swav::scale_gradients(ptr(upstream), 0.5f, {{ptr(grad32), "float32", ptr(scaled), dtype, crops * batch, 9, crops,
                                               batch, 2},
                                              {ptr(codes), "float32", ptr(scaled_codes), dtype, groups * batch, cols,
                                               1, groups * batch, groups * batch}}, 0);
  for (int64_t length : {3, 80}) {  // shorter than the batch; longer than two 64-row chunks (batch 70)
    auto shifted = random_values<T>(groups * length * 7, 1.f);
    auto embeddings = random_values<T>(crops * 70 * 7, 1.f);
    swav::shift_queue(ptr(shifted), length, 7, ptr(embeddings), 70, {2, 0}, dtype, 0);
  }
}

template <typename T>
void run_all(const std::string& dtype) {
  // Sinkhorn: (G, N, K) ragged against the 256-column sweeps and the row blocks.
  for (int64_t rows_per_block : {64, 8}) {
    const int64_t groups = 2, rows = 37, cols = 300, from = 30;
    auto x = random_values<T>(groups * rows * cols, 10.f);
    auto col_max = filled(groups * cols, 0.f), col_sum = filled(groups * cols, 0.f);
    auto init_ws = filled(swav::sinkhorn_column_init_workspace(groups, rows, cols, rows_per_block), 0.f);
    swav::sinkhorn_column_init(ptr(x), groups, rows, cols, rows * cols, cols, dtype, 20.f, rows_per_block, ptr(col_max),
                               ptr(col_sum), ptr(init_ws), init_ws.size(), 0);
    auto potential = filled(groups * cols, -5.f), sums = filled(groups * cols, 0.f);
    auto codes = filled(groups * (rows - from) * cols, 0.f);
    auto step_ws = filled(swav::sinkhorn_row_step_workspace(groups, rows, cols, rows_per_block, true), 0.f);
    for (bool normalize : {true, false}) {
      swav::sinkhorn_row_step(ptr(x), groups, rows, cols, rows * cols, cols, dtype, 20.f, ptr(potential), 3.f, normalize,
                              rows_per_block, ptr(sums), ptr(codes), from, ptr(step_ws), step_ws.size(), 0);
      swav::sinkhorn_row_step(ptr(x), groups, rows, cols, rows * cols, cols, dtype, 20.f, ptr(potential), 3.f, normalize,
                              rows_per_block, 0, ptr(codes), from, 0, 0, 0);
    }
  }
  // Scoring: (M, K, D) ragged against the 64-row tiles, 32-column chunks and 64-column slices.
  for (int64_t key_splits : {1, 3}) {
    const int64_t rows = 70, prototypes = 130, dim = 70;
    auto z = random_values<T>(rows * dim, 0.2f), c = random_values<T>(prototypes * dim, 0.2f);
    auto lse = filled(rows, 0.f), out = filled(rows * dim, 0.f);
    auto lse_ws = filled(swav::scores_logsumexp_workspace(rows, dim, key_splits, true), 0.f);
    swav::scores_logsumexp(ptr(z), ptr(c), rows, prototypes, dim, dim, dim, dtype, 10.f, ptr(lse), ptr(out), key_splits,
                           ptr(lse_ws), lse_ws.size(), 0);
    auto weight = filled(rows, 2.f), grad = filled(prototypes * dim, 0.f);
    auto grad_ws = filled(swav::softmax_prototype_grad_workspace(prototypes, dim, key_splits), 0.f);
    swav::softmax_prototype_grad(ptr(z), ptr(c), ptr(lse), ptr(weight), rows, prototypes, dim, dim, dim, dtype, 10.f,
                                 ptr(grad), key_splits, ptr(grad_ws), grad_ws.size(), 0);
  }
  // Cross-entropy: V = 3 crops of B = 5 rows, K = 70.
  {
    const int64_t crops = 3, batch = 5, cols = 70, rows = crops * batch;
    const std::vector<int64_t> assign{2, 0};
    auto s = random_values<T>(rows * cols, 0.5f);
    auto codes = filled(assign.size() * batch * cols, 1.f / cols);
    auto lse = filled(rows, 0.f), cross = filled(rows, 0.f), scale = filled(1, 0.5f);
    auto row_weight = filled(rows, 0.75f);
    std::vector<T> grad(rows * cols);
    swav::scores_cross_entropy_forward(ptr(s), ptr(codes), rows, cols, cols, batch, assign, dtype, 10.f, ptr(lse),
                                       ptr(cross), 0);
    swav::scores_cross_entropy_backward(ptr(s), ptr(codes), ptr(lse), ptr(row_weight), ptr(scale), rows, cols, cols,
                                        batch, assign, dtype, 10.f, ptr(grad), 0);
  }
  run_backend_kernels<T>(dtype);
  std::printf("%s ok\n", dtype.c_str());
}

}  // namespace

int main() {
  run_all<float>("float32");
  run_all<__half>("float16");
  run_all<__nv_bfloat16>("bfloat16");
  std::printf("all kernels ran\n");
  return 0;
}
