"""Optional fast paths for the frozen LLM (``ALARMConfig.llm_kernels`` and ``ALARMConfig.llm_fp8``).

Both are execution choices: the weights, the function computed (up to rounding) and what is saved stay the same.

- ``llm_kernels="liger"``: Liger-Kernel's fused Triton kernels (a maintained library, ``pip install liger-kernel``)
  for the Qwen3 RMSNorms (``LigerRMSNorm``, sharing the original weight), the SwiGLU MLPs (``LigerSwiGLUMLP``,
  sharing the original linear layers) and RoPE (``liger_rotary_pos_emb``). Liger's own ``apply_liger_kernel_to_qwen3``
  replaces transformers' module-level classes and RoPE function for the whole process; here only this model's
  modules are swapped, and RoPE is swapped only while this model runs (:func:`liger_rope`), so other Qwen3 models
  in the process are unaffected. CUDA only (Liger's RMSNorm and SwiGLU kernels do not run under Triton's CPU
  interpreter; its RoPE kernel does).
- ``llm_kernels="compile"``: regional ``torch.compile``: each decoder layer is compiled on its own (one compiled
  graph serves all layers), so Inductor fuses the norms, RoPE and SwiGLU with their neighbours, while the
  attention stays the ``alarm_kernels`` custom op.
- ``llm_fp8="on"``: the decoder layers' linear layers become torchao ``Float8Linear`` (``pip install torchao``):
  input, weight and output gradient cast to float8 with dynamic tensorwise scales, matmuls through
  ``torch._scaled_mm``; needs CUDA compute capability >= 8.9. torchao also computes the (discarded) weight
  gradient of these frozen layers, one extra GEMM per layer in backward. ``"emulate"``: the same casts with the
  matmuls in high precision (torchao's ``emulate=True``), to check numerics anywhere. The LM head (tied to the
  embedding) stays in the LLM's dtype.
"""
from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from ..extras import require

__all__ = ["apply_llm_options", "apply_liger", "liger_rope", "compile_decoder_layers", "convert_fp8",
           "forward_context"]

_EXTRAS = {"liger_kernel": ("liger-kernel", "liger"), "torchao": ("torchao", "fp8")}


def _require(module: str, option: str):
    """Import ``module`` or raise :class:`alarm.extras.MissingExtraError` naming the option and the package."""
    package, extra = _EXTRAS[module.split(".")[0]]
    return require(module, option, package, extra)


def _decoder(model: nn.Module) -> nn.Module:
    """The Qwen3 decoder (``model.model``) of a causal LM; ValueError for another architecture."""
    if getattr(model.config, "model_type", None) != "qwen3":
        raise ValueError(f"llm_kernels / llm_fp8 support Qwen3 only, got model_type {model.config.model_type!r}")
    return model.model


def apply_liger(model: nn.Module) -> None:
    """Swap, in this model only, every RMSNorm for ``LigerRMSNorm`` and every MLP for ``LigerSwiGLUMLP``, sharing
    the original parameters (nothing is copied). RoPE is swapped at call time by :func:`liger_rope`."""
    norm_cls = _require("liger_kernel.transformers.rms_norm", "llm_kernels='liger'").LigerRMSNorm
    mlp_cls = _require("liger_kernel.transformers.swiglu", "llm_kernels='liger'").LigerSwiGLUMLP
    decoder = _decoder(model)

    def fused_norm(old: nn.Module) -> nn.Module:
        with torch.device("meta"):
            new = norm_cls(old.weight.shape[0], eps=old.variance_epsilon, casting_mode="llama", in_place=True)
        new.weight = old.weight
        return new

    decoder.norm = fused_norm(decoder.norm)
    for layer in decoder.layers:
        layer.input_layernorm = fused_norm(layer.input_layernorm)
        layer.post_attention_layernorm = fused_norm(layer.post_attention_layernorm)
        layer.self_attn.q_norm = fused_norm(layer.self_attn.q_norm)
        layer.self_attn.k_norm = fused_norm(layer.self_attn.k_norm)
        old = layer.mlp
        with torch.device("meta"):
            mlp = mlp_cls(model.config)
        mlp.gate_proj, mlp.up_proj, mlp.down_proj = old.gate_proj, old.up_proj, old.down_proj
        layer.mlp = mlp


@contextmanager
def liger_rope():
    """While active, transformers' Qwen3 attention applies RoPE with Liger's fused kernel (the module-level
    function it calls is swapped and restored on exit; its backward needs nothing from this context)."""
    rope = _require("liger_kernel.transformers.rope", "llm_kernels='liger'").liger_rotary_pos_emb
    from transformers.models.qwen3 import modeling_qwen3

    old = modeling_qwen3.apply_rotary_pos_emb
    modeling_qwen3.apply_rotary_pos_emb = rope
    try:
        yield
    finally:
        modeling_qwen3.apply_rotary_pos_emb = old


def compile_decoder_layers(model: nn.Module) -> None:
    """Regional compilation: ``torch.compile`` each decoder layer in place (``nn.Module.compile``); the first
    calls of each new shape compile, later ones reuse the graph (sizes become dynamic after a recompile)."""
    for layer in _decoder(model).layers:
        layer.compile()


def _fp8_eligible(module: nn.Module, fqn: str) -> bool:
    """Linear layers whose sizes ``torch._scaled_mm`` accepts (multiples of 16)."""
    return isinstance(module, nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0


def convert_fp8(model: nn.Module, emulate: bool) -> int:
    """Replace the decoder layers' eligible linear layers by torchao ``Float8Linear`` (tensorwise dynamic
    scaling; ``emulate``: matmuls in high precision). Returns the number of layers converted."""
    float8 = _require("torchao.float8", "llm_fp8")
    linear_cls = _require("torchao.float8.float8_linear", "llm_fp8").Float8Linear
    config = float8.Float8LinearConfig(emulate=emulate)
    for layer in _decoder(model).layers:
        float8.convert_to_float8_training(layer, config=config, module_filter_fn=_fp8_eligible)
    return sum(isinstance(m, linear_cls) for m in model.modules())


def apply_llm_options(model: nn.Module, kernels: str, fp8: str) -> None:
    """Apply ``ALARMConfig.llm_fp8`` then ``llm_kernels`` to a freshly built (frozen) causal LM, in place.
    ``"none"`` / ``"off"`` change nothing."""
    if fp8 != "off":
        convert_fp8(model, emulate=fp8 == "emulate")
    if kernels == "liger":
        apply_liger(model)
    elif kernels == "compile":
        compile_decoder_layers(model)


def forward_context(model: nn.Module, kernels: str, fp8: str):
    """The context every forward of the LLM runs in: :func:`liger_rope` for ``"liger"``, else nothing. A
    ValueError when the options need CUDA (Liger's kernels, real FP8 matmuls) and the model is elsewhere (Liger on
    CPU tensors is let through under ``TRITON_INTERPRET=1``, Triton's interpreter)."""
    interpreted = kernels == "liger" and fp8 != "on" and os.environ.get("TRITON_INTERPRET") == "1"
    if (kernels == "liger" or fp8 == "on") and not interpreted:
        device = next(model.parameters()).device
        if device.type != "cuda":
            option = "llm_kernels='liger'" if kernels == "liger" else "llm_fp8='on'"
            raise ValueError(f"{option} needs the LLM on a CUDA device, not {device} (llm_fp8='emulate' checks FP8 "
                             "numerics anywhere)")
    return liger_rope() if kernels == "liger" else nullcontext()
