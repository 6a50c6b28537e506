// C-ABI launchers of csrc/varlen_pool.cu (varlen_pool: per-sequence mean/max pooling of packed rows).
// Included by the .cu (which defines them) and by bind_varlen_pool.h (which calls them), so a signature that
// drifts is a compile error, not a run-time crash.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" cudaError_t ak_varlen_pool_output_offsets(const int32_t* cu_x, int32_t n_seq, int32_t ratio, int32_t* cu_y,
                                                     cudaStream_t stream);
extern "C" cudaError_t ak_varlen_pool_fwd(const void* x, void* y, const int32_t* cu_x, const int32_t* cu_y,
                                          int64_t total_y, int32_t n_seq, int32_t D, int32_t ratio, int32_t is_max,
                                          int32_t dtype, cudaStream_t stream);
extern "C" cudaError_t ak_varlen_pool_bwd(const void* grad_y, const void* x, const void* y, void* grad_x,
                                          const int32_t* cu_x, const int32_t* cu_y, int64_t total_y, int32_t n_seq,
                                          int32_t D, int32_t ratio, int32_t is_max, int32_t dtype,
                                          cudaStream_t stream);
