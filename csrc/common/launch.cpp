#include "launch.h"

namespace swav {

DType parse_dtype(const std::string& name, const char* argument) {
  if (name == "float32") return DType::kFloat32;
  if (name == "float16") return DType::kFloat16;
  if (name == "bfloat16") return DType::kBFloat16;
  throw ArgumentError(std::string(argument) + " must be 'float32', 'float16' or 'bfloat16', got '" + name + "'");
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

}  // namespace swav
