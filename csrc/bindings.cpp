// pybind11 module swav_kernels._C: raw device pointers, sizes, strides, dtype names and the
// CUDA stream handle in; Python exceptions out (ValueError for arguments, RuntimeError for CUDA).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cuda_runtime.h>

#include "common/launch.h"
#include "loss/loss.h"
#include "queue/queue.h"
#include "sinkhorn/steps.h"

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

  // ---- the kernels of the CUDA backend: the memory-bound steps between the library matmuls ------
  m.attr("MAX_GROUPS") = swav::kMaxGroups;
  m.def("sinkhorn_columns", &swav::sinkhorn_columns, py::arg("queue"), py::arg("queue_rows"), py::arg("batch"),
        py::arg("batch_rows"), py::arg("batch_first_rows"), py::arg("cols"), py::arg("dtype"), py::arg("inv_eps"),
        py::arg("row_potential"), py::arg("potential_stride"), py::arg("column_max"), py::arg("column_sumexp"),
        py::arg("accumulate"), py::arg("column_potential"), py::arg("log_cols"), py::arg("stream"),
        "Column step: per (g, k) LSE_n(x*inv_eps + b[g, n]); writes the (max, sumexp) pair and/or "
        "a = -log_cols - LSE (G, K) float32.");
  m.def("sinkhorn_rows", &swav::sinkhorn_rows, py::arg("queue"), py::arg("queue_rows"), py::arg("batch"),
        py::arg("batch_rows"), py::arg("batch_first_rows"), py::arg("cols"), py::arg("dtype"), py::arg("inv_eps"),
        py::arg("column_potential"), py::arg("row_potential"), py::arg("potential_stride"), py::arg("stream"),
        "Row step: b[g, n] = -LSE_k(x*inv_eps + a[g, k]).");
  m.def("sinkhorn_codes", &swav::sinkhorn_codes, py::arg("batch"), py::arg("batch_rows"), py::arg("batch_first_rows"),
        py::arg("cols"), py::arg("dtype"), py::arg("inv_eps"), py::arg("column_potential"), py::arg("normalize_rows"),
        py::arg("codes"), py::arg("stream"),
        "Codes of the batch rows (G, B, K) float32: softmax_k(x*inv_eps + a) or exp(x*inv_eps + a); may be in place.");
  m.def("swapped_loss", &swav::swapped_loss, py::arg("scores"), py::arg("scores_dtype"), py::arg("scores_crop_stride"),
        py::arg("codes"), py::arg("crops_for_assign"), py::arg("n_crops"), py::arg("batch"), py::arg("first_image"),
        py::arg("images"), py::arg("cols"), py::arg("inv_tau"), py::arg("loss_scale"), py::arg("loss"),
        py::arg("grad"), py::arg("grad_dtype"), py::arg("grad_crop_stride"), py::arg("stream"),
        "Per image of a chunk: the swapped-prediction loss (B,) float32 and, unless grad is 0, d loss / d scores.");
  m.def("scale_gradients", &swav::scale_gradients, py::arg("upstream"), py::arg("coef"), py::arg("jobs"),
        py::arg("stream"),
        "dst = upstream * coef * src for each (src, src_dtype, dst, dst_dtype, rows, cols, crops, batch, chunk) job.");
  m.def("shift_queue", &swav::shift_queue, py::arg("queue"), py::arg("length"), py::arg("dim"), py::arg("embeddings"),
        py::arg("batch"), py::arg("crops"), py::arg("dtype"), py::arg("stream"),
        "In place: queue (G, L, D) shifted down by B rows, the batch rows of crop crops[g] at the front.");
}
