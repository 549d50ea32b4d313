#pragma once

#include <cstdint>
#include <string>

namespace swav {

// out[r] = log Σ_k exp(scale · x[r, k]) for r < rows, k < cols; x (rows × row_stride) of
// `dtype` ("float32" | "float16" | "bfloat16"), out fp32, launched on `stream`.
void row_logsumexp(std::uintptr_t x, std::uintptr_t out, int64_t rows, int64_t cols, int64_t row_stride,
                   const std::string& dtype, float scale, std::uintptr_t stream);

}  // namespace swav
