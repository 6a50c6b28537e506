// Torch wrappers for csrc/varlen_conv1d.cu (included only from bindings.cpp). Outputs and the re-laid-out
// weights are prepared by the Python side (alarm_kernels.varlen_conv1d.cuda) and filled here.
#pragma once
#include <optional>

#include "binding_utils.h"
#include "bind_varlen_pool.h"  // akb::check_offsets, akb::check_like

extern "C" cudaError_t ak_varlen_conv1d_fwd(const void* x, const void* w_t, const void* bias, void* y, void* pre,
                                            const int32_t* cu_x, const int32_t* cu_y, int64_t total_y,
                                            int32_t n_seq, int32_t c_in, int32_t c_out, int32_t k, int32_t stride,
                                            int32_t padding, int32_t gelu, int32_t dtype, cudaStream_t stream);
extern "C" cudaError_t ak_varlen_conv1d_dx(const void* grad_pre, const void* w_t, void* grad_x, const int32_t* cu_x,
                                           const int32_t* cu_y, const int32_t* cu_ph, int64_t total, int32_t n_seq,
                                           int32_t c_in, int32_t c_out, int32_t k, int32_t stride, int32_t padding,
                                           int32_t dtype, cudaStream_t stream);
extern "C" cudaError_t ak_varlen_conv1d_dw(const void* grad_pre, const void* x, void* grad_w, void* grad_b,
                                           const int32_t* cu_x, const int32_t* cu_y, int64_t total_y, int32_t n_seq,
                                           int32_t c_in, int32_t c_out, int32_t k, int32_t stride, int32_t padding,
                                           int32_t dtype, cudaStream_t stream);
extern "C" cudaError_t ak_varlen_conv1d_gelu_grad(const void* grad_y, const void* pre, void* out, int64_t n,
                                                  int32_t dtype, cudaStream_t stream);

