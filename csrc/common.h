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
