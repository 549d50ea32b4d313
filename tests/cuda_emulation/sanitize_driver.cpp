// Runs every kernel of csrc/ per dtype and on its edge cases on exactly sized heap buffers,
// under the CPU emulation (emu.h). build.py builds it with -fsanitize=address (an
// out-of-bounds access of a kernel is a heap overflow here) or -fsanitize=thread (a missing
// __syncthreads is a data race between the emulated threads of a block).
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "loss/loss.h"
#include "queue/queue.h"
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
  for (int64_t length : {3, 200}) {  // shorter than the batch (70); 130 rows kept: moved in three chunks
    auto shifted = random_values<T>(groups * length * 7, 1.f);
    auto embeddings = random_values<T>(crops * 70 * 7, 1.f);
    swav::shift_queue(ptr(shifted), length, 7, ptr(embeddings), 70, {2, 0}, dtype, 0);
  }
}

template <typename T>
void run_all(const std::string& dtype) {
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
