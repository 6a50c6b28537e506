// Torch wrappers for csrc/weighted_layer_sum.cu (included only from bindings.cpp).
// Outputs are allocated by the Python side (alarm_kernels.weighted_layer_sum.cuda) and passed in.
#pragma once
#include <vector>

#include "binding_utils.h"

#include "weighted_layer_sum.h"

namespace akb {
namespace wls {

inline std::vector<const void*> layer_pointers(const std::vector<at::Tensor>& layers, const at::Tensor& like) {
  TORCH_CHECK(!layers.empty(), "weighted_layer_sum: layers is empty");
  TORCH_CHECK(static_cast<int>(layers.size()) <= ak_weighted_layer_sum_max_layers(), "weighted_layer_sum: at most ",
              ak_weighted_layer_sum_max_layers(), " layers");
  std::vector<const void*> ptrs;
  for (const auto& x : layers) {
    check_cuda(x, "layers[j]");
    TORCH_CHECK(x.scalar_type() == like.scalar_type() && x.numel() == like.numel(),
                "weighted_layer_sum: layers must share dtype and size with the output");
    ptrs.push_back(x.data_ptr());
  }
  return ptrs;
}

// out (same shape/dtype as each layer) = sum_j softmax(logits)_j * layers[j]
inline void fwd(const std::vector<at::Tensor>& layers, const at::Tensor& logits, at::Tensor out) {
  check_cuda(out, "out");
  check_cuda(logits, "logits");
  c10::cuda::CUDAGuard guard(out.device());
  const auto ptrs = layer_pointers(layers, out);
  TORCH_CHECK(logits.numel() == static_cast<int64_t>(layers.size()), "weighted_layer_sum: logits must have k entries");
  if (out.numel() == 0) return;
  check_launch(ak_weighted_layer_sum_fwd(ptrs.data(), static_cast<int>(ptrs.size()), logits.data_ptr(),
                                         dtype_code(logits, "logits"), out.data_ptr(), out.numel(),
                                         dtype_code(out, "out"), stream()),
               "weighted_layer_sum_fwd");
}

// grad_logits [k] (logits' dtype); grad_layers: empty (not needed) or k tensors shaped like the layers
inline void bwd(const at::Tensor& grad_y, const std::vector<at::Tensor>& layers, const at::Tensor& logits,
                std::vector<at::Tensor> grad_layers, at::Tensor grad_logits) {
  check_cuda(grad_y, "grad_y");
  check_cuda(logits, "logits");
  check_cuda(grad_logits, "grad_logits");
  c10::cuda::CUDAGuard guard(grad_y.device());
  const auto ptrs = layer_pointers(layers, grad_y);
  const int k = static_cast<int>(ptrs.size());
  TORCH_CHECK(logits.numel() == k && grad_logits.numel() == k, "weighted_layer_sum: logits must have k entries");
  TORCH_CHECK(grad_layers.empty() || static_cast<int>(grad_layers.size()) == k,
              "weighted_layer_sum: grad_layers must be empty or hold k tensors");
  std::vector<void*> gptrs;
  for (auto& g : grad_layers) {
    check_cuda(g, "grad_layers[j]");
    TORCH_CHECK(g.scalar_type() == grad_y.scalar_type() && g.numel() == grad_y.numel(),
                "weighted_layer_sum: grad_layers must match grad_y");
    gptrs.push_back(g.data_ptr());
  }
  if (grad_y.numel() == 0) {
    grad_logits.zero_();
    return;
  }
  auto workspace = at::empty({ak_weighted_layer_sum_workspace_floats(k)}, grad_y.options().dtype(at::kFloat));
  check_launch(ak_weighted_layer_sum_bwd(ptrs.data(), k, logits.data_ptr(), dtype_code(logits, "logits"),
                                         grad_y.data_ptr(), gptrs.empty() ? nullptr : gptrs.data(),
                                         grad_logits.data_ptr(), workspace.data_ptr<float>(), grad_y.numel(),
                                         dtype_code(grad_y, "grad_y"), stream()),
               "weighted_layer_sum_bwd");
}

}  // namespace wls
}  // namespace akb

inline void register_weighted_layer_sum(pybind11::module_& m) {
  m.def("weighted_layer_sum_fwd", &akb::wls::fwd, "out = sum_j softmax(logits)_j * layers[j]",
        pybind11::arg("layers"), pybind11::arg("logits"), pybind11::arg("out"));
  m.def("weighted_layer_sum_bwd", &akb::wls::bwd, "grad_logits (and grad_layers when given) of the layer sum",
        pybind11::arg("grad_y"), pybind11::arg("layers"), pybind11::arg("logits"), pybind11::arg("grad_layers"),
        pybind11::arg("grad_logits"));
}
