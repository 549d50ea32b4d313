// Shared helpers for the CUDA kernels: dtype tags, stream handles and error reporting.
// Kernels receive raw device pointers, sizes and PyTorch's current stream; no libtorch.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace swav {

// Assign crops (Sinkhorn groups) one call takes.
constexpr int kMaxGroups = 64;

// Element types the kernels accept; Python passes the name of the torch dtype.
enum class DType { kFloat32, kFloat16, kBFloat16 };

DType parse_dtype(const std::string& name, const char* argument);

// Bytes per element of `type`.
std::size_t element_size(DType type);

inline cudaStream_t as_stream(std::uintptr_t handle) {
  return reinterpret_cast<cudaStream_t>(handle);
}

// Throws std::runtime_error naming the kernel if the last launch failed.
void check_launch(const char* kernel_name);

// Argument errors raised before any launch (become Python ValueError).
struct ArgumentError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

void require(bool condition, const std::string& message);

// `pointer` must be a non-null device address aligned to `alignment` bytes.
void require_pointer(std::uintptr_t pointer, const char* name, std::size_t alignment);

// `value` must lie in [low, high]; the message names the argument and the range.
void require_range(int64_t value, const char* name, int64_t low, int64_t high);

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace swav
