// Torch wrappers for csrc/multi_encoder_concat.cu (included only from bindings.cpp).
// Outputs (cu_y included) are allocated by the Python side (alarm_kernels.multi_encoder_concat.cuda) and
// passed in.
#pragma once
#include <optional>
#include <vector>

#include "binding_utils.h"

extern "C" {
int ak_multi_encoder_concat_max_streams();
cudaError_t ak_multi_encoder_concat_output_offsets(const int32_t* const* cus, int n_streams, int n_seq, int32_t* cu_y,
                                                   cudaStream_t stream);
cudaError_t ak_multi_encoder_concat_fwd(const void* const* streams, const int32_t* const* cus, const int* widths,
                                        int n_streams, const int32_t* cu_y, int n_seq, int64_t total_y, void* out,
                                        int dtype, cudaStream_t stream);
cudaError_t ak_multi_encoder_concat_linear_fwd(const void* const* streams, const int32_t* const* cus,
                                               const int* widths, int n_streams, const int32_t* cu_y, int n_seq,
                                               int64_t total_y, const void* weight, const void* bias, int d_out,
                                               void* out, int dtype, cudaStream_t stream);
cudaError_t ak_multi_encoder_concat_bwd_stream(const void* grad_y, const int32_t* cu_e, const int32_t* cu_y, int n_seq,
                                               int64_t total_e, int width, int d_total, int col_offset,
                                               const void* weight, int d_out, void* grad_x, int dtype,
                                               cudaStream_t stream);
cudaError_t ak_multi_encoder_concat_bwd_weight(const void* grad_y, const void* x, const int32_t* cu_e,
                                               const int32_t* cu_y, int n_seq, int64_t total_e, int width, int d_out,
                                               int d_total, int col_offset, void* grad_w, int dtype,
                                               cudaStream_t stream);
cudaError_t ak_multi_encoder_concat_bwd_bias(const void* grad_y, int64_t rows, int cols, void* grad_b, int dtype,
                                             cudaStream_t stream);
}