namespace akb {
// y [total_y, C_out] (and pre, when gelu) <- conv of x [total, C_in] with w_t [k, C_in, C_out] (+ bias).
inline void varlen_conv1d_fwd(const at::Tensor& x, const at::Tensor& w_t, const std::optional<at::Tensor>& bias,
                              at::Tensor y, at::Tensor pre, const at::Tensor& cu_x, const at::Tensor& cu_y,
                              int64_t stride, int64_t padding, bool gelu) {
  check_cuda(x, "x");
  check_like(w_t, x, "weight");
  check_like(y, x, "y");
  check_offsets(cu_x, x, "cu_seqlens");
  check_offsets(cu_y, x, "cu_y");
  TORCH_CHECK(w_t.dim() == 3 && w_t.size(1) == x.size(1) && y.size(1) == w_t.size(2),
              "varlen_conv1d_fwd: w_t must be [k, C_in, C_out]");
  if (bias) check_like(*bias, x, "bias");
  if (gelu) {
    check_like(pre, x, "pre");
    TORCH_CHECK(pre.sizes() == y.sizes(), "varlen_conv1d_fwd: pre must match y");
  }
  const c10::cuda::CUDAGuard guard(x.device());
  check_launch(ak_varlen_conv1d_fwd(x.data_ptr(), w_t.data_ptr(), bias ? bias->data_ptr() : nullptr, y.data_ptr(),
                                    gelu ? pre.data_ptr() : nullptr, cu_x.data_ptr<int32_t>(),
                                    cu_y.data_ptr<int32_t>(), y.size(0), static_cast<int32_t>(cu_x.numel() - 1),
                                    static_cast<int32_t>(x.size(1)), static_cast<int32_t>(y.size(1)),
                                    static_cast<int32_t>(w_t.size(0)), static_cast<int32_t>(stride),
                                    static_cast<int32_t>(padding), gelu ? 1 : 0, dtype_code(x, "x"), stream()),
               "varlen_conv1d_fwd");
}

// grad_x [total, C_in] <- transposed conv of grad_pre [total_y, C_out] with w_t [k, C_out, C_in];
// cu_ph int32 [stride, N+1]: per-phase frame offsets (alarm_kernels.varlen_conv1d.reference.phase_offsets).
inline void varlen_conv1d_dx(const at::Tensor& grad_pre, const at::Tensor& w_t, at::Tensor grad_x,
                             const at::Tensor& cu_x, const at::Tensor& cu_y, const at::Tensor& cu_ph, int64_t stride,
                             int64_t padding) {
  check_cuda(grad_pre, "grad_pre");
  check_like(w_t, grad_pre, "weight");
  check_like(grad_x, grad_pre, "grad_x");
  check_offsets(cu_x, grad_pre, "cu_seqlens");
  check_offsets(cu_y, grad_pre, "cu_y");
  check_cuda(cu_ph, "cu_ph");
  TORCH_CHECK(cu_ph.scalar_type() == at::kInt && cu_ph.dim() == 2 && cu_ph.size(0) == stride &&
                  cu_ph.size(1) == cu_x.numel() && cu_ph.device() == grad_pre.device(),
              "varlen_conv1d_dx: cu_ph must be int32 [stride, N+1] on the data's device");
  TORCH_CHECK(w_t.dim() == 3 && w_t.size(1) == grad_pre.size(1) && w_t.size(2) == grad_x.size(1),
              "varlen_conv1d_dx: w_t must be [k, C_out, C_in]");
  const c10::cuda::CUDAGuard guard(grad_pre.device());
  check_launch(ak_varlen_conv1d_dx(grad_pre.data_ptr(), w_t.data_ptr(), grad_x.data_ptr(), cu_x.data_ptr<int32_t>(),
                                   cu_y.data_ptr<int32_t>(), cu_ph.data_ptr<int32_t>(), grad_x.size(0),
                                   static_cast<int32_t>(cu_x.numel() - 1),
                                   static_cast<int32_t>(grad_x.size(1)), static_cast<int32_t>(grad_pre.size(1)),
                                   static_cast<int32_t>(w_t.size(0)), static_cast<int32_t>(stride),
                                   static_cast<int32_t>(padding), dtype_code(grad_pre, "grad_pre"), stream()),
               "varlen_conv1d_dx");
}

// grad_w [C_out, C_in, k] (and grad_b [C_out] when given) <- grad_pre [total_y, C_out] and x [total, C_in].
inline void varlen_conv1d_dw(const at::Tensor& grad_pre, const at::Tensor& x, at::Tensor grad_w,
                             const std::optional<at::Tensor>& grad_b, const at::Tensor& cu_x, const at::Tensor& cu_y,
                             int64_t stride, int64_t padding) {
  check_cuda(x, "x");
  check_like(grad_pre, x, "grad_pre");
  check_like(grad_w, x, "grad_w");
  if (grad_b) check_like(*grad_b, x, "grad_b");
  check_offsets(cu_x, x, "cu_seqlens");
  check_offsets(cu_y, x, "cu_y");
  TORCH_CHECK(grad_w.dim() == 3 && grad_w.size(0) == grad_pre.size(1) && grad_w.size(1) == x.size(1),
              "varlen_conv1d_dw: grad_w must be [C_out, C_in, k]");
  const c10::cuda::CUDAGuard guard(x.device());
  check_launch(ak_varlen_conv1d_dw(grad_pre.data_ptr(), x.data_ptr(), grad_w.data_ptr(),
                                   grad_b ? grad_b->data_ptr() : nullptr, cu_x.data_ptr<int32_t>(),
                                   cu_y.data_ptr<int32_t>(), grad_pre.size(0), static_cast<int32_t>(cu_x.numel() - 1),
                                   static_cast<int32_t>(x.size(1)), static_cast<int32_t>(grad_w.size(0)),
                                   static_cast<int32_t>(grad_w.size(2)), static_cast<int32_t>(stride),
                                   static_cast<int32_t>(padding), dtype_code(x, "x"), stream()),
               "varlen_conv1d_dw");
}

// out <- grad_y * gelu'(pre), elementwise.
inline void varlen_conv1d_gelu_grad(const at::Tensor& grad_y, const at::Tensor& pre, at::Tensor out) {
  check_cuda(grad_y, "grad_y");
  check_like(pre, grad_y, "pre");
  check_like(out, grad_y, "out");
  TORCH_CHECK(pre.sizes() == grad_y.sizes() && out.sizes() == grad_y.sizes(), "varlen_conv1d_gelu_grad: shapes");
  const c10::cuda::CUDAGuard guard(grad_y.device());
  check_launch(ak_varlen_conv1d_gelu_grad(grad_y.data_ptr(), pre.data_ptr(), out.data_ptr(), grad_y.numel(),
                                          dtype_code(grad_y, "grad_y"), stream()),
               "varlen_conv1d_gelu_grad");
}
}  // namespace akb

inline void register_varlen_conv1d(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("varlen_conv1d_fwd", &akb::varlen_conv1d_fwd, "varlen conv1d forward (implicit GEMM) into y / pre",
        py::arg("x"), py::arg("w_t"), py::arg("bias"), py::arg("y"), py::arg("pre"), py::arg("cu_seqlens"),
        py::arg("cu_y"), py::arg("stride"), py::arg("padding"), py::arg("gelu"));
  m.def("varlen_conv1d_dx", &akb::varlen_conv1d_dx, "varlen conv1d grad_x (transposed conv) into grad_x",
        py::arg("grad_pre"), py::arg("w_t"), py::arg("grad_x"), py::arg("cu_seqlens"), py::arg("cu_y"),
        py::arg("cu_ph"), py::arg("stride"), py::arg("padding"));
  m.def("varlen_conv1d_dw", &akb::varlen_conv1d_dw, "varlen conv1d grad_w (+ grad_b) into grad_w / grad_b",
        py::arg("grad_pre"), py::arg("x"), py::arg("grad_w"), py::arg("grad_b"), py::arg("cu_seqlens"),
        py::arg("cu_y"), py::arg("stride"), py::arg("padding"));
  m.def("varlen_conv1d_gelu_grad", &akb::varlen_conv1d_gelu_grad, "grad_y * gelu'(pre) into out",
        py::arg("grad_y"), py::arg("pre"), py::arg("out"));
}
