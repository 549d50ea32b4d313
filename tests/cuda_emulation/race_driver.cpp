// One sinkhorn_columns launch (one block of 8 warps over 300 rows of 20 columns: each warp writes its
// running log-sum-exps to shared memory, then warp 0 reads all of them). test_cuda_emulated_sanitizers.py
// builds it under ThreadSanitizer twice, from csrc/ as it is and from a copy of columns.cu without its
// __syncthreads, and expects a data race only in the second.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "sinkhorn/steps.h"

int main() {
  const int64_t rows = 300, cols = 20;
  std::vector<float> x(rows * cols);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 37) % 101) / 101.f;
  std::vector<float> potential(cols, 0.f);
  auto ptr = [](std::vector<float>& v) { return reinterpret_cast<std::uintptr_t>(v.data()); };
  swav::sinkhorn_columns(0, 0, ptr(x), rows, {0}, cols, "float32", 20.f, 0, 0, 0, 0, false, ptr(potential), 3.f, 0);
  std::printf("column step ran\n");
  return 0;
}