namespace akb {
namespace mec {

inline void check_cu(const at::Tensor& cu, const at::Tensor& cu_y, const char* name) {
  check_cuda(cu, name);
  TORCH_CHECK(cu.scalar_type() == at::kInt && cu.dim() == 1 && cu.numel() == cu_y.numel(), name,
              ": int32 [N+1] with the N of cu_y expected");
}

struct Packed {
  std::vector<const void*> ptrs;
  std::vector<const int32_t*> cus;
  std::vector<int> widths;
  int64_t d_total = 0;
};

inline Packed pack(const std::vector<at::Tensor>& streams, const std::vector<at::Tensor>& cus, const at::Tensor& cu_y,
                   const at::Tensor out) {
  TORCH_CHECK(!streams.empty() && streams.size() == cus.size(), "multi_encoder_concat: one cu_seqlens per stream");
  TORCH_CHECK(static_cast<int>(streams.size()) <= ak_multi_encoder_concat_max_streams(),
              "multi_encoder_concat: at most ", ak_multi_encoder_concat_max_streams(), " streams");
  Packed p;
  for (size_t e = 0; e < streams.size(); ++e) {
    check_cuda(streams[e], "streams[e]");
    TORCH_CHECK(streams[e].dim() == 2 && streams[e].scalar_type() == out.scalar_type(),
                "multi_encoder_concat: streams must be 2-D in the output dtype");
    check_cu(cus[e], cu_y, "cu_seqlens[e]");
    p.ptrs.push_back(streams[e].data_ptr());
    p.cus.push_back(cus[e].data_ptr<int32_t>());
    p.widths.push_back(static_cast<int>(streams[e].size(1)));
    p.d_total += streams[e].size(1);
  }
  return p;
}

// cu_y (int32 [N+1], preallocated) = output offsets, L_i = max_e len_{e,i}
inline void output_offsets(const std::vector<at::Tensor>& cus, at::Tensor cu_y) {
  check_cuda(cu_y, "cu_y");
  c10::cuda::CUDAGuard guard(cu_y.device());
  TORCH_CHECK(cu_y.scalar_type() == at::kInt && cu_y.dim() == 1, "multi_encoder_concat: cu_y must be int32 [N+1]");
  TORCH_CHECK(!cus.empty() && static_cast<int>(cus.size()) <= ak_multi_encoder_concat_max_streams(),
              "multi_encoder_concat: 1 to ", ak_multi_encoder_concat_max_streams(), " streams");
  std::vector<const int32_t*> ptrs;
  for (const auto& cu : cus) {
    check_cu(cu, cu_y, "cu_seqlens[e]");
    ptrs.push_back(cu.data_ptr<int32_t>());
  }
  check_launch(ak_multi_encoder_concat_output_offsets(ptrs.data(), static_cast<int>(ptrs.size()),
                                                      static_cast<int>(cu_y.numel()) - 1, cu_y.data_ptr<int32_t>(),
                                                      stream()),
               "multi_encoder_concat_output_offsets");
}

// out [total_y, sum D_e] = concatenation; with weight [D_out, sum D_e]: out [total_y, D_out] = concat @ W^T (+ bias)
inline void fwd(const std::vector<at::Tensor>& streams, const std::vector<at::Tensor>& cus, const at::Tensor& cu_y,
                const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, at::Tensor out) {
  check_cuda(out, "out");
  check_cuda(cu_y, "cu_y");
  c10::cuda::CUDAGuard guard(out.device());
  const Packed p = pack(streams, cus, cu_y, out);
  const int n_seq = static_cast<int>(cu_y.numel()) - 1;
  const int64_t total_y = out.size(0);
  if (total_y == 0 || out.size(1) == 0) return;
  const int dt = dtype_code(out, "out");
  const int n = static_cast<int>(p.ptrs.size());
  if (!weight.has_value()) {
    TORCH_CHECK(out.size(1) == p.d_total, "multi_encoder_concat: out must be [total_y, sum D_e]");
    check_launch(ak_multi_encoder_concat_fwd(p.ptrs.data(), p.cus.data(), p.widths.data(), n,
                                             cu_y.data_ptr<int32_t>(), n_seq, total_y, out.data_ptr(), dt, stream()),
                 "multi_encoder_concat_fwd");
    return;
  }
  const at::Tensor& w = *weight;
  check_cuda(w, "weight");
  TORCH_CHECK(w.scalar_type() == out.scalar_type() && w.dim() == 2 && w.size(1) == p.d_total &&
                  w.size(0) == out.size(1),
              "multi_encoder_concat: weight must be [D_out, sum D_e] in the output dtype");
  const void* bias_ptr = nullptr;
  if (bias.has_value()) {
    check_cuda(*bias, "bias");
    TORCH_CHECK(bias->scalar_type() == out.scalar_type() && bias->numel() == w.size(0),
                "multi_encoder_concat: bias must be [D_out] in the output dtype");
    bias_ptr = bias->data_ptr();
  }
  check_launch(ak_multi_encoder_concat_linear_fwd(p.ptrs.data(), p.cus.data(), p.widths.data(), n,
                                                  cu_y.data_ptr<int32_t>(), n_seq, total_y, w.data_ptr(), bias_ptr,
                                                  static_cast<int>(w.size(0)), out.data_ptr(), dt, stream()),
               "multi_encoder_concat_linear_fwd");
}

// grad_x [total_e, width] of the stream at feature offset col_offset (d_total = sum D_e)
inline void bwd_stream(const at::Tensor& grad_y, const at::Tensor& cu_e, const at::Tensor& cu_y, int64_t d_total,
                       int64_t col_offset, const std::optional<at::Tensor>& weight, at::Tensor grad_x) {
  check_cuda(grad_y, "grad_y");
  check_cuda(grad_x, "grad_x");
  check_cuda(cu_y, "cu_y");
  check_cu(cu_e, cu_y, "cu_seqlens[e]");
  c10::cuda::CUDAGuard guard(grad_y.device());
  TORCH_CHECK(grad_x.scalar_type() == grad_y.scalar_type() && grad_x.dim() == 2, "multi_encoder_concat: grad_x dtype");
  const int n_seq = static_cast<int>(cu_y.numel()) - 1;
  if (n_seq < 1 || grad_x.numel() == 0) return;
  const void* w_ptr = nullptr;
  int d_out = 0;
  if (weight.has_value()) {
    check_cuda(*weight, "weight");
    TORCH_CHECK(weight->size(1) == d_total && weight->size(0) == grad_y.size(1), "multi_encoder_concat: weight shape");
    w_ptr = weight->data_ptr();
    d_out = static_cast<int>(weight->size(0));
  } else {
    TORCH_CHECK(grad_y.size(1) == d_total, "multi_encoder_concat: grad_y must be [total_y, sum D_e]");
  }
  check_launch(ak_multi_encoder_concat_bwd_stream(grad_y.data_ptr(), cu_e.data_ptr<int32_t>(),
                                                  cu_y.data_ptr<int32_t>(), n_seq, grad_x.size(0),
                                                  static_cast<int>(grad_x.size(1)), static_cast<int>(d_total),
                                                  static_cast<int>(col_offset), w_ptr, d_out, grad_x.data_ptr(),
                                                  dtype_code(grad_x, "grad_x"), stream()),
               "multi_encoder_concat_bwd_stream");
}

// grad_w[:, col_offset : col_offset + D_e] = gathered(grad_y)^T @ x
inline void bwd_weight(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& cu_e, const at::Tensor& cu_y,
                       int64_t col_offset, at::Tensor grad_w) {
  check_cuda(grad_y, "grad_y");
  check_cuda(x, "x");
  check_cuda(grad_w, "grad_w");
  check_cuda(cu_y, "cu_y");
  check_cu(cu_e, cu_y, "cu_seqlens[e]");
  c10::cuda::CUDAGuard guard(grad_y.device());
  TORCH_CHECK(grad_w.dim() == 2 && grad_w.size(0) == grad_y.size(1) && col_offset + x.size(1) <= grad_w.size(1),
              "multi_encoder_concat: grad_w shape");
  TORCH_CHECK(x.scalar_type() == grad_y.scalar_type() && grad_w.scalar_type() == grad_y.scalar_type(),
              "multi_encoder_concat: dtypes must match");
  const int n_seq = static_cast<int>(cu_y.numel()) - 1;
  if (x.size(1) == 0 || grad_w.size(0) == 0) return;
  if (n_seq < 1) {
    grad_w.narrow(1, col_offset, x.size(1)).zero_();
    return;
  }
  check_launch(ak_multi_encoder_concat_bwd_weight(grad_y.data_ptr(), x.data_ptr(), cu_e.data_ptr<int32_t>(),
                                                  cu_y.data_ptr<int32_t>(), n_seq, x.size(0),
                                                  static_cast<int>(x.size(1)), static_cast<int>(grad_w.size(0)),
                                                  static_cast<int>(grad_w.size(1)), static_cast<int>(col_offset),
                                                  grad_w.data_ptr(), dtype_code(grad_w, "grad_w"), stream()),
               "multi_encoder_concat_bwd_weight");
}

// grad_b [D_out] = column sums of grad_y
inline void bwd_bias(const at::Tensor& grad_y, at::Tensor grad_b) {
  check_cuda(grad_y, "grad_y");
  check_cuda(grad_b, "grad_b");
  c10::cuda::CUDAGuard guard(grad_y.device());
  TORCH_CHECK(grad_b.numel() == grad_y.size(1) && grad_b.scalar_type() == grad_y.scalar_type(),
              "multi_encoder_concat: grad_b must be [D_out] in grad_y's dtype");
  check_launch(ak_multi_encoder_concat_bwd_bias(grad_y.data_ptr(), grad_y.size(0), static_cast<int>(grad_y.size(1)),
                                                grad_b.data_ptr(), dtype_code(grad_y, "grad_y"), stream()),
               "multi_encoder_concat_bwd_bias");
}

}  // namespace mec
}  // namespace akb

