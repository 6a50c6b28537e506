// Torch wrappers for csrc/multi_encoder_concat.cu (included only from bindings.cpp).
// Outputs (cu_y included) are allocated by the Python side (alarm_kernels.multi_encoder_concat.cuda) and
// passed in. The projection's GEMMs run through cuBLAS (at::mm / at::addmm) on operands gathered by the custom
// kernels: the forward materializes the concatenation once, the backward gathers each stream's rows of grad_y.
#pragma once
#include <optional>
#include <vector>

#include "binding_utils.h"

#include "multi_encoder_concat.h"

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
  at::Tensor cat = at::empty({total_y, p.d_total}, out.options());
  check_launch(ak_multi_encoder_concat_fwd(p.ptrs.data(), p.cus.data(), p.widths.data(), n,
                                           cu_y.data_ptr<int32_t>(), n_seq, total_y, cat.data_ptr(), dt, stream()),
               "multi_encoder_concat_fwd");
  if (bias.has_value()) {
    check_cuda(*bias, "bias");
    TORCH_CHECK(bias->scalar_type() == out.scalar_type() && bias->numel() == w.size(0),
                "multi_encoder_concat: bias must be [D_out] in the output dtype");
    at::addmm_out(out, *bias, cat, w.t());
  } else {
    at::mm_out(out, cat, w.t());
  }
}

// dst [total_e, src.size(1)] = the rows of src (laid out in output rows) that stream e's rows map to
inline at::Tensor gather_rows(const at::Tensor& src, const at::Tensor& cu_e, const at::Tensor& cu_y, int64_t total_e) {
  at::Tensor dst = at::empty({total_e, src.size(1)}, src.options());
  const int n_seq = static_cast<int>(cu_y.numel()) - 1;
  check_launch(ak_multi_encoder_concat_gather_rows(src.data_ptr(), cu_e.data_ptr<int32_t>(), cu_y.data_ptr<int32_t>(),
                                                   n_seq, total_e, static_cast<int>(src.size(1)),
                                                   static_cast<int>(src.size(1)), 0, dst.data_ptr(),
                                                   dtype_code(src, "grad_y"), stream()),
               "multi_encoder_concat_gather_rows");
  return dst;
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
  if (weight.has_value()) {  // grad_x = gathered(grad_y) @ W[:, seg_e] (cuBLAS)
    check_cuda(*weight, "weight");
    TORCH_CHECK(weight->size(1) == d_total && weight->size(0) == grad_y.size(1), "multi_encoder_concat: weight shape");
    at::mm_out(grad_x, gather_rows(grad_y, cu_e, cu_y, grad_x.size(0)), weight->narrow(1, col_offset, grad_x.size(1)));
    return;
  }
  TORCH_CHECK(grad_y.size(1) == d_total, "multi_encoder_concat: grad_y must be [total_y, sum D_e]");
  check_launch(ak_multi_encoder_concat_gather_rows(grad_y.data_ptr(), cu_e.data_ptr<int32_t>(),
                                                   cu_y.data_ptr<int32_t>(), n_seq, grad_x.size(0),
                                                   static_cast<int>(grad_x.size(1)), static_cast<int>(d_total),
                                                   static_cast<int>(col_offset), grad_x.data_ptr(),
                                                   dtype_code(grad_x, "grad_x"), stream()),
               "multi_encoder_concat_gather_rows");
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
  // cuBLAS on the gathered rows of grad_y: [D_out, total_e] @ [total_e, D_e]
  grad_w.narrow(1, col_offset, x.size(1)).copy_(at::mm(gather_rows(grad_y, cu_e, cu_y, x.size(0)).t(), x));
}

// grad_b [D_out] = column sums of grad_y
inline void bwd_bias(const at::Tensor& grad_y, at::Tensor grad_b) {
  check_cuda(grad_y, "grad_y");
  check_cuda(grad_b, "grad_b");
  c10::cuda::CUDAGuard guard(grad_y.device());
  TORCH_CHECK(grad_b.numel() == grad_y.size(1) && grad_b.scalar_type() == grad_y.scalar_type(),
              "multi_encoder_concat: grad_b must be [D_out] in grad_y's dtype");
  const int64_t rows = grad_y.size(0);
  const int cols = static_cast<int>(grad_y.size(1));
  const int splits = ak_multi_encoder_concat_column_sum_splits(rows, cols);
  at::Tensor partials = at::empty({splits, cols}, grad_y.options().dtype(at::kFloat));
  check_launch(ak_multi_encoder_concat_column_sum(grad_y.data_ptr(), rows, cols, partials.data_ptr<float>(), splits,
                                                  grad_b.data_ptr(), dtype_code(grad_y, "grad_y"), stream()),
               "multi_encoder_concat_column_sum");
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
