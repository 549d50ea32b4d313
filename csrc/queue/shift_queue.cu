// shift_queue: a block owns 32 columns of one group (a lane per column) and moves them in place
// from the bottom up, in chunks of at most min(B, 64) rows: a chunk is loaded, the block waits,
// then stores it B rows lower and waits again, so no store lands on a row a later chunk has yet
// to read (the chunk is never taller than B). No two blocks touch the same element.
#include <algorithm>

#include "../common/dtype.cuh"
#include "queue.h"

namespace swav {
namespace {

constexpr int kQueueWarps = 8;
constexpr int kRowsPerWarp = 8;  // a chunk holds at most kQueueWarps · kRowsPerWarp rows

struct QueueArgs {
  int64_t length, dim, batch, chunk_rows;
  int crops[kMaxGroups];
};

template <typename T>
__global__ void __launch_bounds__(kQueueWarps * 32) shift_queue_kernel(T* queue, const T* embeddings,
                                                                       QueueArgs args) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t g = blockIdx.y, d = int64_t{blockIdx.x} * 32 + lane;
  const bool active = d < args.dim;
  T* group = queue + g * args.length * args.dim;
  const int64_t kept = args.length > args.batch ? args.length - args.batch : 0;
  for (int64_t bottom = kept; bottom > 0; bottom -= args.chunk_rows) {
    const int64_t top = bottom > args.chunk_rows ? bottom - args.chunk_rows : 0;
    T held[kRowsPerWarp];
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int64_t row = top + warp + int64_t{r} * kQueueWarps;
      if (active && row < bottom) held[r] = group[row * args.dim + d];
    }
    __syncthreads();
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int64_t row = top + warp + int64_t{r} * kQueueWarps;
      if (active && row < bottom) group[(row + args.batch) * args.dim + d] = held[r];
    }
    __syncthreads();
  }
  const int64_t front = args.batch < args.length ? args.batch : args.length;
  const T* rows = embeddings + args.crops[g] * args.batch * args.dim;
  for (int64_t j = warp; active && j < front; j += kQueueWarps) group[j * args.dim + d] = rows[j * args.dim + d];
}

}  // namespace

void shift_queue(std::uintptr_t queue, int64_t length, int64_t dim, std::uintptr_t embeddings, int64_t batch,
                 const std::vector<int64_t>& crops, const std::string& dtype, std::uintptr_t stream) {
  constexpr int64_t kMax32 = (int64_t{1} << 31) - 1;
  const DType type = parse_dtype(dtype, "dtype");
  require_pointer(queue, "queue", element_size(type));
  require_pointer(embeddings, "embeddings", element_size(type));
  require_range(length, "length", 1, kMax32);
  require_range(dim, "dim", 1, kMax32);
  require_range(batch, "batch", 1, kMax32);
  require(!crops.empty() && crops.size() <= static_cast<size_t>(kMaxGroups),
          "crops must hold 1 to " + std::to_string(kMaxGroups) + " entries, got " + std::to_string(crops.size()));
  QueueArgs args{};
  args.length = length;
  args.dim = dim;
  args.batch = batch;
  args.chunk_rows = std::min<int64_t>(batch, kQueueWarps * kRowsPerWarp);
  for (size_t g = 0; g < crops.size(); ++g) {
    require_range(crops[g], "crops entry", 0, kMax32 / batch);
    args.crops[g] = static_cast<int>(crops[g]);
  }
  const dim3 grid(static_cast<unsigned>(ceil_div(dim, 32)), static_cast<unsigned>(crops.size()));
  dispatch_dtype(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    shift_queue_kernel<T><<<grid, kQueueWarps * 32, 0, as_stream(stream)>>>(
        reinterpret_cast<T*>(queue), reinterpret_cast<const T*>(embeddings), args);
  });
  check_launch("shift_queue");
}

}  // namespace swav
