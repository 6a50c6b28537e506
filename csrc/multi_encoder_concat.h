// C-ABI launchers of csrc/multi_encoder_concat.cu (feature concatenation of packed encoder streams).
// Included by the .cu (which defines them) and by bind_multi_encoder_concat.h (which calls them), so a
// signature that drifts is a compile error, not a run-time crash.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
int ak_multi_encoder_concat_max_streams();
cudaError_t ak_multi_encoder_concat_output_offsets(const int32_t* const* cus, int n_streams, int n_seq, int32_t* cu_y,
                                                   cudaStream_t stream);
cudaError_t ak_multi_encoder_concat_fwd(const void* const* streams, const int32_t* const* cus, const int* widths,
                                        int n_streams, const int32_t* cu_y, int n_seq, int64_t total_y, void* out,
                                        int dtype, cudaStream_t stream);
cudaError_t ak_multi_encoder_concat_gather_rows(const void* src, const int32_t* cu_e, const int32_t* cu_y, int n_seq,
                                                int64_t total_e, int width, int src_cols, int col_offset, void* dst,
                                                int dtype, cudaStream_t stream);
int ak_multi_encoder_concat_column_sum_splits(int64_t rows, int cols);
cudaError_t ak_multi_encoder_concat_column_sum(const void* src, int64_t rows, int cols, float* partials, int splits,
                                               void* out, int dtype, cudaStream_t stream);
}
