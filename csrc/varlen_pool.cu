// varlen_pool: per-sequence mean/max pooling over windows of `ratio` frames (packed [total, D] rows).
// One thread owns VEC consecutive features of one output window (16-byte vector loads when D and the
// pointers allow); a block covers ROWS windows. Window -> sequence by binary search over cu_y.
// Backward writes every input frame exactly once (each frame lies in one window): no atomics.
#include "common.h"
#include "varlen_pool.h"

namespace {

constexpr int kThreads = 256;

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Vec {
  T v[VEC];
};

__device__ __forceinline__ int find_seq(const int32_t* cu, int n_seq, int64_t idx) {
  int lo = 0, hi = n_seq - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (cu[mid] <= idx) lo = mid; else hi = mid - 1;
  }
  return lo;
}

// first input row and number of frames of output window `row`
__device__ __forceinline__ void window_of(const int32_t* cu_x, const int32_t* cu_y, int n_seq, int64_t row,
                                          int ratio, int64_t& first, int& count) {
  const int s = find_seq(cu_y, n_seq, row);
  const int64_t local = (row - cu_y[s]) * ratio;
  first = cu_x[s] + local;
  const int64_t left = cu_x[s + 1] - first;
  count = left < ratio ? static_cast<int>(left) : ratio;
}

// This thread's first feature chunk and output window. A block holds blockDim.x / chunks windows when
// a window has fewer chunks than threads, else one window with its chunks strided over the block.
__device__ __forceinline__ bool thread_slot(int chunks, int64_t total_y, int& chunk0, int64_t& row) {
  const int threads = static_cast<int>(blockDim.x);
  const bool wide = chunks >= threads;
  const int rows_per_block = wide ? 1 : threads / chunks;
  const int lane_row = wide ? 0 : static_cast<int>(threadIdx.x) / chunks;
  chunk0 = wide ? static_cast<int>(threadIdx.x) : static_cast<int>(threadIdx.x) % chunks;
  row = static_cast<int64_t>(blockIdx.x) * rows_per_block + lane_row;
  return lane_row < rows_per_block && row < total_y;
}

// thread_slot, then the input window of that output row; false: this thread has no window.
__device__ __forceinline__ bool window_slot(const int32_t* cu_x, const int32_t* cu_y, int n_seq, int ratio, int chunks,
                                            int64_t total_y, int& chunk0, int64_t& row, int64_t& first, int& count) {
  if (!thread_slot(chunks, total_y, chunk0, row)) return false;
  window_of(cu_x, cu_y, n_seq, row, ratio, first, count);
  return true;
}

template <typename T, int VEC>
__global__ void pool_fwd_kernel(const T* __restrict__ x, T* __restrict__ y, const int32_t* __restrict__ cu_x,
                                const int32_t* __restrict__ cu_y, int64_t total_y, int n_seq, int D, int ratio,
                                bool is_max) {
  const int chunks = D / VEC;
  int chunk0, count;
  int64_t row, first;
  if (!window_slot(cu_x, cu_y, n_seq, ratio, chunks, total_y, chunk0, row, first, count)) return;
  for (int c = chunk0; c < chunks; c += blockDim.x) {
    float acc[VEC];
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[e] = is_max ? -INFINITY : 0.f;
    for (int r = 0; r < count; ++r) {
      const Vec<T, VEC> v = *reinterpret_cast<const Vec<T, VEC>*>(x + (first + r) * D + c * VEC);
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const float f = ak::to_float<T>(v.v[e]);
        // max propagates NaN like the reference's amax (fmaxf would drop it)
        acc[e] = is_max ? ((f > acc[e] || isnan(f)) ? f : acc[e]) : acc[e] + f;
      }
    }
    Vec<T, VEC> out;
    const float inv = 1.f / static_cast<float>(count);
#pragma unroll
    for (int e = 0; e < VEC; ++e) out.v[e] = ak::from_float<T>(is_max ? acc[e] : acc[e] * inv);
    *reinterpret_cast<Vec<T, VEC>*>(y + row * D + c * VEC) = out;
  }
}

