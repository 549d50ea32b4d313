// scale_gradients: the backward of the loss, dst = upstream · coef · src for up to two tensors
// in one launch (blockIdx.y picks the job), each element converted between the jobs' dtypes.
#include <algorithm>
#include <cmath>

#include "../common/dtype.cuh"
#include "loss.h"

namespace swav {
namespace {

constexpr int kThreads = 256;

struct Job {
  const void* src;
  void* dst;
  DType src_type, dst_type;
  int64_t rows, cols, crops, batch, chunk;
};

struct ScaleArgs {
  const float* upstream;
  float coef;
  Job jobs[kMaxScaleJobs];
};

__device__ __forceinline__ float load(const void* base, DType type, int64_t index) {
  switch (type) {
    case DType::kFloat16: return to_float(static_cast<const __half*>(base)[index]);
    case DType::kBFloat16: return to_float(static_cast<const __nv_bfloat16*>(base)[index]);
    default: return static_cast<const float*>(base)[index];
  }
}

__device__ __forceinline__ void store(void* base, DType type, int64_t index, float value) {
  switch (type) {
    case DType::kFloat16: static_cast<__half*>(base)[index] = from_float<__half>(value); break;
    case DType::kBFloat16: static_cast<__nv_bfloat16*>(base)[index] = from_float<__nv_bfloat16>(value); break;
    default: static_cast<float*>(base)[index] = value;
  }
}

// The row of src that holds row m of dst (loss.h).
__device__ __forceinline__ int64_t source_row(const Job& job, int64_t m) {
  const int64_t v = m / job.batch, b = m % job.batch;
  const int64_t b0 = b - b % job.chunk;
  const int64_t images = job.chunk < job.batch - b0 ? job.chunk : job.batch - b0;
  return job.crops * b0 + v * images + (b - b0);
}

__global__ void __launch_bounds__(kThreads) scale_gradients_kernel(ScaleArgs args) {
  const Job& job = args.jobs[blockIdx.y];
  const float factor = *args.upstream * args.coef;
  const int64_t count = job.rows * job.cols;
  for (int64_t e = int64_t{blockIdx.x} * kThreads + threadIdx.x; e < count; e += int64_t{gridDim.x} * kThreads) {
    const int64_t m = e / job.cols, c = e - m * job.cols;
    store(job.dst, job.dst_type, e, factor * load(job.src, job.src_type, source_row(job, m) * job.cols + c));
  }
}

}  // namespace

void scale_gradients(std::uintptr_t upstream, float coef, const std::vector<ScaleJob>& jobs, std::uintptr_t stream) {
  require_pointer(upstream, "upstream", sizeof(float));
  require(std::isfinite(coef), "coef must be finite");
  require(!jobs.empty() && jobs.size() <= static_cast<size_t>(kMaxScaleJobs),
          "jobs must hold 1 to " + std::to_string(kMaxScaleJobs) + " entries, got " + std::to_string(jobs.size()));
  ScaleArgs args{};
  args.upstream = reinterpret_cast<const float*>(upstream);
  args.coef = coef;
  int64_t most = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const auto& [src, src_dtype, dst, dst_dtype, rows, cols, crops, batch, chunk] = jobs[j];
    Job& job = args.jobs[j];
    job.src_type = parse_dtype(src_dtype, "src_dtype");
    job.dst_type = parse_dtype(dst_dtype, "dst_dtype");
    require_pointer(src, "src", element_size(job.src_type));
    require_pointer(dst, "dst", element_size(job.dst_type));
    require(src != dst, "dst must not be src");
    require(rows >= 1 && cols >= 1, "rows and cols must be >= 1, got " + std::to_string(rows) + " and " +
                                        std::to_string(cols));
    require(crops >= 1 && batch >= 1 && crops * batch == rows,
            "rows must be crops * batch, got rows=" + std::to_string(rows) + ", crops=" + std::to_string(crops) +
                ", batch=" + std::to_string(batch));
    require_range(chunk, "chunk", 1, batch);
    job.src = reinterpret_cast<const void*>(src);
    job.dst = reinterpret_cast<void*>(dst);
    job.rows = rows;
    job.cols = cols;
    job.crops = crops;
    job.batch = batch;
    job.chunk = chunk;
    most = std::max(most, rows * cols);
  }
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>(ceil_div(most, kThreads), int64_t{1} << 16)),
                  static_cast<unsigned>(jobs.size()));
  scale_gradients_kernel<<<grid, kThreads, 0, as_stream(stream)>>>(args);
  check_launch("scale_gradients");
}

}  // namespace swav
