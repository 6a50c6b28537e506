"""``alarm eval run`` end to end on CPU: a tiny random ALARM checkpoint, a tiny MMAU-format benchmark whose audio is
written as WAV files, a kill after the first batch, a resume, a refused change of settings, and two parts."""
import json
import os
import wave

import numpy as np
import pytest

import alarm.eval.run as run_mod
import torch

from alarm.cli import main
from alarm.model import ALARMConfig, ALARMEnsemble, ALARMModel
from alarm.model.splice import ASSISTANT_SUFFIX, USER_PREFIX
from alarm.model.tiny import synthetic_audio, tiny_model
from alarm.prompts import SYSTEM_PROMPT, ensemble_header, ensemble_intro, system_turn

pytestmark = pytest.mark.usefixtures("one_thread")

CHOICES = ["dog", "cat", "bird"]


def _write_wav(path, samples, rate, channels=1):
    data = np.clip(np.repeat(samples[:, None], channels, 1), -1, 1)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((data * 32767).astype("<i2").tobytes())


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalrun")
    first = tiny_model("CA")
    first.save_pretrained(str(root / "ckpt"))
    ALARMModel(ALARMConfig.tiny("sum", n_encoders=1, init_seed=7), tokenizer=first.tokenizer,
               llm=first.llm).save_pretrained(str(root / "ckpt-r"))
    (root / "audio" / "test-mini-audios").mkdir(parents=True)
    items = []
    for i, (seconds, rate) in enumerate([(0.6, 16000), (0.3, 16000), (0.5, 8000), (0.4, 16000)]):
        clip = synthetic_audio([seconds], rate=rate, seed=i)[0]
        _write_wav(root / "audio" / "test-mini-audios" / f"c{i}.wav", clip, rate, channels=1 + (i == 2))
        items.append({"id": f"q{i}", "audio_id": f"./test-mini-audios/c{i}.wav", "question": f"What is sound {i}?",
                      "choices": CHOICES, "answer": CHOICES[i % 3], "task": "sound", "difficulty": "easy",
                      "category": "Perception", "sub-category": "Events"})
    (root / "meta.json").write_text(json.dumps(items))
    return root


def _args(root, out, *extra):
    return ["eval", "run", "--benchmark", "mmau", "--model", str(root / "ckpt"), "--data", str(root / "meta.json"),
            "--audio-root", str(root / "audio"), "--output", str(out), "--max-thinking-tokens", "3",
            "--max-new-tokens", "4", "--batch-size", "2", "--no-progress", *extra]


def _responses(out):
    """{id: response} of the complete lines of every part file; each item must be answered once."""
    folder = run_mod.work_dir(out)
    complete = sum(text.count("\n") for text in (p.read_text() for p in folder.glob("responses.*.jsonl")))
    rows = run_mod.read_responses(folder)
    assert len(rows) == complete
    return {k: v["response"] for k, v in rows.items()}


def test_run_kill_resume_and_refuse_changes(bench, tmp_path, monkeypatch, capsys):
    full = tmp_path / "full" / "pred.json"
    assert main(_args(bench, full)) == 0
    report = json.loads((tmp_path / "full" / "pred.report.json").read_text())
    assert report["items"] == 4 and report["official"]["total"]["count"] == 4
    assert report["strict"]["total"]["count"] == 4 and report["generation"]["budget_hit"] == 4
    predictions = json.loads(full.read_text())
    assert [p["id"] for p in predictions] == ["q0", "q1", "q2", "q3"]
    assert all("model_output" in p and "model_response" in p for p in predictions)
    out = capsys.readouterr().out
    assert "| **total** | mmau |" in out and "official (%) | strict (%)" in out

    # killed after the first batch was written, while a second write was torn half-way
    killed = tmp_path / "killed" / "pred.json"
    original, calls = run_mod._append_rows, []

    def append_then_die(path, rows):
        calls.append(len(rows))
        original(path, rows)
        with open(path, "a") as f:
            f.write('{"id": "q9", "respo')
        raise KeyboardInterrupt

    monkeypatch.setattr(run_mod, "_append_rows", append_then_die)
    assert main(_args(bench, killed)) == 130  # the CLI reports the interruption and exits 130
    monkeypatch.setattr(run_mod, "_append_rows", original)
    assert calls == [2] and not killed.exists() and len(_responses(killed)) == 2
    done_before = _responses(killed)

    generated = []
    real_generate = run_mod.generate_part

    def counting(*a, **kw):
        n = real_generate(*a, **kw)
        generated.append(n)
        return n

    monkeypatch.setattr(run_mod, "generate_part", counting)
    capsys.readouterr()
    assert main(_args(bench, killed)) == 0
    assert generated == [2]  # only the two unanswered items
    assert "2 item(s) answered in this run" in capsys.readouterr().out
    resumed = _responses(killed)
    assert {k: resumed[k] for k in done_before} == done_before
    assert resumed == _responses(full)  # same batches, same per-batch seeds: the same sampled answers
    assert json.loads(killed.read_text()) == predictions

    # a rerun with other settings into the same output is refused, nothing is lost
    rc = main(_args(bench, killed, "--seed", "1"))
    assert rc == 2 and "different settings (generation)" in capsys.readouterr().err
    assert _responses(killed) == resumed


