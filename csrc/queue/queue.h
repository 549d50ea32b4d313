// The feature queue's update of facebookresearch/swav (SwAVLoss) in one launch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace swav {

// In place: queue (G, L, D) moves down by B rows (row l ← row l − B for l ≥ B) and row j < min(B, L)
// of group g becomes embeddings[crops[g]·B + j] (crop-major (V·B, D)); queue and embeddings share
// `dtype` and are contiguous.
void shift_queue(std::uintptr_t queue, int64_t length, int64_t dim, std::uintptr_t embeddings, int64_t batch,
                 const std::vector<int64_t>& crops, const std::string& dtype, std::uintptr_t stream);

}  // namespace swav
