#include "launch.h"

namespace swav {

DType parse_dtype(const std::string& name, const char* argument) {
  if (name == "float32") return DType::kFloat32;
  if (name == "float16") return DType::kFloat16;
  if (name == "bfloat16") return DType::kBFloat16;
  throw ArgumentError(std::string(argument) + " must be 'float32', 'float16' or 'bfloat16', got '" + name + "'");
}

std::size_t element_size(DType type) {
  return type == DType::kFloat32 ? 4 : 2;
}

void check_launch(const char* kernel_name) {
  cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA error in kernel ") + kernel_name + ": " +
                             cudaGetErrorName(status) + ": " + cudaGetErrorString(status));
  }
}

void require(bool condition, const std::string& message) {
  if (!condition) throw ArgumentError(message);
}

void require_pointer(std::uintptr_t pointer, const char* name, std::size_t alignment) {
  require(pointer != 0, std::string(name) + " must be a non-null device pointer");
  require(pointer % alignment == 0,
          std::string(name) + " must be aligned to " + std::to_string(alignment) + " bytes");
}

void require_range(int64_t value, const char* name, int64_t low, int64_t high) {
  require(value >= low && value <= high, std::string(name) + " must be in [" + std::to_string(low) + ", " +
                                             std::to_string(high) + "], got " + std::to_string(value));
}

}  // namespace swav
