// The tiled kernel behind family 1 (flash-attention style; scores never stored).
//
// A block owns kScoreTileRows "query" rows and walks the "key" rows of its split in steps of
// kScoreTileKeys. Every step recomputes the score tile S = Q Kᵀ (64 × 64, fp32 accumulators;
// tensor cores via WMMA 16×16×16 for fp16/bf16, exact fp32 FMA for fp32), then:
//   kLogSumExp:     online (max, Σexp) of inv_tau·S per query row;
//   kSoftmaxOutput: P = exp(inv_tau·S − lse[query row]),  acc += P · K[:, slice];
//   kPrototypeGrad: P = w[key]·exp(inv_tau·S − lse[key]), acc += P · K[:, slice].
// The output modes are the second pass after kLogSumExp has produced the exact lse, so the
// accumulator needs no rescaling. For fp16/bf16 the tensor-core product takes P in the input
// type: fp16 keeps 11 bits of P (enough); for bf16, P = P_hi + P_lo (two bf16 terms, two
// products) keeps ~16 bits, since bf16's 8 bits alone cost ~0.3% of the result.
// Each block writes its own partial (split, query row, ...) slot: no atomics.
#pragma once

#include <mma.h>

#include <type_traits>

#include "../common/reduce.cuh"
#include "scoring.h"

namespace swav {

constexpr int kTileThreads = 256;
static_assert(kTileThreads == 4 * kScoreTileRows, "kLogSumExp gives every query row 4 threads");
static_assert(kScoreTileRows == 64 && kScoreTileKeys == 64 && kScoreTileSlice == 64,
              "the warp layouts below assume 64 × 64 tiles and 8 warps");

enum class TileMode { kLogSumExp, kSoftmaxOutput, kPrototypeGrad };

constexpr std::size_t round_up_bytes(std::size_t bytes) { return (bytes + 127) / 128 * 128; }
constexpr std::size_t max_bytes(std::size_t a, std::size_t b) { return a > b ? a : b; }

// Shared-memory layout per element type. Leading dimensions are padded: for WMMA they stay
// multiples of 16 bytes (and every fragment pointer 32-byte aligned); for the scalar fp32
// path an odd stride keeps the column reads of the operand chunks free of bank conflicts.
template <typename T>
struct TileLayout {
  static constexpr bool kTensorCores = !std::is_same<T, float>::value;
  static constexpr bool kSplitProbs = std::is_same<T, __nv_bfloat16>::value;  // P as P_hi + P_lo
  static constexpr int kChunk = 32;  // dim columns per operand chunk
  static constexpr int kOperandLd = kTensorCores ? kChunk + 8 : kChunk + 1;
  static constexpr int kValueLd = kTensorCores ? kScoreTileSlice + 8 : kScoreTileSlice;
  static constexpr int kScoreLd = kScoreTileKeys + 4;
  static constexpr int kProbLd = kScoreTileKeys + 8;