template <typename T, int VEC>
__global__ void pool_bwd_kernel(const T* __restrict__ gy, const T* __restrict__ x, const T* __restrict__ y,
                                T* __restrict__ gx, const int32_t* __restrict__ cu_x, const int32_t* __restrict__ cu_y,
                                int64_t total_y, int n_seq, int D, int ratio, bool is_max) {
  const int chunks = D / VEC;
  int chunk0, count;
  int64_t row, first;
  if (!window_slot(cu_x, cu_y, n_seq, ratio, chunks, total_y, chunk0, row, first, count)) return;
  for (int c = chunk0; c < chunks; c += blockDim.x) {
    const Vec<T, VEC> g = *reinterpret_cast<const Vec<T, VEC>*>(gy + row * D + c * VEC);
    float share[VEC], ymax[VEC];
    if (is_max) {
      const Vec<T, VEC> yv = *reinterpret_cast<const Vec<T, VEC>*>(y + row * D + c * VEC);
      float ties[VEC];
#pragma unroll
      for (int e = 0; e < VEC; ++e) { ymax[e] = ak::to_float<T>(yv.v[e]); ties[e] = 0.f; }
      for (int r = 0; r < count; ++r) {
        const Vec<T, VEC> v = *reinterpret_cast<const Vec<T, VEC>*>(x + (first + r) * D + c * VEC);
#pragma unroll
        for (int e = 0; e < VEC; ++e) ties[e] += ak::to_float<T>(v.v[e]) == ymax[e] ? 1.f : 0.f;
      }
#pragma unroll
      for (int e = 0; e < VEC; ++e) share[e] = ak::to_float<T>(g.v[e]) / fmaxf(ties[e], 1.f);
    } else {
      const float inv = 1.f / static_cast<float>(count);
#pragma unroll
      for (int e = 0; e < VEC; ++e) share[e] = ak::to_float<T>(g.v[e]) * inv;
    }
    for (int r = 0; r < count; ++r) {
      Vec<T, VEC> out;
      if (is_max) {
        const Vec<T, VEC> v = *reinterpret_cast<const Vec<T, VEC>*>(x + (first + r) * D + c * VEC);
#pragma unroll
        for (int e = 0; e < VEC; ++e) out.v[e] = ak::from_float<T>(ak::to_float<T>(v.v[e]) == ymax[e] ? share[e] : 0.f);
      } else {
#pragma unroll
        for (int e = 0; e < VEC; ++e) out.v[e] = ak::from_float<T>(share[e]);
      }
      *reinterpret_cast<Vec<T, VEC>*>(gx + (first + r) * D + c * VEC) = out;
    }
  }
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// grid size matching thread_slot's mapping for blocks of kThreads threads
inline unsigned blocks_for(int64_t total_y, int chunks) {
  const int64_t rows_per_block = chunks >= kThreads ? 1 : kThreads / chunks;
  return static_cast<unsigned>((total_y + rows_per_block - 1) / rows_per_block);
}

template <typename T>
cudaError_t launch_fwd(const void* x, void* y, const int32_t* cu_x, const int32_t* cu_y, int64_t total_y, int n_seq,
                       int D, int ratio, bool is_max, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  if (total_y == 0 || D == 0) return cudaSuccess;
  if (D % V == 0 && aligned16(x) && aligned16(y)) {
    pool_fwd_kernel<T, V><<<blocks_for(total_y, D / V), kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<T*>(y), cu_x, cu_y, total_y, n_seq, D, ratio, is_max);
  } else {
    pool_fwd_kernel<T, 1><<<blocks_for(total_y, D), kThreads, 0, stream>>>(
        static_cast<const T*>(x), static_cast<T*>(y), cu_x, cu_y, total_y, n_seq, D, ratio, is_max);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_bwd(const void* gy, const void* x, const void* y, void* gx, const int32_t* cu_x,
                       const int32_t* cu_y, int64_t total_y, int n_seq, int D, int ratio, bool is_max,
                       cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  if (total_y == 0 || D == 0) return cudaSuccess;
  if (D % V == 0 && aligned16(gy) && aligned16(x) && aligned16(y) && aligned16(gx)) {
    pool_bwd_kernel<T, V><<<blocks_for(total_y, D / V), kThreads, 0, stream>>>(
        static_cast<const T*>(gy), static_cast<const T*>(x), static_cast<const T*>(y), static_cast<T*>(gx), cu_x,
        cu_y, total_y, n_seq, D, ratio, is_max);
  } else {
    pool_bwd_kernel<T, 1><<<blocks_for(total_y, D), kThreads, 0, stream>>>(
        static_cast<const T*>(gy), static_cast<const T*>(x), static_cast<const T*>(y), static_cast<T*>(gx), cu_x,
        cu_y, total_y, n_seq, D, ratio, is_max);
  }
  return cudaGetLastError();
}

// cu_y[i + 1] - cu_y[i] = ceil(len_i / ratio) (ak::scan_offsets)
__global__ void __launch_bounds__(ak::kScanThreads) output_offsets_kernel(const int32_t* __restrict__ cu_x, int n_seq,
                                                                          int ratio, int32_t* __restrict__ cu_y) {
  ak::scan_offsets(n_seq, [&](int i) {
    const int32_t len = cu_x[i + 1] - cu_x[i];
    return len == 0 ? 0 : (len - 1) / ratio + 1;
  }, cu_y);
}

}  // namespace

// cu_y int32 [n_seq + 1] = offsets of the pooled output (each length L becomes ceil(L / ratio)), in one launch.
extern "C" cudaError_t ak_varlen_pool_output_offsets(const int32_t* cu_x, int32_t n_seq, int32_t ratio, int32_t* cu_y,
                                                     cudaStream_t stream) {
  if (n_seq < 0 || ratio < 1) return cudaErrorInvalidValue;
  output_offsets_kernel<<<1, ak::kScanThreads, 0, stream>>>(cu_x, n_seq, ratio, cu_y);
  return cudaGetLastError();
}

// y [total_y, D] = pool(x [total, D]) per window; cu_x / cu_y int32 [n_seq + 1] device offsets.
extern "C" cudaError_t ak_varlen_pool_fwd(const void* x, void* y, const int32_t* cu_x, const int32_t* cu_y,
                                          int64_t total_y, int32_t n_seq, int32_t D, int32_t ratio, int32_t is_max,
                                          int32_t dtype, cudaStream_t stream) {
  return AK_DISPATCH_DTYPE(dtype, launch_fwd, x, y, cu_x, cu_y, total_y, n_seq, D, ratio, is_max != 0, stream);
}

// grad_x [total, D] from grad_y [total_y, D]; max mode also reads x and the forward output y.
extern "C" cudaError_t ak_varlen_pool_bwd(const void* grad_y, const void* x, const void* y, void* grad_x,
                                          const int32_t* cu_x, const int32_t* cu_y, int64_t total_y, int32_t n_seq,
                                          int32_t D, int32_t ratio, int32_t is_max, int32_t dtype,
                                          cudaStream_t stream) {
  return AK_DISPATCH_DTYPE(dtype, launch_bwd, grad_y, x, y, grad_x, cu_x, cu_y, total_y, n_seq, D, ratio,
                           is_max != 0, stream);
}