def test_run_in_two_parts_greedy_ensemble(bench, tmp_path, capsys):
    out = tmp_path / "parts.jsonl"
    ens = ["--ensemble", str(bench / "ckpt-r"), "--greedy"]
    assert main(_args(bench, out, *ens, "--part", "0", "--num-parts", "2")) == 0
    assert "other parts still running" in capsys.readouterr().out and not out.exists()
    assert sorted(_responses(out)) == ["q0", "q2"]  # item k belongs to part k mod 2
    assert main(_args(bench, out, *ens, "--part", "1", "--num-parts", "2")) == 0
    assert sorted(_responses(out)) == ["q0", "q1", "q2", "q3"]
    lines = out.read_text().splitlines()  # .jsonl output: JSON Lines
    assert [json.loads(line)["id"] for line in lines] == ["q0", "q1", "q2", "q3"]
    assert main(_args(bench, out, *ens, "--part", "2", "--num-parts", "2")) == 2
    assert "--part must be in" in capsys.readouterr().err
    with pytest.raises(ValueError, match="audio file not found"):
        main(["-v", *_args(bench, tmp_path / "x.json", "--audio-root", str(tmp_path))])


def _ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


def test_prompt_layouts_follow_the_published_evaluation(bench):
    """The text positions of the generation inputs hold exactly the published pieces, each tokenized on its own:
    single model: system turn + user start | audio | prompt + assistant start; ALARM-E: system turn, user start,
    introduction, then per model its header | audio | newline, then the prompt."""
    first = ALARMModel.from_pretrained(str(bench / "ckpt"))
    second = ALARMModel.from_pretrained(str(bench / "ckpt-r"), tokenizer=first.tokenizer, llm=first.llm)
    tok, embed = first.tokenizer, first.llm.embed()
    clip = synthetic_audio([0.4], seed=9)[0]

    def text(ids):
        return embed(torch.tensor(ids)).to(first.llm.dtype)

    row = first.prompt_embeddings([clip], 16000, ["Q?"])["inputs_embeds"][0]
    audio = first.audio_embeddings([clip], 16000)[0]
    head, tail = _ids(tok, system_turn(SYSTEM_PROMPT) + USER_PREFIX), _ids(tok, "Q?" + ASSISTANT_SUFFIX)
    assert row.shape[0] == len(head) + audio.shape[0] + 2 + len(tail)
    assert torch.equal(row[: len(head)], text(head)) and torch.equal(row[-len(tail):], text(tail))
    assert torch.equal(first.prompt_embeddings([clip], 16000, ["Q?"], system_prompt=None)["inputs_embeds"][0],
                       row[len(_ids(tok, system_turn(SYSTEM_PROMPT))):])

    row = ALARMEnsemble([first, second]).prompt_embeddings([clip], 16000, ["Q?"])["inputs_embeds"][0]
    pieces = [_ids(tok, system_turn(SYSTEM_PROMPT)) + _ids(tok, USER_PREFIX) + _ids(tok, ensemble_intro(2))]
    pos = 0
    for i, m in enumerate([first, second], start=1):
        pieces[-1] += _ids(tok, ensemble_header(i, 2))
        n = len(pieces[-1])
        assert torch.equal(row[pos: pos + n], text(pieces[-1]))
        a = m.audio_embeddings([clip], 16000)[0]
        pos += n
        assert torch.equal(row[pos], m.audio.audio_start.to(row.dtype))
        assert torch.allclose(row[pos + 1: pos + 1 + a.shape[0]], a.to(row.dtype))
        pos += a.shape[0] + 2
        pieces.append(_ids(tok, "\n"))
    pieces[-1] += _ids(tok, "Q?" + ASSISTANT_SUFFIX)
    assert torch.equal(row[pos:], text(pieces[-1]))


def test_generate_cli_options(bench, capsys):
    wav = str(bench / "audio" / "test-mini-audios" / "c2.wav")  # 8 kHz stereo
    base = ["generate", "--model", str(bench / "ckpt"), "--audio", wav, "--prompt", "What?"]
    assert main([*base, "--ensemble", str(bench / "ckpt-r"), "--greedy", "--max-thinking-tokens", "-1",
                 "--max-new-tokens", "3", "--no-system-prompt"]) == 0
    greedy = capsys.readouterr().out
    assert main([*base, "--ensemble", str(bench / "ckpt-r"), "--greedy", "--max-thinking-tokens", "-1",
                 "--max-new-tokens", "3", "--no-system-prompt"]) == 0
    assert capsys.readouterr().out == greedy and greedy.strip()
    assert main([*base, "--max-thinking-tokens", "-2"]) == 2
    assert "--max-thinking-tokens must be >= -1" in capsys.readouterr().err