  // [operand chunks | value tile] (one region, used in turn) · scores (fp32) · P (T) · P_lo (T) · vectors
  static constexpr std::size_t kOperandBytes = (kScoreTileRows + kScoreTileKeys) * kOperandLd * sizeof(T);
  static constexpr std::size_t kValueBytes = kScoreTileKeys * kValueLd * sizeof(T);
  static constexpr std::size_t kScoreOffset = round_up_bytes(max_bytes(kOperandBytes, kValueBytes));
  static constexpr std::size_t kProbOffset = kScoreOffset + round_up_bytes(kScoreTileRows * kScoreLd * sizeof(float));
  static constexpr std::size_t kProbBytes = kTensorCores ? round_up_bytes(kScoreTileRows * kProbLd * sizeof(T)) : 0;
  static constexpr std::size_t kProbLoOffset = kProbOffset + kProbBytes;
  static constexpr std::size_t kVectorOffset = kProbLoOffset + (kSplitProbs ? kProbBytes : 0);
  static constexpr std::size_t kBytes = kVectorOffset + (kScoreTileRows + 2 * kScoreTileKeys) * sizeof(float);
  static_assert(kBytes <= 48 * 1024, "static shared memory is limited to 48 KiB");
  static_assert(kScoreLd >= kScoreTileSlice, "the output tile is staged in the score buffer");
};

struct TileArgs {
  const void* query;
  int64_t query_rows, query_stride;
  const void* keys;
  int64_t key_rows, key_stride;
  int64_t dim;
  float inv_tau;
  int64_t keys_per_split;   // a multiple of kScoreTileKeys
  const float* query_lse;   // kSoftmaxOutput: (query_rows,)
  const float* key_lse;     // kPrototypeGrad: (key_rows,)
  const float* key_weight;  // kPrototypeGrad: (key_rows,)
  float* partial;           // kLogSumExp: running max (splits, query_rows); else (splits, query_rows, dim)
  float* partial_sum;       // kLogSumExp: running sum (splits, query_rows)
};

// dst[r, c] = src[row0 + r, col0 + c] for r < rows, c < cols, zero outside [.., row_end) × [.., col_end).
template <typename T>
__device__ __forceinline__ void load_tile(T* dst, int ld, const T* __restrict__ src, int64_t stride, int64_t row0,
                                          int64_t row_end, int64_t col0, int64_t col_end, int rows, int cols) {
  for (int i = threadIdx.x; i < rows * cols; i += kTileThreads) {
    const int r = i / cols, c = i % cols;
    const int64_t gr = row0 + r, gc = col0 + c;
    dst[r * ld + c] = (gr < row_end && gc < col_end) ? src[gr * stride + gc] : from_float<T>(0.f);
  }
}

// scores[r, n] = Σ_d Q[row0 + r, d]·K[key0 + n, d] over all of dim, as fp32 (zero-padded rows
// give zero scores). Starts with a __syncthreads (shared buffers free); the caller must
// __syncthreads() before reading `scores`.
template <typename T>
__device__ __forceinline__ void tile_scores(const TileArgs& args, int64_t row0, int64_t key0, int64_t key_end,
                                            T* query_chunk, T* key_chunk, float* scores) {
  using L = TileLayout<T>;
  const T* query = static_cast<const T*>(args.query);
  const T* keys = static_cast<const T*>(args.keys);
  // Stage dims [d0, d0 + kChunk) of the query rows and of the keys in shared memory.
  auto load_chunks = [&](int64_t d0) {
    __syncthreads();
    load_tile(query_chunk, L::kOperandLd, query, args.query_stride, row0, args.query_rows, d0, args.dim,
              kScoreTileRows, L::kChunk);
    load_tile(key_chunk, L::kOperandLd, keys, args.key_stride, key0, key_end, d0, args.dim, kScoreTileKeys,
              L::kChunk);
    __syncthreads();
  };
  if constexpr (L::kTensorCores) {
    namespace wmma = nvcuda::wmma;
    // 8 warps over the 4 × 4 grid of 16 × 16 score tiles: warp w owns row w / 2, columns 2(w % 2) + {0, 1}.
    const int warp = threadIdx.x / 32, tile_row = warp / 2, tile_col = (warp % 2) * 2;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2];
    wmma::fill_fragment(acc[0], 0.f);
    wmma::fill_fragment(acc[1], 0.f);
    for (int64_t d0 = 0; d0 < args.dim; d0 += L::kChunk) {
      load_chunks(d0);
#pragma unroll
      for (int kk = 0; kk < L::kChunk; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::load_matrix_sync(a, query_chunk + tile_row * 16 * L::kOperandLd + kk, L::kOperandLd);
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          // Kᵀ as a column-major operand: element (d, n) is key_chunk[n · ld + d].
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
          wmma::load_matrix_sync(b, key_chunk + (tile_col + j) * 16 * L::kOperandLd + kk, L::kOperandLd);
          wmma::mma_sync(acc[j], a, b, acc[j]);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(scores + tile_row * 16 * L::kScoreLd + (tile_col + j) * 16, acc[j], L::kScoreLd,
                              wmma::mem_row_major);
    }
  } else {
    // Thread (tr, tc) owns rows tr + 16i and columns tc + 16j, i, j < 4: exact fp32 FMA in dim order.
    const int tr = threadIdx.x / 16, tc = threadIdx.x % 16;
    float acc[4][4] = {};
    for (int64_t d0 = 0; d0 < args.dim; d0 += L::kChunk) {
      load_chunks(d0);
#pragma unroll 8
      for (int kk = 0; kk < L::kChunk; ++kk) {
        float a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = query_chunk[(tr + 16 * i) * L::kOperandLd + kk];
#pragma unroll
        for (int j = 0; j < 4; ++j) b[j] = key_chunk[(tc + 16 * j) * L::kOperandLd + kk];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) scores[(tr + 16 * i) * L::kScoreLd + tc + 16 * j] = acc[i][j];
    }
  }
}

// The (kScoreTileRows × kScoreTileSlice) fp32 accumulator of P · V, spread over the block.
template <typename T, bool kTensorCores = TileLayout<T>::kTensorCores>
struct ValueAccumulator;

template <typename T>
struct ValueAccumulator<T, true> {
  using L = TileLayout<T>;
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> acc[2];

