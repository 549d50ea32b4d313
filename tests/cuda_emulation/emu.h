// CPU emulation of the CUDA execution model, just enough to run csrc/'s kernels on host
// memory for tests on machines without a GPU (force-included by build.py, which also turns
// every `kernel<<<grid, block, smem, stream>>>(args)` into `emu::Launch(...).run("kernel", kernel, args)`).
//
// Blocks run one after another on one OS thread per CUDA thread: __syncthreads is a block barrier,
// warp shuffles exchange through per-warp slots between two warp barriers, and __shared__
// variables are function statics (blocks run one after another). It proves indexing, masking,
// barrier placement and reduction logic; it says nothing about speed or real memory ordering.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <array>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#undef __shared__
#define __shared__ static
#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __forceinline__
#define __forceinline__ inline
#undef __launch_bounds__
#define __launch_bounds__(...)

namespace emu {

struct Block {
  explicit Block(unsigned threads)
      : barrier(threads), warp_slots(threads / 32) {
    for (unsigned w = 0; w < threads / 32; ++w) warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
  }
  std::barrier<> barrier;
  std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
  std::vector<std::array<std::uint64_t, 32>> warp_slots;
};

struct ThreadState {
  uint3 thread_idx{}, block_idx{};
  dim3 block_dim, grid_dim;
  Block* block = nullptr;
};

inline thread_local ThreadState state;

// First failure seen by any emulated thread (checked and raised after the launch).
inline std::mutex failure_mutex;
inline std::string failure;

inline void fail(const std::string& message) {
  std::lock_guard<std::mutex> lock(failure_mutex);
  if (failure.empty()) failure = message;
}

// Names of the kernels launched since take_launches() last ran (the launch counter of the tests).
inline std::mutex launches_mutex;
inline std::vector<std::string> launches;

inline std::vector<std::string> take_launches() {
  std::lock_guard<std::mutex> lock(launches_mutex);
  std::vector<std::string> taken;
  taken.swap(launches);
  return taken;
}

struct Launch {
  dim3 grid, block;
  Launch(dim3 grid_, dim3 block_, std::size_t = 0, cudaStream_t = nullptr) : grid(grid_), block(block_) {}

  // One OS thread per CUDA thread, reused for every block; a block barrier separates the
  // blocks, whose __shared__ statics are therefore never in use by two blocks at once.
  template <typename Kernel, typename... Args>
  void run(const char* name, Kernel kernel, Args... args) {
    {
      std::lock_guard<std::mutex> lock(launches_mutex);
      launches.emplace_back(name);
    }
    const unsigned threads = block.x * block.y * block.z;
    if (threads % 32 != 0 || block.y != 1 || block.z != 1) throw std::runtime_error("emu: blocks must be 1-D warps");
    Block shared_state(threads);
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        state.thread_idx = uint3{t, 0, 0};
        state.block_dim = block;
        state.grid_dim = grid;
        state.block = &shared_state;
        for (unsigned bz = 0; bz < grid.z; ++bz) {
          for (unsigned by = 0; by < grid.y; ++by) {
            for (unsigned bx = 0; bx < grid.x; ++bx) {
              state.block_idx = uint3{bx, by, bz};
              kernel(args...);
              shared_state.barrier.arrive_and_wait();
            }
          }
        }
      });
    }
    for (auto& thread : pool) thread.join();
    std::lock_guard<std::mutex> lock(failure_mutex);
    if (!failure.empty()) {
      const std::string message = failure;
      failure.clear();
      throw std::runtime_error("emu: " + message);
    }
  }
};

inline void syncthreads() { state.block->barrier.arrive_and_wait(); }

template <typename V>
V shfl_xor(unsigned mask, V value, int lane_mask) {
  static_assert(sizeof(V) <= 8 && std::is_trivially_copyable<V>::value, "emu: shuffle of a small value");
  if (mask != 0xffffffffu) fail("shuffle with a partial mask");
  const unsigned warp = state.thread_idx.x / 32, lane = state.thread_idx.x % 32;
  auto& slots = state.block->warp_slots[warp];
  std::uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(V));
  slots[lane] = bits;
  state.block->warp_barriers[warp]->arrive_and_wait();
  bits = slots[(lane ^ static_cast<unsigned>(lane_mask)) % 32];
  state.block->warp_barriers[warp]->arrive_and_wait();
  V out;
  std::memcpy(&out, &bits, sizeof(V));
  return out;
}

}  // namespace emu

#define threadIdx (::emu::state.thread_idx)
#define blockIdx (::emu::state.block_idx)
#define blockDim (::emu::state.block_dim)
#define gridDim (::emu::state.grid_dim)
#define __syncthreads() ::emu::syncthreads()
#define __shfl_xor_sync(mask, value, lane_mask) ::emu::shfl_xor(mask, value, lane_mask)
#define __expf(x) expf(x)
#define __fmaf_rn(a, b, c) std::fma(static_cast<float>(a), static_cast<float>(b), static_cast<float>(c))

// ---- the CUDA runtime calls the host code makes ------------------------------------------
inline cudaError_t emu_get_last_error() { return cudaSuccess; }
inline const char* emu_error_text(cudaError_t) { return "emulated"; }
inline cudaError_t emu_device_count(int* count) {
  *count = 0;
  return cudaSuccess;
}
#define cudaGetLastError emu_get_last_error
#define cudaGetErrorName emu_error_text
#define cudaGetErrorString emu_error_text
#define cudaGetDeviceCount emu_device_count
