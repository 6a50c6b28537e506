// C-ABI launchers of csrc/varlen_conv1d.cu (the gathers and the GELU derivative around the conv's cuBLAS GEMMs).
// Included by the .cu (which defines them) and by bind_varlen_conv1d.h (which calls them), so a signature that
// drifts is a compile error, not a run-time crash.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
cudaError_t ak_varlen_conv1d_output_offsets(const int32_t* cu_x, int32_t n_seq, int32_t k, int32_t stride,
                                            int32_t padding, int32_t* cu_y, cudaStream_t stream);
cudaError_t ak_varlen_conv1d_im2col(const void* x, const int32_t* cu_x, const int32_t* cu_y, int32_t n_seq,
                                    int64_t total_y, int32_t c_in, int32_t k, int32_t stride, int32_t padding,
                                    void* col, int32_t dtype, cudaStream_t stream);
cudaError_t ak_varlen_conv1d_col2im(const void* gcol, const int32_t* cu_x, const int32_t* cu_y, int32_t n_seq,
                                    int64_t total, int32_t c_in, int32_t k, int32_t stride, int32_t padding,
                                    void* grad_x, int32_t dtype, cudaStream_t stream);
cudaError_t ak_varlen_conv1d_gelu_grad(const void* grad_y, const void* pre, void* out, int64_t n, int32_t dtype,
                                       cudaStream_t stream);
}
