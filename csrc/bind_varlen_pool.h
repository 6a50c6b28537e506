// Torch wrappers for csrc/varlen_pool.cu (included only from bindings.cpp). Outputs are allocated by the
// Python side (alarm_kernels.varlen_pool.cuda, so NaN prefill applies) and filled here.
#pragma once
#include "binding_utils.h"

#include "varlen_pool.h"

namespace akb {
inline void check_offsets(const at::Tensor& cu, const at::Tensor& like, const char* name) {
  check_cuda(cu, name);
  TORCH_CHECK(cu.scalar_type() == at::kInt && cu.dim() == 1, name, " must be a 1-D int32 tensor");
  TORCH_CHECK(cu.device() == like.device(), name, " must be on the data's device");
}

inline void check_like(const at::Tensor& t, const at::Tensor& like, const char* name) {
  check_cuda(t, name);
  TORCH_CHECK(t.scalar_type() == like.scalar_type() && t.device() == like.device(), name,
              " must match x's dtype and device");
}

// cu_y (int32 [N+1], preallocated) <- offsets of the pooled output: each length L becomes ceil(L / ratio).
inline void varlen_pool_output_offsets(const at::Tensor& cu_x, at::Tensor cu_y, int64_t ratio) {
  check_offsets(cu_x, cu_y, "cu_seqlens");
  check_offsets(cu_y, cu_x, "cu_y");
  TORCH_CHECK(cu_x.numel() == cu_y.numel() && cu_x.numel() >= 1 && ratio >= 1 && ratio <= INT32_MAX,
              "varlen_pool_output_offsets: bad offsets or ratio");
  const c10::cuda::CUDAGuard guard(cu_x.device());
  check_launch(ak_varlen_pool_output_offsets(cu_x.data_ptr<int32_t>(), static_cast<int32_t>(cu_x.numel() - 1),
                                             static_cast<int32_t>(ratio), cu_y.data_ptr<int32_t>(), stream()),
               "varlen_pool_output_offsets");
}

// y [total_y, D] <- pool(x [total, D]) over windows of `ratio` frames of each sequence.
inline void varlen_pool_fwd(const at::Tensor& x, at::Tensor y, const at::Tensor& cu_x, const at::Tensor& cu_y,
                            int64_t ratio, bool is_max) {
  check_cuda(x, "x");
  check_like(y, x, "y");
  check_offsets(cu_x, x, "cu_seqlens");
  check_offsets(cu_y, x, "cu_y");
  TORCH_CHECK(x.dim() == 2 && y.dim() == 2 && y.size(1) == x.size(1), "varlen_pool_fwd: x [total, D], y [total_y, D]");
  TORCH_CHECK(cu_x.numel() == cu_y.numel() && ratio >= 1, "varlen_pool_fwd: bad offsets or ratio");
  const c10::cuda::CUDAGuard guard(x.device());
  check_launch(ak_varlen_pool_fwd(x.data_ptr(), y.data_ptr(), cu_x.data_ptr<int32_t>(), cu_y.data_ptr<int32_t>(),
                                  y.size(0), static_cast<int32_t>(cu_x.numel() - 1), static_cast<int32_t>(x.size(1)),
                                  static_cast<int32_t>(ratio), is_max ? 1 : 0, dtype_code(x, "x"), stream()),
               "varlen_pool_fwd");
}

// grad_x [total, D] <- backward of varlen_pool_fwd given grad_y and (max mode) x and y.
inline void varlen_pool_bwd(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& y, at::Tensor grad_x,
                            const at::Tensor& cu_x, const at::Tensor& cu_y, int64_t ratio, bool is_max) {
  check_cuda(x, "x");
  check_like(grad_y, x, "grad_y");
  check_like(y, x, "y");
  check_like(grad_x, x, "grad_x");
  check_offsets(cu_x, x, "cu_seqlens");
  check_offsets(cu_y, x, "cu_y");
  TORCH_CHECK(grad_y.sizes() == y.sizes() && grad_x.sizes() == x.sizes() && y.size(1) == x.size(1),
              "varlen_pool_bwd: shape mismatch");
  TORCH_CHECK(cu_x.numel() == cu_y.numel() && ratio >= 1, "varlen_pool_bwd: bad offsets or ratio");
  const c10::cuda::CUDAGuard guard(x.device());
  check_launch(ak_varlen_pool_bwd(grad_y.data_ptr(), x.data_ptr(), y.data_ptr(), grad_x.data_ptr(),
                                  cu_x.data_ptr<int32_t>(), cu_y.data_ptr<int32_t>(), y.size(0),
                                  static_cast<int32_t>(cu_x.numel() - 1), static_cast<int32_t>(x.size(1)),
                                  static_cast<int32_t>(ratio), is_max ? 1 : 0, dtype_code(x, "x"), stream()),
               "varlen_pool_bwd");
}
}  // namespace akb

inline void register_varlen_pool(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("varlen_pool_output_offsets", &akb::varlen_pool_output_offsets, "pooled output offsets into cu_y",
        py::arg("cu_seqlens"), py::arg("cu_y"), py::arg("ratio"));
  m.def("varlen_pool_fwd", &akb::varlen_pool_fwd, "varlen pooling forward into y",
        py::arg("x"), py::arg("y"), py::arg("cu_seqlens"), py::arg("cu_y"), py::arg("ratio"), py::arg("is_max"));
  m.def("varlen_pool_bwd", &akb::varlen_pool_bwd, "varlen pooling backward into grad_x",
        py::arg("grad_y"), py::arg("x"), py::arg("y"), py::arg("grad_x"), py::arg("cu_seqlens"), py::arg("cu_y"),
        py::arg("ratio"), py::arg("is_max"));
}
