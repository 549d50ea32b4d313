// pybind11 module swav_kernels._C: raw device pointers, sizes, dtype names and the CUDA
// stream handle in; Python exceptions out (ValueError for arguments, RuntimeError for CUDA).
#include <pybind11/pybind11.h>

#include <cuda_runtime.h>

#include "common/launch.h"
#include "rowwise/row_logsumexp.h"

namespace py = pybind11;

#ifndef SWAV_KERNELS_CUDA_ARCHS
#define SWAV_KERNELS_CUDA_ARCHS "unknown"
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "swav-kernels CUDA kernels (device pointers + stream; no libtorch)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const swav::ArgumentError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.def("cuda_runtime_version", [] { return CUDART_VERSION; },
        "CUDA runtime version the module was compiled against (e.g. 13000).");
  m.def("compiled_archs", [] { return std::string(SWAV_KERNELS_CUDA_ARCHS); },
        "CUDA architectures compiled into the module (CMAKE_CUDA_ARCHITECTURES).");
  m.def("device_count", [] {
        int count = 0;
        if (cudaGetDeviceCount(&count) != cudaSuccess) {
          cudaGetLastError();  // clear the sticky "no driver / no device" error
          return 0;
        }
        return count;
      },
      "Number of CUDA devices the runtime sees (0 without a driver or GPU).");

  m.def("row_logsumexp", &swav::row_logsumexp, py::arg("x"), py::arg("out"), py::arg("rows"), py::arg("cols"),
        py::arg("row_stride"), py::arg("dtype"), py::arg("scale"), py::arg("stream"),
        "out[r] = log sum_k exp(scale * x[r, k]); x of dtype rows x row_stride, out float32.");
}