  __device__ __forceinline__ void zero() {
    nvcuda::wmma::fill_fragment(acc[0], 0.f);
    nvcuda::wmma::fill_fragment(acc[1], 0.f);
  }

  // acc += P (rows × keys, T, ld kProbLd) · V (keys × slice, T, ld kValueLd), plus P_lo · V when
  // L::kSplitProbs; same warp layout as the scores.
  __device__ __forceinline__ void add_product(const T* probs, const T* probs_lo, const float* /*unused*/,
                                              const T* values) {
    namespace wmma = nvcuda::wmma;
    const int warp = threadIdx.x / 32, tile_row = warp / 2, tile_col = (warp % 2) * 2;
#pragma unroll
    for (int kk = 0; kk < kScoreTileKeys; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a, a_lo;
      wmma::load_matrix_sync(a, probs + tile_row * 16 * L::kProbLd + kk, L::kProbLd);
      if constexpr (L::kSplitProbs) wmma::load_matrix_sync(a_lo, probs_lo + tile_row * 16 * L::kProbLd + kk, L::kProbLd);
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
        wmma::load_matrix_sync(b, values + kk * L::kValueLd + (tile_col + j) * 16, L::kValueLd);
        if constexpr (L::kSplitProbs) wmma::mma_sync(acc[j], a_lo, b, acc[j]);
        wmma::mma_sync(acc[j], a, b, acc[j]);
      }
    }
  }

  // out[(row0 + r) · dim + col0 + c] = acc[r, c] inside the matrix; `staging` is a free
  // fp32 buffer of kScoreTileRows × kScoreLd. Contains __syncthreads.
  __device__ __forceinline__ void store(float* staging, float* out, int64_t row0, int64_t rows, int64_t col0,
                                        int64_t dim) {
    namespace wmma = nvcuda::wmma;
    const int warp = threadIdx.x / 32, tile_row = warp / 2, tile_col = (warp % 2) * 2;
    __syncthreads();
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::store_matrix_sync(staging + tile_row * 16 * L::kScoreLd + (tile_col + j) * 16, acc[j], L::kScoreLd,
                              wmma::mem_row_major);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < kScoreTileRows * kScoreTileSlice; i += kTileThreads) {
      const int r = i / kScoreTileSlice, c = i % kScoreTileSlice;
      if (row0 + r < rows && col0 + c < dim) out[(row0 + r) * dim + col0 + c] = staging[r * L::kScoreLd + c];
    }
  }
};

