// The rows of G Sinkhorn groups, read in place from two segments (swav_kernels/cuda/contract.py):
// row n < L of group g is queue[(g·L + n)·K …], row L + j is batch[(first_row[g] + j)·K …]; every
// row is K contiguous values of one dtype. The queue segment holds the queued rows' scores (L may be
// 0), the batch segment the scores of the batch: the caller's crop-major (V·B, K) scores, or the
// (G·B, K) fp32 buffer the backend scored the assign crops into.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../common/launch.h"

namespace swav {

struct SinkhornSegments {
  const void* queue;  // (G·L, K), null when L = 0
  const void* batch;  // rows first_row[g] + j, j < B
  int64_t queue_rows;  // L
  int64_t batch_rows;  // B
  int64_t cols;        // K
  int groups;          // G
  int64_t first_row[kMaxGroups];
};

// Validates the segment arguments of a binding and packs them for a kernel.
inline SinkhornSegments make_segments(std::uintptr_t queue, int64_t queue_rows, std::uintptr_t batch,
                                      int64_t batch_rows, const std::vector<int64_t>& first_rows, int64_t cols,
                                      DType type) {
  constexpr int64_t kMax32 = (int64_t{1} << 31) - 1;
  require(!first_rows.empty() && first_rows.size() <= static_cast<size_t>(kMaxGroups),
          "batch_first_rows must hold one entry per group (1 to " + std::to_string(kMaxGroups) + "), got " +
              std::to_string(first_rows.size()));
  require_range(queue_rows, "queue_rows", 0, kMax32);
  require_range(batch_rows, "batch_rows", 0, kMax32);
  require(queue_rows + batch_rows >= 1, "queue_rows + batch_rows must be >= 1");
  require_range(cols, "cols", 1, kMax32);
  if (queue_rows > 0) require_pointer(queue, "queue", element_size(type));
  if (batch_rows > 0) require_pointer(batch, "batch", element_size(type));
  SinkhornSegments s{};
  s.queue = reinterpret_cast<const void*>(queue);
  s.batch = reinterpret_cast<const void*>(batch);
  s.queue_rows = queue_rows;
  s.batch_rows = batch_rows;
  s.cols = cols;
  s.groups = static_cast<int>(first_rows.size());
  for (int g = 0; g < s.groups; ++g) {
    require(first_rows[g] >= 0, "batch_first_rows entries must be >= 0, got " + std::to_string(first_rows[g]));
    s.first_row[g] = first_rows[g];
  }
  return s;
}

}  // namespace swav
