// Runs every kernel of csrc/ per dtype and split configuration on exactly sized heap buffers,
// under the CPU emulation (emu.h). build.py builds it with -fsanitize=address (an
// out-of-bounds access of a kernel is a heap overflow here) or -fsanitize=thread (a missing
// __syncthreads is a data race between the emulated threads of a block).
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cross_entropy/cross_entropy.h"
#include "scoring/scoring.h"
#include "sinkhorn/sinkhorn.h"

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