template <typename T>
struct ValueAccumulator<T, false> {
  using L = TileLayout<T>;
  float acc[4][4];  // rows tr + 16i, columns tc + 16j as in tile_scores

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
    }
  }

  // acc += P (rows × keys, fp32 in the score buffer, ld kScoreLd) · V (keys × slice, ld kValueLd).
  __device__ __forceinline__ void add_product(const T* /*unused*/, const T* /*unused*/, const float* probs,
                                              const T* values) {
    const int tr = threadIdx.x / 16, tc = threadIdx.x % 16;
#pragma unroll 4
    for (int n = 0; n < kScoreTileKeys; ++n) {
      float p[4], v[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) p[i] = probs[(tr + 16 * i) * L::kScoreLd + n];
#pragma unroll
      for (int j = 0; j < 4; ++j) v[j] = to_float(values[n * L::kValueLd + tc + 16 * j]);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(p[i], v[j], acc[i][j]);
      }
    }
  }

  __device__ __forceinline__ void store(float* /*staging*/, float* out, int64_t row0, int64_t rows, int64_t col0,
                                        int64_t dim) {
    const int tr = threadIdx.x / 16, tc = threadIdx.x % 16;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t r = row0 + tr + 16 * i, c = col0 + tc + 16 * j;
        if (r < rows && c < dim) out[r * dim + c] = acc[i][j];
      }
    }
  }
};

// Grid: (query tiles, output slices (1 for kLogSumExp), key splits).
template <typename T, TileMode kMode>
__global__ void __launch_bounds__(kTileThreads) score_tile_kernel(TileArgs args) {
  using L = TileLayout<T>;
  __shared__ __align__(128) unsigned char smem[L::kBytes];
  T* query_chunk = reinterpret_cast<T*>(smem);
  T* key_chunk = query_chunk + kScoreTileRows * L::kOperandLd;
  T* values = reinterpret_cast<T*>(smem);  // reuses the operand chunks once the scores are done
  float* scores = reinterpret_cast<float*>(smem + L::kScoreOffset);
  T* probs = reinterpret_cast<T*>(smem + L::kProbOffset);       // tensor-core path only
  T* probs_lo = reinterpret_cast<T*>(smem + L::kProbLoOffset);  // bf16 only
  float* row_lse = reinterpret_cast<float*>(smem + L::kVectorOffset);
  float* key_lse = row_lse + kScoreTileRows;
  float* key_weight = key_lse + kScoreTileKeys;

  const int64_t row0 = int64_t{blockIdx.x} * kScoreTileRows;
  const int64_t col0 = int64_t{blockIdx.y} * kScoreTileSlice;
  const int64_t split = blockIdx.z;
  const int64_t key_begin = split * args.keys_per_split;
  const int64_t key_end =
      args.key_rows - key_begin < args.keys_per_split ? args.key_rows : key_begin + args.keys_per_split;

  if constexpr (kMode == TileMode::kSoftmaxOutput) {
    for (int r = threadIdx.x; r < kScoreTileRows; r += kTileThreads) {
      row_lse[r] = row0 + r < args.query_rows ? args.query_lse[row0 + r] : 0.f;
    }
  }
  LogSumExp running{-INFINITY, 0.f};  // kLogSumExp: this thread's columns of row threadIdx.x / 4
  ValueAccumulator<T> output;
  output.zero();

  for (int64_t key0 = key_begin; key0 < key_end; key0 += kScoreTileKeys) {
    const int keys_here = static_cast<int>(key_end - key0 < kScoreTileKeys ? key_end - key0 : kScoreTileKeys);
    if constexpr (kMode == TileMode::kPrototypeGrad) {
      // Safe to overwrite: the previous step's readers passed the __syncthreads before its product.
      for (int n = threadIdx.x; n < kScoreTileKeys; n += kTileThreads) {
        key_lse[n] = n < keys_here ? args.key_lse[key0 + n] : 0.f;
        key_weight[n] = n < keys_here ? args.key_weight[key0 + n] : 0.f;
      }
    }
    tile_scores<T>(args, row0, key0, key_end, query_chunk, key_chunk, scores);
    __syncthreads();

    if constexpr (kMode == TileMode::kLogSumExp) {
      const int r = threadIdx.x / 4;
      for (int n = threadIdx.x % 4; n < keys_here; n += 4) lse_add(running, scores[r * L::kScoreLd + n] * args.inv_tau);
    } else {
      for (int i = threadIdx.x; i < kScoreTileRows * kScoreTileKeys; i += kTileThreads) {
        const int r = i / kScoreTileKeys, n = i % kScoreTileKeys;
        float p = 0.f;
        if (n < keys_here && row0 + r < args.query_rows) {
          const float logit = scores[r * L::kScoreLd + n] * args.inv_tau;
          if constexpr (kMode == TileMode::kSoftmaxOutput) {
            p = expf(logit - row_lse[r]);
          } else {
            p = key_weight[n] * expf(logit - key_lse[n]);
          }
        }
        if constexpr (L::kTensorCores) {
          const T high = from_float<T>(p);
          probs[r * L::kProbLd + n] = high;
          if constexpr (L::kSplitProbs) probs_lo[r * L::kProbLd + n] = from_float<T>(p - to_float(high));
        } else {
          scores[r * L::kScoreLd + n] = p;  // in place: each element is read and written by one thread
        }
      }
      load_tile(values, L::kValueLd, static_cast<const T*>(args.keys), args.key_stride, key0, key_end, col0,
                args.dim, kScoreTileKeys, kScoreTileSlice);
      __syncthreads();
      output.add_product(probs, probs_lo, scores, values);
    }
  }

  if constexpr (kMode == TileMode::kLogSumExp) {
    running = warp_lse_merge<4>(running);  // the 4 threads of a row are adjacent lanes
    const int64_t row = row0 + threadIdx.x / 4;
    if (threadIdx.x % 4 == 0 && row < args.query_rows) {
      args.partial[split * args.query_rows + row] = running.max;
      args.partial_sum[split * args.query_rows + row] = running.sum;
    }
  } else {
    output.store(scores, args.partial + split * args.query_rows * args.dim, row0, args.query_rows, col0, args.dim);
  }
}

