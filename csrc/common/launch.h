// Shared helpers for the CUDA kernels: dtype tags, stream handles and error reporting.
// Kernels receive raw device pointers, sizes and PyTorch's current stream; no libtorch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace swav {

// Element types the kernels accept; Python passes the name of the torch dtype.
enum class DType { kFloat32, kFloat16, kBFloat16 };

DType parse_dtype(const std::string& name, const char* argument);

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

}  // namespace swav
