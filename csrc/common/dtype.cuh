// Element types of the kernels: conversions to and from the fp32 accumulators, and the
// host-side dispatch from a DType tag to a template instantiation.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "launch.h"

namespace swav {

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<T>{}) with the C++ element type of `type`.
template <typename F>
void dispatch_dtype(DType type, F&& f) {
  switch (type) {
    case DType::kFloat32: f(TypeTag<float>{}); break;
    case DType::kFloat16: f(TypeTag<__half>{}); break;
    case DType::kBFloat16: f(TypeTag<__nv_bfloat16>{}); break;
  }
}

}  // namespace swav