def test_vllm_under_torchrun_one_gpu_per_rank(bench, tmp_path, monkeypatch, capsys):
    """Two torchrun ranks with --backend vllm: before the model is loaded and before the engine is built, each
    rank sees only its own GPU (the LOCAL_RANK-th of the inherited CUDA_VISIBLE_DEVICES) and loads on cuda:0."""
    import importlib.machinery
    import sys
    import types

    import alarm.commands.eval as eval_cmd

    seen, eos_id = [], []

    class FakeLLM:  # answers every request with EOS at once
        def __init__(self, model, dtype, enable_prompt_embeds, **kw):
            seen.append(("engine", os.environ.get("CUDA_VISIBLE_DEVICES")))

        def generate(self, requests, params, use_tqdm):
            eos = types.SimpleNamespace(token_ids=eos_id, finish_reason="stop")
            return [types.SimpleNamespace(outputs=[eos]) for _ in requests]

    fake = types.ModuleType("vllm")
    fake.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    fake.LLM, fake.SamplingParams = FakeLLM, lambda **kw: types.SimpleNamespace(**kw)
    monkeypatch.setitem(sys.modules, "vllm", fake)

    def load_on_cpu(model, ensemble, device):  # records where the command would load, loads on the CPU
        seen.append(("model", device, os.environ.get("CUDA_VISIBLE_DEVICES")))
        loaded = ALARMModel.from_pretrained(model)
        loaded.config.llm_path = "stand-in/llm"
        eos_id[:] = [loaded.tokenizer.eos_token_id]
        return loaded

    monkeypatch.setattr(eval_cmd, "load_models", load_on_cpu)
    out = tmp_path / "vllm.json"
    for rank in (1, 0):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # what torchrun's parent was given
        for name, value in (("RANK", rank), ("LOCAL_RANK", rank), ("WORLD_SIZE", 2)):
            monkeypatch.setenv(name, str(value))
        seen.clear()
        assert main(_args(bench, out, "--backend", "vllm", "--device", "cuda", "--greedy", "--protocol", "paper")) == 0
        gpu = "3,5".split(",")[rank]
        assert seen == [("model", "cuda:0", gpu), ("engine", gpu)]
    assert sorted(_responses(out)) == ["q0", "q1", "q2", "q3"]
    report = json.loads((tmp_path / "vllm.report.json").read_text())
    assert report["strict"]["total"]["count"] == report["paper"]["total"]["count"] == 4
    assert report["paper"]["parse"] == {"not_an_integer_option_0": 4}  # EOS at once: no answer, option 0
    capsys.readouterr()



def test_withheld_answers_are_predicted_not_scored(bench, tmp_path, capsys):
    """MMAU test publishes no answers (its server scores them): run and fill write the predictions, score refuses,
    and a file where only some items lack the answer is still malformed."""
    items = json.loads((bench / "meta.json").read_text())
    withheld = [{k: v for k, v in it.items() if k != "answer"} for it in items]
    (tmp_path / "test.json").write_text(json.dumps(withheld))
    out = tmp_path / "pred.json"
    args = _args(bench, out, "--protocol", "paper")
    args[args.index("--data") + 1] = str(tmp_path / "test.json")
    assert main(args) == 0
    assert "4 mmau items without gold answers (withheld)" in capsys.readouterr().out
    report = json.loads((tmp_path / "pred.report.json").read_text())
    assert report["answers_withheld"] and report["prediction_keys"] == ["model_output", "model_prediction"]
    predictions = json.loads(out.read_text())
    assert [p["id"] for p in predictions] == ["q0", "q1", "q2", "q3"]
    assert all("answer" not in p and p["model_prediction"] in CHOICES for p in predictions)  # paper parsing: an option
    assert main(["eval", "score", "--benchmark", "mmau", "--input", str(out), "--output", str(tmp_path / "r")]) == 2
    assert "answers withheld, as for MMAU test" in capsys.readouterr().err
    raw = [{**it, "model_response": "<answer>1</answer>"} for it in withheld]
    (tmp_path / "raw.json").write_text(json.dumps(raw))
    assert main(["eval", "fill", "--benchmark", "mmau", "--input", str(tmp_path / "raw.json"), "--output",
                 str(tmp_path / "filled.json")]) == 0
    assert [p["model_output"] for p in json.loads((tmp_path / "filled.json").read_text())] == [CHOICES[1]] * 4
    (tmp_path / "mixed.json").write_text(json.dumps(withheld[:2] + items[2:]))
    assert main(["eval", "fill", "--benchmark", "mmau", "--input", str(tmp_path / "mixed.json"), "--output",
                 str(tmp_path / "m.json")]) == 2
    assert "item 0: missing field(s) ['answer']" in capsys.readouterr().err
