// One sinkhorn_row_step launch (8 rows of 300 columns in one block of 256 emulated threads: each
// warp writes one row's log-sum-exp to shared memory, then every thread reads all of them).
// test_cuda_emulated_sanitizers.py builds it under ThreadSanitizer twice, from csrc/ as it is and
// from a copy of row_step.cu without its __syncthreads, and expects a data race only in the second.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "sinkhorn/sinkhorn.h"

int main() {
  const int64_t groups = 1, rows = 8, cols = 300, rows_per_block = 8;
  std::vector<float> x(groups * rows * cols);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 37) % 101) / 101.f;
  std::vector<float> potential(groups * cols, 0.f), sums(groups * cols, 0.f), codes(groups * rows * cols, 0.f);
  std::vector<float> workspace(swav::sinkhorn_row_step_workspace(groups, rows, cols, rows_per_block, true), 0.f);
  auto ptr = [](std::vector<float>& v) { return reinterpret_cast<std::uintptr_t>(v.data()); };
  swav::sinkhorn_row_step(ptr(x), groups, rows, cols, rows * cols, cols, "float32", 20.f, ptr(potential), 3.f, true,
                          rows_per_block, ptr(sums), ptr(codes), 0, ptr(workspace),
                          static_cast<int64_t>(workspace.size()), 0);
  std::printf("row step ran\n");
  return 0;
}
