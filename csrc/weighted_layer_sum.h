// C-ABI launchers of csrc/weighted_layer_sum.cu (weighted_layer_sum: softmax-weighted sum of k layers).
// Included by the .cu (which defines them) and by bind_weighted_layer_sum.h (which calls them), so a signature that
// drifts is a compile error, not a run-time crash.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
int ak_weighted_layer_sum_max_layers();
int64_t ak_weighted_layer_sum_workspace_floats(int k);
cudaError_t ak_weighted_layer_sum_fwd(const void* const* layers, int k, const void* logits, int logits_dtype, void* out,
                                      int64_t n, int dtype, cudaStream_t stream);
cudaError_t ak_weighted_layer_sum_bwd(const void* const* layers, int k, const void* logits, int logits_dtype,
                                      const void* grad_y, void* const* grad_layers, void* grad_logits,
                                      float* workspace, int64_t n, int dtype, cudaStream_t stream);
}
