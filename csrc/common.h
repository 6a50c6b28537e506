// Shared by the .cu files (no torch headers here: they keep nvcc compiles at seconds, docs/building.md).
// Launchers are C-ABI functions taking raw pointers, sizes, a dtype code and a cudaStream_t; they
// return a cudaError_t so the binding can raise a Python error naming the op.
#pragma once
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

// Element types understood by every launcher.
enum AkDtype : int { AK_FLOAT32 = 0, AK_FLOAT16 = 1, AK_BFLOAT16 = 2 };

namespace ak {
template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

// Threads of the one-block offsets scan (scan_offsets).
constexpr int kScanThreads = 1024;

#if defined(__CUDACC__)  // device code (bindings.cpp includes this header through binding_utils.h)

// cu_y[0] = 0, cu_y[i + 1] = sum_{j <= i} length(j) for the n_seq sequences: run by one block of kScanThreads
// threads, each summing a run of sequences, then a block-wide inclusive scan of the run totals, then each thread
// writes its run. `length(i)` -> int32 output rows of sequence i. Replaces the handful of small tensor ops the
// offsets would otherwise take on the host side (one launch instead of five to ten).
template <typename Length>
__device__ __forceinline__ void scan_offsets(int n_seq, Length length, int32_t* __restrict__ cu_y) {
  __shared__ int32_t part[kScanThreads];
  const int per = (n_seq + kScanThreads - 1) / kScanThreads;
  const int i0 = threadIdx.x * per;
  const int i1 = min(i0 + per, n_seq);
  int32_t local = 0;
  for (int i = i0; i < i1; ++i) local += length(i);
  part[threadIdx.x] = local;
  __syncthreads();
  for (int off = 1; off < kScanThreads; off <<= 1) {
    const int32_t v = threadIdx.x >= off ? part[threadIdx.x - off] : 0;
    __syncthreads();
    part[threadIdx.x] += v;
    __syncthreads();
  }
  int32_t run = threadIdx.x > 0 ? part[threadIdx.x - 1] : 0;
  if (threadIdx.x == 0) cu_y[0] = 0;
  for (int i = i0; i < i1; ++i) {
    run += length(i);
    cu_y[i + 1] = run;
  }
}
#endif

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
}  // namespace ak

// Calls F<T>(args...) with T the CUDA type of dtype code `dt`; returns cudaErrorInvalidValue otherwise.
#define AK_DISPATCH_DTYPE(dt, FN, ...)                                              \
  ((dt) == AK_FLOAT32   ? FN<float>(__VA_ARGS__)                                    \
   : (dt) == AK_FLOAT16 ? FN<__half>(__VA_ARGS__)                                   \
   : (dt) == AK_BFLOAT16 ? FN<__nv_bfloat16>(__VA_ARGS__)                           \
                         : cudaErrorInvalidValue)
