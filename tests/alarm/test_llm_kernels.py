"""The frozen LLM's optional fast paths (alarm.model.llm_kernels): what each option swaps in, that the defaults
change nothing, and the numerics that can run on a CPU (fp32): Liger's RoPE under the Triton interpreter, regional
torch.compile, torchao's float8 casts in emulation. Liger's RMSNorm and SwiGLU kernels do not run under the
interpreter: their numerics are checked on a GPU (bench/gpu_check.sh, stage llm_kernels)."""
import dataclasses
import sys

import pytest
import torch
from torch import nn
from transformers.models.qwen3 import modeling_qwen3

from alarm.model import ALARMConfig, ALARMModel
from alarm.model.llm import FrozenLLM
from alarm.extras import MissingExtraError
from alarm.model.llm_kernels import _require, apply_liger, liger_rope
from alarm.model.tiny import synthetic_audio

CFG = ALARMConfig.tiny("CA")


def _llm(**options) -> FrozenLLM:
    return FrozenLLM(dataclasses.replace(CFG, **options), vocab_size=384)


def _loss(model: ALARMModel, backward: bool = False) -> torch.Tensor:
    clips = synthetic_audio([1.0, 1.6], seed=3)
    out = model(clips, 16000, ["what is it?", "and this?"], ["a tone", "two tones and noise"], layout="packed")
    if backward:
        out.loss.backward()
    return out.loss


def test_defaults_keep_the_stock_modules():
    llm = _llm()
    layers = llm.model.model.layers
    assert all(type(layer.mlp) is modeling_qwen3.Qwen3MLP for layer in layers)
    norms = [m for m in llm.model.modules() if "RMSNorm" in type(m).__name__]
    assert norms and all(type(m) is modeling_qwen3.Qwen3RMSNorm for m in norms)
    assert all(type(m) is nn.Linear for m in llm.model.modules() if "Linear" in type(m).__name__)
    assert all(layer._compiled_call_impl is None for layer in layers)
    with pytest.raises(ValueError, match="llm_kernels must be one of"):
        dataclasses.replace(CFG, llm_kernels="fused")
    with pytest.raises(ValueError, match="llm_fp8 must be one of"):
        dataclasses.replace(CFG, llm_fp8="fp8")
    # YAML 1.1 reads an unquoted `llm_fp8: on` / `off` as a boolean
    assert dataclasses.replace(CFG, llm_fp8=True).llm_fp8 == "on"
    assert dataclasses.replace(CFG, llm_fp8=False).llm_fp8 == "off"


def test_liger_swaps_this_models_modules_only_and_shares_their_parameters():
    from liger_kernel.transformers.rms_norm import LigerRMSNorm
    from liger_kernel.transformers.rope import liger_rotary_pos_emb
    from liger_kernel.transformers.swiglu import LigerSwiGLUMLP

    plain = _llm()
    llm = _llm()
    before = {n: p for n, p in llm.model.named_parameters()}
    apply_liger(llm.model)
    after = dict(llm.model.named_parameters())
    assert after.keys() == before.keys() and all(after[n] is before[n] for n in before)  # nothing copied
    layers = llm.model.model.layers
    assert all(isinstance(layer.mlp, LigerSwiGLUMLP) for layer in layers)
    norms = [layer.input_layernorm for layer in layers] + [layer.self_attn.q_norm for layer in layers]
    assert all(isinstance(n, LigerRMSNorm) and n.variance_epsilon == CFG.llm_config.get("rms_norm_eps", 1e-6)
               for n in norms) and isinstance(llm.model.model.norm, LigerRMSNorm)
    assert all(type(layer.mlp) is modeling_qwen3.Qwen3MLP for layer in plain.model.model.layers)  # other models: stock
    stock = modeling_qwen3.apply_rotary_pos_emb
    liger_llm = _llm(llm_kernels="liger")  # through the config: the same swap, RoPE only while it runs
    assert isinstance(liger_llm.model.model.layers[0].mlp, LigerSwiGLUMLP)
    with liger_llm.attention("alarm_packed"):
        assert modeling_qwen3.apply_rotary_pos_emb is liger_rotary_pos_emb
    assert modeling_qwen3.apply_rotary_pos_emb is stock
    with plain.attention("alarm_packed"):
        assert modeling_qwen3.apply_rotary_pos_emb is stock


