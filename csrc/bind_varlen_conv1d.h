// Torch wrappers for csrc/varlen_conv1d.cu (included only from bindings.cpp). Outputs and the re-laid-out
// weights are prepared by the Python side (alarm_kernels.varlen_conv1d.cuda) and filled here.
#pragma once
#include <optional>

#include "binding_utils.h"
#include "bind_varlen_pool.h"  // akb::check_offsets, akb::check_like

#include "varlen_conv1d.h"

namespace akb {
// cu_y (int32 [N+1], preallocated) <- offsets of the conv output tokens: max(0, (L + 2p - k) // s + 1) per sequence
inline void varlen_conv1d_output_offsets(const at::Tensor& cu_x, at::Tensor cu_y, int64_t k, int64_t stride,
                                         int64_t padding) {
  check_offsets(cu_x, cu_y, "cu_seqlens");
  check_offsets(cu_y, cu_x, "cu_y");
  TORCH_CHECK(cu_x.numel() == cu_y.numel() && cu_x.numel() >= 1 && k >= 1 && stride >= 1 && padding >= 0 &&
                  k <= INT32_MAX && stride <= INT32_MAX && padding <= INT32_MAX,
              "varlen_conv1d_output_offsets: bad offsets, kernel size, stride or padding");
  const c10::cuda::CUDAGuard guard(cu_x.device());
  check_launch(ak_varlen_conv1d_output_offsets(cu_x.data_ptr<int32_t>(), static_cast<int32_t>(cu_x.numel() - 1),
                                               static_cast<int32_t>(k), static_cast<int32_t>(stride),
                                               static_cast<int32_t>(padding), cu_y.data_ptr<int32_t>(), stream()),
               "varlen_conv1d_output_offsets");
}

// col [total_y, k * C_in]: the taps of every output token (ak_varlen_conv1d_im2col)
inline at::Tensor conv_im2col(const at::Tensor& x, const at::Tensor& cu_x, const at::Tensor& cu_y, int64_t total_y,
                              int64_t k, int64_t stride, int64_t padding) {
  at::Tensor col = at::empty({total_y, k * x.size(1)}, x.options());
  check_launch(ak_varlen_conv1d_im2col(x.data_ptr(), cu_x.data_ptr<int32_t>(), cu_y.data_ptr<int32_t>(),
                                       static_cast<int32_t>(cu_x.numel() - 1), total_y, static_cast<int32_t>(x.size(1)),
                                       static_cast<int32_t>(k), static_cast<int32_t>(stride),
                                       static_cast<int32_t>(padding), col.data_ptr(), dtype_code(x, "x"), stream()),
               "varlen_conv1d_im2col");
  return col;
}

// y [total_y, C_out] (and pre, when gelu) <- conv of x [total, C_in] with w_t [k, C_in, C_out] (+ bias):
// im2col, then one cuBLAS GEMM (bias fused by addmm), then GELU.
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
  const int64_t k = w_t.size(0);
  const at::Tensor col = conv_im2col(x, cu_x, cu_y, y.size(0), k, stride, padding);
  const at::Tensor w2 = w_t.reshape({k * x.size(1), y.size(1)});
  at::Tensor target = gelu ? pre : y;
  if (bias) at::addmm_out(target, *bias, col, w2);
  else at::mm_out(target, col, w2);
  if (gelu) at::gelu_out(y, pre);
}

// grad_x [total, C_in] <- transposed conv of grad_pre [total_y, C_out] with w_t [k, C_out, C_in]:
// gcol = grad_pre @ W (cuBLAS), then col2im (each frame sums the taps that read it, fixed order).
inline void varlen_conv1d_dx(const at::Tensor& grad_pre, const at::Tensor& w_t, at::Tensor grad_x,
                             const at::Tensor& cu_x, const at::Tensor& cu_y, int64_t stride, int64_t padding) {
  check_cuda(grad_pre, "grad_pre");
  check_like(w_t, grad_pre, "weight");
  check_like(grad_x, grad_pre, "grad_x");
  check_offsets(cu_x, grad_pre, "cu_seqlens");
  check_offsets(cu_y, grad_pre, "cu_y");
  TORCH_CHECK(w_t.dim() == 3 && w_t.size(1) == grad_pre.size(1) && w_t.size(2) == grad_x.size(1),
              "varlen_conv1d_dx: w_t must be [k, C_out, C_in]");
  const c10::cuda::CUDAGuard guard(grad_pre.device());
  const int64_t k = w_t.size(0), c_out = w_t.size(1), c_in = w_t.size(2);
  const at::Tensor gcol = at::mm(grad_pre, w_t.permute({1, 0, 2}).reshape({c_out, k * c_in}));
  check_launch(ak_varlen_conv1d_col2im(gcol.data_ptr(), cu_x.data_ptr<int32_t>(), cu_y.data_ptr<int32_t>(),
                                       static_cast<int32_t>(cu_x.numel() - 1), grad_x.size(0),
                                       static_cast<int32_t>(c_in), static_cast<int32_t>(k),
                                       static_cast<int32_t>(stride), static_cast<int32_t>(padding),
                                       grad_x.data_ptr(), dtype_code(grad_pre, "grad_pre"), stream()),
               "varlen_conv1d_col2im");
}

// grad_w [C_out, C_in, k] (and grad_b [C_out] when given) <- grad_pre [total_y, C_out] and x [total, C_in]:
// grad_pre^T @ im2col(x) (cuBLAS), re-laid out; grad_b = column sums (fp32 accumulation).
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
  const int64_t c_out = grad_w.size(0), c_in = grad_w.size(1), k = grad_w.size(2);
  const at::Tensor col = conv_im2col(x, cu_x, cu_y, grad_pre.size(0), k, stride, padding);
  grad_w.copy_(at::mm(grad_pre.t(), col).view({c_out, k, c_in}).permute({0, 2, 1}));
  if (grad_b) grad_b->copy_(grad_pre.sum({0}, false, at::kFloat));
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
  m.def("varlen_conv1d_output_offsets", &akb::varlen_conv1d_output_offsets, "conv output offsets into cu_y",
        py::arg("cu_seqlens"), py::arg("cu_y"), py::arg("k"), py::arg("stride"), py::arg("padding"));
  m.def("varlen_conv1d_fwd", &akb::varlen_conv1d_fwd, "varlen conv1d forward (im2col + cuBLAS) into y / pre",
        py::arg("x"), py::arg("w_t"), py::arg("bias"), py::arg("y"), py::arg("pre"), py::arg("cu_seqlens"),
        py::arg("cu_y"), py::arg("stride"), py::arg("padding"), py::arg("gelu"));
  m.def("varlen_conv1d_dx", &akb::varlen_conv1d_dx, "varlen conv1d grad_x (cuBLAS + col2im) into grad_x",
        py::arg("grad_pre"), py::arg("w_t"), py::arg("grad_x"), py::arg("cu_seqlens"), py::arg("cu_y"),
        py::arg("stride"), py::arg("padding"));
  m.def("varlen_conv1d_dw", &akb::varlen_conv1d_dw, "varlen conv1d grad_w (+ grad_b) into grad_w / grad_b",
        py::arg("grad_pre"), py::arg("x"), py::arg("grad_w"), py::arg("grad_b"), py::arg("cu_seqlens"),
        py::arg("cu_y"), py::arg("stride"), py::arg("padding"));
  m.def("varlen_conv1d_gelu_grad", &akb::varlen_conv1d_gelu_grad, "grad_y * gelu'(pre) into out",
        py::arg("grad_y"), py::arg("pre"), py::arg("out"));
}