inline void register_multi_encoder_concat(pybind11::module_& m) {
  m.def("multi_encoder_concat_output_offsets", &akb::mec::output_offsets, "cu_y = offsets of L_i = max_e len_{e,i}",
        pybind11::arg("cu_seqlens"), pybind11::arg("cu_y"));
  m.def("multi_encoder_concat_fwd", &akb::mec::fwd, "concatenation (or fused concat + projection) into out",
        pybind11::arg("streams"), pybind11::arg("cu_seqlens"), pybind11::arg("cu_y"), pybind11::arg("weight"),
        pybind11::arg("bias"), pybind11::arg("out"));
  m.def("multi_encoder_concat_bwd_stream", &akb::mec::bwd_stream, "gradient of one stream",
        pybind11::arg("grad_y"), pybind11::arg("cu_e"), pybind11::arg("cu_y"), pybind11::arg("d_total"),
        pybind11::arg("col_offset"), pybind11::arg("weight"), pybind11::arg("grad_x"));
  m.def("multi_encoder_concat_bwd_weight", &akb::mec::bwd_weight, "one stream's column block of grad_weight",
        pybind11::arg("grad_y"), pybind11::arg("x"), pybind11::arg("cu_e"), pybind11::arg("cu_y"),
        pybind11::arg("col_offset"), pybind11::arg("grad_w"));
  m.def("multi_encoder_concat_bwd_bias", &akb::mec::bwd_bias, "grad_bias = column sums of grad_y",
        pybind11::arg("grad_y"), pybind11::arg("grad_b"));
}