def test_liger_rope_matches_a_float64_rotation_at_packed_positions():
    """Liger's RoPE kernel (Triton interpreter on CPU) against the rotation written out in float64, with position
    ids restarting per packed sequence, as the packed LLM forward passes them; gradients too."""
    conf = _llm().model.config
    rotary = modeling_qwen3.Qwen3RotaryEmbedding(conf)
    pos = torch.cat([torch.arange(7), torch.arange(5)])[None]
    q = torch.randn(1, 2, 12, 32, requires_grad=True)
    k = torch.randn(1, 1, 12, 32, requires_grad=True)
    cos, sin = rotary(q, pos)
    with liger_rope():  # Liger's kernel writes its result into its inputs: give it the copies attention would
        q_rot, k_rot = modeling_qwen3.apply_rotary_pos_emb(q.clone(), k.clone(), cos, sin)
    gq, gk = torch.randn_like(q_rot), torch.randn_like(k_rot)
    dq, dk = torch.autograd.grad((q_rot, k_rot), (q, k), (gq.clone(), gk.clone()))  # (its backward too)

    def rotate(x, c, s):
        half = x.shape[-1] // 2
        rot = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * c[:, None] + rot * s[:, None]

    c64, s64 = cos.double(), sin.double()
    q64, k64 = q.detach().double().requires_grad_(), k.detach().double().requires_grad_()
    ref_q, ref_k = rotate(q64, c64, s64), rotate(k64, c64, s64)
    ref_dq, ref_dk = torch.autograd.grad((ref_q, ref_k), (q64, k64), (gq.double(), gk.double()))
    for got, ref in ((q_rot, ref_q), (k_rot, ref_k), (dq, ref_dq), (dk, ref_dk)):
        torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=1e-5)
    assert (q_rot - q).abs().max() > 0.1  # it did rotate


def test_regional_compile_matches_eager_in_fp32():
    torch.manual_seed(0)
    eager = ALARMModel(CFG).train()
    compiled = ALARMModel(dataclasses.replace(CFG, llm_kernels="compile")).train()
    assert all(layer._compiled_call_impl is not None for layer in compiled.llm.model.model.layers)
    loss_e, loss_c = _loss(eager, backward=True), _loss(compiled, backward=True)
    torch.testing.assert_close(loss_c, loss_e, atol=1e-5, rtol=1e-5)
    grads_e, grads_c = eager.trainable_parameters(), compiled.trainable_parameters()
    for name, p in grads_e.items():
        torch.testing.assert_close(grads_c[name].grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_fp8_linear_layers_compute_the_float8_casts():
    """torchao's Float8Linear (emulated) against the float8 casts written out: tensorwise scale 448 / amax for the
    e4m3 input and weight, the product of the dequantized values in float64; the loss of the tiny model moves
    by a float8-sized amount, not more."""
    float8 = pytest.importorskip("torchao.float8.float8_linear", reason="the fp8 extra (torchao) is not installed")
    llm = _llm(llm_fp8="emulate")
    converted = [m for m in llm.model.modules() if isinstance(m, float8.Float8Linear)]
    assert len(converted) == 7 * len(llm.model.model.layers)  # q, k, v, o, gate, up, down of every layer
    assert not isinstance(llm.model.get_output_embeddings(), float8.Float8Linear)
    lin = llm.model.model.layers[0].mlp.down_proj
    x = torch.randn(9, lin.in_features)

    def cast(t):
        scale = torch.finfo(torch.float8_e4m3fn).max / t.abs().max().double()
        return (t.double() * scale).to(torch.float8_e4m3fn).double() / scale

    expect = cast(x) @ cast(lin.weight.detach()).T
    torch.testing.assert_close(lin(x).double(), expect, atol=1e-5, rtol=1e-5)
    assert (lin(x).double() - x.double() @ lin.weight.detach().double().T).abs().max() > 1e-4  # not the fp32 product
    torch.manual_seed(0)
    plain = ALARMModel(CFG).train()
    fp8 = ALARMModel(dataclasses.replace(CFG, llm_fp8="emulate")).train()
    loss_plain, loss_fp8 = float(_loss(plain)), float(_loss(fp8, backward=True))
    assert 0 < abs(loss_fp8 - loss_plain) < 0.05 * abs(loss_plain)
    assert all(p.grad is not None for p in fp8.trainable_parameters().values())


def test_a_missing_package_names_what_to_install(monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] == "liger_kernel"] + ["liger_kernel"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    with pytest.raises(MissingExtraError, match=r"llm_kernels='liger' needs the liger-kernel package \(pip install "
                                                r"'alarm-toolkit\[liger\]', or pip install liger-kernel\)"):
        _require("liger_kernel.transformers.rms_norm", "llm_kernels='liger'")
    with pytest.raises(ValueError, match="liger-kernel"):  # a ValueError too: the CLI reports it in one line
        _llm(llm_kernels="liger")


def test_cuda_only_options_are_refused_on_a_cpu_model_in_one_line(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    llm = _llm(llm_kernels="liger")
    with pytest.raises(ValueError, match="llm_kernels='liger' needs the LLM on a CUDA device, not cpu"):
        with llm.attention("alarm_packed"):
            pass
