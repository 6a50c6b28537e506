// Helpers for the torch-side wrappers (included only from bindings.cpp, the one TU with torch headers).
#pragma once
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include "common.h"

namespace akb {
inline int dtype_code(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return AK_FLOAT32;
    case at::kHalf: return AK_FLOAT16;
    case at::kBFloat16: return AK_BFLOAT16;
    default: TORCH_CHECK(false, name, ": unsupported dtype ", t.scalar_type(), " (float32, float16, bfloat16)");
  }
  return -1;
}
inline void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}
inline cudaStream_t stream() { return at::cuda::getCurrentCUDAStream().stream(); }
inline void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(err));
}
}  // namespace akb