// Effective split of `key_rows` into at most `requested` non-empty ranges of whole tiles.
struct KeySplit {
  int64_t keys_per_split, splits;
};

inline KeySplit split_keys(int64_t key_rows, int64_t requested) {
  const int64_t per = ceil_div(ceil_div(key_rows, requested), kScoreTileKeys) * kScoreTileKeys;
  return {per, ceil_div(key_rows, per)};
}

template <TileMode kMode>
void launch_score_tiles(DType type, const TileArgs& args, int64_t slices, int64_t splits, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(ceil_div(args.query_rows, kScoreTileRows)), static_cast<unsigned>(slices),
                  static_cast<unsigned>(splits));
  dispatch_dtype(type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    score_tile_kernel<T, kMode><<<grid, kTileThreads, 0, stream>>>(args);
  });
}

// Checks shared by the two entry points (z, c and their sizes).
inline void check_score_operands(std::uintptr_t z, std::uintptr_t c, DType type, int64_t rows, int64_t prototypes,
                                 int64_t dim, int64_t z_row_stride, int64_t c_row_stride, float inv_tau,
                                 int64_t key_splits) {
  constexpr int64_t kMax32 = (int64_t{1} << 31) - 1;
  require_pointer(z, "z", element_size(type));
  require_pointer(c, "c", element_size(type));
  require_range(rows, "rows", 1, kMax32);
  require_range(prototypes, "prototypes", 1, kMax32);
  require_range(dim, "dim", 1, int64_t{65535} * kScoreTileSlice);
  require(z_row_stride >= dim, "z_row_stride must be >= dim, got " + std::to_string(z_row_stride));
  require(c_row_stride >= dim, "c_row_stride must be >= dim, got " + std::to_string(c_row_stride));
  require(std::isfinite(inv_tau) && inv_tau > 0.f, "inv_tau must be finite and > 0");
  require_range(key_splits, "key_splits", 1, 65535);
}

}  // namespace swav
