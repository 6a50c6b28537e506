// The single translation unit that includes torch headers (compiling them costs minutes; docs/building.md).
// Each op contributes bind_<op>.h: torch wrappers around its C-ABI launchers plus register_<op>(m).
#include "binding_utils.h"
#include "bind_varlen_pool.h"
#include "bind_varlen_conv1d.h"
#include "bind_weighted_layer_sum.h"
#include "bind_multi_encoder_concat.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "alarm_kernels CUDA extension: fused multi-encoder concat, layer sum, varlen pooling and conv";
  register_varlen_pool(m);
  register_varlen_conv1d(m);
  register_weighted_layer_sum(m);
  register_multi_encoder_concat(m);
}
