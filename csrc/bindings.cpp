// pybind11 module swav_kernels._C: raw device pointers, sizes, strides, dtype names and the
// CUDA stream handle in; Python exceptions out (ValueError for arguments, RuntimeError for CUDA).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cuda_runtime.h>

#include "common/launch.h"
#include "cross_entropy/cross_entropy.h"
#include "scoring/scoring.h"
#include "sinkhorn/sinkhorn.h"
#include "sinkhorn/steps.h"
#include "loss/loss.h"
#include "queue/queue.h"

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

  // ---- family 2: Sinkhorn ----------------------------------------------------------------
  m.attr("SINKHORN_MAX_ROWS_PER_BLOCK") = swav::kSinkhornMaxRowsPerBlock;
  m.def("sinkhorn_column_init_workspace", &swav::sinkhorn_column_init_workspace, py::arg("groups"), py::arg("rows"),
        py::arg("cols"), py::arg("rows_per_block"), "float32 elements of workspace sinkhorn_column_init needs.");
  m.def("sinkhorn_row_step_workspace", &swav::sinkhorn_row_step_workspace, py::arg("groups"), py::arg("rows"),
        py::arg("cols"), py::arg("rows_per_block"), py::arg("want_column_sums"),
        "float32 elements of workspace sinkhorn_row_step needs.");
  m.def("sinkhorn_column_init", &swav::sinkhorn_column_init, py::arg("x"), py::arg("groups"), py::arg("rows"),
        py::arg("cols"), py::arg("group_stride"), py::arg("row_stride"), py::arg("dtype"), py::arg("inv_eps"),
        py::arg("rows_per_block"), py::arg("col_max"), py::arg("col_sum"), py::arg("workspace"),
        py::arg("workspace_floats"), py::arg("stream"),
        "col_max[g, k] = max_n x[g, n, k]*inv_eps; col_sum[g, k] = sum_n exp(x*inv_eps - col_max); (G, K) float32.");
  m.def("sinkhorn_row_step", &swav::sinkhorn_row_step, py::arg("x"), py::arg("groups"), py::arg("rows"),
        py::arg("cols"), py::arg("group_stride"), py::arg("row_stride"), py::arg("dtype"), py::arg("inv_eps"),
        py::arg("col_potential"), py::arg("log_rows_total"), py::arg("normalize_rows"), py::arg("rows_per_block"),
        py::arg("column_sums"), py::arg("codes"), py::arg("codes_from_row"), py::arg("workspace"),
        py::arg("workspace_floats"), py::arg("stream"),
        "One per-sample Sinkhorn step over potentials: column sums (G, K) and/or codes (G, N - from, K), "
        "float32; 0 skips an output.");

  // ---- family 1: prototype scoring + temperature softmax ---------------------------------
  m.attr("SCORE_TILE_ROWS") = swav::kScoreTileRows;
  m.attr("SCORE_TILE_KEYS") = swav::kScoreTileKeys;
  m.attr("SCORE_TILE_SLICE") = swav::kScoreTileSlice;
  m.def("scores_logsumexp_workspace", &swav::scores_logsumexp_workspace, py::arg("rows"), py::arg("dim"),
        py::arg("key_splits"), py::arg("with_output"), "float32 elements of workspace scores_logsumexp needs.");
  m.def("softmax_prototype_grad_workspace", &swav::softmax_prototype_grad_workspace, py::arg("prototypes"),
        py::arg("dim"), py::arg("key_splits"), "float32 elements of workspace softmax_prototype_grad needs.");
  m.def("scores_logsumexp", &swav::scores_logsumexp, py::arg("z"), py::arg("c"), py::arg("rows"),
        py::arg("prototypes"), py::arg("dim"), py::arg("z_row_stride"), py::arg("c_row_stride"), py::arg("dtype"),
        py::arg("inv_tau"), py::arg("lse"), py::arg("out"), py::arg("key_splits"), py::arg("workspace"),
        py::arg("workspace_floats"), py::arg("stream"),
        "lse[m] = log sum_k exp(inv_tau z[m].c[k]) (M,); out = softmax(inv_tau Z C^T) C (M, D) unless out is 0.");
  m.def("softmax_prototype_grad", &swav::softmax_prototype_grad, py::arg("z"), py::arg("c"), py::arg("lse"),
        py::arg("row_weight"), py::arg("rows"), py::arg("prototypes"), py::arg("dim"), py::arg("z_row_stride"),
        py::arg("c_row_stride"), py::arg("dtype"), py::arg("inv_tau"), py::arg("grad"), py::arg("key_splits"),
        py::arg("workspace"), py::arg("workspace_floats"), py::arg("stream"),
        "grad[k] = sum_m row_weight[m] exp(inv_tau z[m].c[k] - lse[m]) z[m]; (K, D) float32.");

  // ---- family 3: multi-crop cross-entropy on scores --------------------------------------
  m.attr("MAX_ASSIGN_CROPS") = swav::kMaxAssignCrops;
  m.def("scores_cross_entropy_forward", &swav::scores_cross_entropy_forward, py::arg("s"), py::arg("codes"),
        py::arg("rows"), py::arg("cols"), py::arg("row_stride"), py::arg("batch"), py::arg("crops_for_assign"),
        py::arg("dtype"), py::arg("inv_tau"), py::arg("lse"), py::arg("cross"), py::arg("stream"),
        "lse[r] = log sum_k exp(inv_tau s[r, k]); cross[v B + b] = sum_{a: A[a] != v} codes[a, b] . s[v B + b].");
  m.def("scores_cross_entropy_backward", &swav::scores_cross_entropy_backward, py::arg("s"), py::arg("codes"),
        py::arg("lse"), py::arg("row_weight"), py::arg("scale"), py::arg("rows"), py::arg("cols"), py::arg("row_stride"), py::arg("batch"),
        py::arg("crops_for_assign"), py::arg("dtype"), py::arg("inv_tau"), py::arg("grad"), py::arg("stream"),
        "grad = scale (row_weight softmax(inv_tau s) - sum_{a: A[a] != v} codes[a]) in the dtype of s.");

  // ---- the kernels of the CUDA backend: memory-bound steps between the library matmuls ----------
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
