"""The vLLM backend's use of the two-pass budget protocol, with vLLM replaced by a scripted stand-in module."""
import sys
import types

import pytest
import torch

from alarm.generation import budget_suffix_ids, token_id
from alarm.testing_tokenizer import build_tiny_tokenizer


class _Params:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class _FakeLLM:
    """Replays SCRIPTS[marker] where the marker is the prompt's first embedding value; a request whose prompt
    is longer than the original continues the script after the tokens it already holds."""

    instances = []

    def __init__(self, model, dtype, enable_prompt_embeds, **kw):
        assert enable_prompt_embeds
        self.kw, self.calls = kw, []
        _FakeLLM.instances.append(self)

    def generate(self, requests, params, use_tqdm):
        self.calls.append((params, [r["prompt_embeds"].shape[0] for r in requests]))
        outs = []
        for r in requests:
            e = r["prompt_embeds"]
            marker = int(e[0, 0])
            script, held = SCRIPTS[marker], e.shape[0] - PROMPT_LEN[marker]
            new, reason = [], "length"
            for t in script[held:][: params.max_tokens]:
                new.append(t)
                if t == TOK.eos_token_id:
                    reason = "stop"
                    break
            outs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=new, finish_reason=reason)]))
        return outs


TOK = build_tiny_tokenizer()
END = token_id(TOK, "</think>")
SCRIPTS = {1: [7] * 400, 2: [7, END, 8, TOK.eos_token_id]}
PROMPT_LEN = {1: 5, 2: 3}


class _StubModel:
    """Just what the backend needs from an ALARM model: config, tokenizer, LLM embedding, prompt_embeddings."""

    def __init__(self):
        self.config = types.SimpleNamespace(llm_path="some/llm", llm_dtype="float32", max_audio_seconds=60.0)
        self.tokenizer = TOK
        emb = torch.nn.Embedding(len(TOK), 4)
        self.llm = types.SimpleNamespace(embed=lambda: emb)
        self.seen_system = None

    def prompt_embeddings(self, audio, sampling_rate, prompts, system_prompt=None):
        self.seen_system = system_prompt
        x = torch.zeros(2, 5, 4)
        x[0, 0, 0], x[1, 2, 0] = 1, 2  # row 1 is left-padded by two positions
        mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
        return dict(inputs_embeds=x, attention_mask=mask)


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = _FakeLLM, _Params
    monkeypatch.setitem(sys.modules, "vllm", module)
    _FakeLLM.instances.clear()
    return module


def test_vllm_two_passes(fake_vllm):
    from alarm.eval.vllm_backend import VLLMGenerator

    gen = VLLMGenerator(_StubModel())
    llm = _FakeLLM.instances[0]
    assert llm.kw["enable_prefix_caching"] and llm.kw["max_model_len"] == 16384
    out = gen.generate(["a", "b"], ["q", "q"], max_thinking_tokens=3, max_new_tokens=4, seed=5)
    suffix = budget_suffix_ids(TOK)
    (p1, lens1), (p2, lens2) = llm.calls
    assert (p1.max_tokens, p2.max_tokens) == (3, 4) and p1.seed == p2.seed == 5 and p1.temperature == 0.6
    # both rows are cut by pass 1; only the one still thinking gets the forced text before pass 2
    assert lens1 == [5, 3] and lens2 == [5 + 3 + len(suffix), 3 + 3]
    g = out["generation"]
    assert g.sequences[0, : g.lengths[0]].tolist() == [7, 7, 7] + suffix + [7] * 4
    assert g.sequences[1, : g.lengths[1]].tolist() == SCRIPTS[2]
    assert g.budget_hit.tolist() == [True, False] and g.finished.tolist() == [False, True]
    gen.generate(["a", "b"], ["q", "q"], max_thinking_tokens=None, max_new_tokens=2, do_sample=False)
    assert llm.calls[-1][0].temperature == 0.0 and llm.calls[-1][0].max_tokens == 2


def test_vllm_missing_or_unsuitable(monkeypatch, fake_vllm):
    from alarm.eval.vllm_backend import VLLMGenerator

    stub = _StubModel()
    stub.config.llm_path = None
    with pytest.raises(ValueError, match="llm_path"):
        VLLMGenerator(stub)
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ValueError, match="pip install vllm"):  # MissingExtraError: one line from the CLI
        VLLMGenerator(_StubModel())


@pytest.mark.parametrize("device, inherited, expected, visible", [
    ("cuda:1", None, "cuda:0", "1"),                       # torchrun rank 1, nothing inherited
    ("cuda:0", None, "cuda:0", "0"),
    ("cuda:1", "4,6", "cuda:0", "6"),                      # the rank's entry of an inherited list
    ("cuda:0", " GPU-aa , GPU-bb", "cuda:0", "GPU-aa"),    # UUIDs pass through
    ("cuda", "4,6", "cuda", "4,6"),                        # no index: the first visible GPU already
    ("cpu", None, "cpu", None),
])
def test_pin_engine_gpu(device, inherited, expected, visible):
    from alarm.eval.vllm_backend import pin_engine_gpu

    env = {} if inherited is None else {"CUDA_VISIBLE_DEVICES": inherited}
    assert pin_engine_gpu(device, env) == expected
    assert env.get("CUDA_VISIBLE_DEVICES") == visible
    assert pin_engine_gpu(expected, env) == expected and env.get("CUDA_VISIBLE_DEVICES") == visible  # idempotent


def test_pin_engine_gpu_errors(monkeypatch):
    from alarm.eval.vllm_backend import pin_engine_gpu

    env = {"CUDA_VISIBLE_DEVICES": "4,6"}
    with pytest.raises(ValueError, match=r"--device cuda:2: CUDA_VISIBLE_DEVICES='4,6' lists 2 GPU\(s\)"):
        pin_engine_gpu("cuda:2", env)
    with pytest.raises(ValueError, match="lists 0 GPU"):
        pin_engine_gpu("cuda:0", {"CUDA_VISIBLE_DEVICES": ""})
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="before CUDA starts"):
        pin_engine_gpu("cuda:1", env)
    assert env == {"CUDA_VISIBLE_DEVICES": "4,6"}  # nothing changed
    assert pin_engine_gpu("cuda:0", env) == "cuda:0" and env == {"CUDA_VISIBLE_DEVICES": "4,6"}
