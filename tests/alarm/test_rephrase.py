"""The self-rephrasing pipeline (alarm/rephrase/): post-processing, the token filter, prompts, sharding and
resume after a crash, the tiny-LM end-to-end run and the ``alarm rephrase`` CLI."""
import argparse
import json
import re

import pytest

from alarm.commands import rephrase as rephrase_cmd
from alarm.data.manifest import read_manifest
from alarm.rephrase import postprocess as pp
from alarm.rephrase import prompts as P
from alarm.rephrase.backends import Generation, HFBackend, Sampling, chat_prompt
from alarm.rephrase.pipeline import Pipeline, PipelineConfig
from alarm.testing_tokenizer import build_tiny_lm, build_tiny_tokenizer


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


# ---- pure post-processing ----------------------------------------------------------------------------

def test_r0_tags_renamed_and_restored():
    r0 = "The description says a dog barks.\n</think>\n\nA dog is barking."
    shown = pp.r0_for_rephraser(r0)
    assert shown == f"{P.R0_THINK_START}\nThe description says a dog barks.\n{P.R0_THINK_END}\n\nA dog is barking."
    assert "<think>" not in shown and "</think>" not in shown
    rewritten = f"{P.R0_THINK_START}\nI hear a dog bark.\n{P.R0_THINK_END}\n\nA dog is barking."
    assert pp.restore_structure(rewritten, r0_closed=True) == "I hear a dog bark.\n</think>\n\nA dog is barking."
    assert pp.restore_structure("I hear a dog bark.", r0_closed=True) is None          # lost its </think>
    assert pp.restore_structure(f"a{P.R0_THINK_END}b{P.R0_THINK_END}c", r0_closed=True) is None


def test_truncated_r0_keeps_no_think_end():
    text, closed = pp.clean_r0("Okay, the user asks about the dog. Let me")
    assert not closed and "</think>" not in text
    # a rephraser that "closes" a cut-off response still yields no </think>
    restored = pp.restore_structure(f"{P.R0_THINK_START}\nOkay, I hear a dog. Let me{P.R0_THINK_END}", False)
    assert restored == "Okay, I hear a dog. Let me"
    # an R0 that closed thinking but was cut off before any answer counts as cut off
    assert pp.clean_r0("thinking...\n</think>\n\n") == ("thinking...", False)
    assert pp.clean_r0("t\n</think>\n\nanswer") == ("t\n</think>\n\nanswer", True)


def test_extract_last_answer():
    out = "<think>draft <answer>no</answer></think>\n<answer>first</answer> then <answer>second</answer>"
    assert pp.extract_answer(pp.visible_answer(out)) == "second"
    assert pp.extract_answer("<answer>unclosed") is None
    assert pp.extract_answer("nothing") is None


def test_token_filter_bounds(tok):
    word = " dog"
    per = pp.token_count(tok, word * 10) / 10
    assert per == int(per)
    n100 = word * int(100 / per)
    assert pp.within_token_range(tok, n100, 100, 612) == (True, 100)
    assert pp.within_token_range(tok, word * int(99 / per), 100, 612)[0] is False
    n612 = word * int(612 / per)
    assert pp.within_token_range(tok, n612, 100, 612) == (True, 612)
    assert pp.within_token_range(tok, n612 + word, 100, 612)[0] is False


def test_prompt_candidates_and_rules():
    text = ("<think>x</think>\n1. What do you hear?\n2) Who is speaking?\n- What do you hear?\n"
            "3. Per the transcript, who?")
    cands = pp.parse_candidates(text, limit=10)
    assert cands == ["What do you hear?", "Who is speaking?", "Per the transcript, who?"]
    assert [pp.prompt_passes_rules(c) for c in cands] == [True, True, False]
    assert pp.checker_says_yes("<think>hmm</think><answer>Yes</answer>")
    assert not pp.checker_says_yes("<answer>no</answer>")


def test_rephrase_prompt_contents():
    text = P.rephrase_user_turn("What is it?", pp.r0_for_rephraser("a\n</think>\n\nb"))
    assert text.count("Rewritten:\n<answer>") == 4  # the four few-shot pairs
    assert "What is it?" in text and text.endswith(f"{P.R0_THINK_START}\na\n{P.R0_THINK_END}\n\nb")
    assert P.r0_user_turn("desc", "q?") == "<start_audio>desc<end_audio>\nq?"


# ---- the pipeline with a scripted backend ----------------------------------------------------------------

LABELS = [
    {"id": "s1", "audio": "s1.wav", "dataset": "iemocap", "duration": 4.2, "schema": "speech",
     "labels": {"transcript": "I missed the train.", "emotion": "sad"}},
    {"id": "e1", "audio": "e1.wav", "dataset": "audioset", "duration": 10.0, "schema": "sound",
     "labels": {"events": [{"label": "dog barking", "start": 0.5, "end": 2.0}]}},
    {"id": "cut", "audio": "c.wav", "dataset": "musiccaps", "duration": 10.0, "schema": "music",
     "labels": {"caption": "Slow jazz.", "genre": "jazz"}},
    {"id": "short", "audio": "sh.wav", "dataset": "iemocap", "duration": 2.0, "schema": "speech",
     "labels": {"transcript": "Hi."}},
    {"id": "q1", "audio": "q1.wav", "dataset": "heysquad", "duration": 3.0, "schema": "speech",
     "spoken_instruction": True, "labels": {"transcript": "What is the capital of France?"}},
    {"id": "long", "audio": "l.wav", "dataset": "x", "duration": 61.0, "schema": "speech",
     "labels": {"transcript": "too long"}},
    {"id": "given", "audio": "g.wav", "dataset": "clotho", "duration": 8.0, "schema": "sound",
     "prompt": "Is it raining?", "labels": {"caption": "Rain on a roof."}},
]
FILLER = " and the recording continues in the same way" * 4


class ScriptedBackend:
    """Stands in for the LLM: answers each stage from the prompt text; counts calls; optional crash."""

    def __init__(self, tokenizer, crash_on_call=None):
        self.tokenizer, self.calls, self.crash_on_call, self.stages = tokenizer, 0, crash_on_call, []

    def generate(self, prompts, *, max_new_tokens, max_thinking_tokens=None, sampling=None, desc=None):
        self.calls += 1
        if self.crash_on_call == self.calls:
            raise RuntimeError("injected crash")
        self.stages.append((desc, max_new_tokens, max_thinking_tokens, len(prompts)))
        return [self._one(p) for p in prompts]

    def _one(self, prompt):
        assert prompt.endswith("<|im_start|>assistant\n<think>\n")
        if "Now rewrite this one." in prompt:
            original = prompt.rsplit("Original:\n", 1)[1].split("<|im_end|>")[0]
            rewritten = original.replace("The description says", "I hear")
            return Generation(f"I will edit it.\n</think>\n\n<answer>{rewritten}</answer>", 50, True, False)
        if "different requests" in prompt:
            return Generation("ok\n</think>\n1. What can you hear?\n2. Describe the transcript.\n3. Is it loud?",
                              20, True, False)
        if "Is this a sensible request" in prompt:
            verdict = "no" if "loud" in prompt else "yes"
            return Generation(f"hm\n</think>\n\n<answer>{verdict}</answer>", 5, True, False)
        if "<start_audio>" in prompt:
            if "Slow jazz" in prompt:  # cut off by the R0 cap: no </think>
                return Generation("The description says slow jazz" + FILLER, 512, False, False)
            if "Hi." in prompt:  # too short after rephrasing
                return Generation("Short.\n</think>\n\nHi.", 8, True, False)
            return Generation("The description says it." + FILLER + "\n</think>\n\nHere is my answer.", 80, True, False)
        return Generation("The capital of France is Paris." + FILLER + "\n</think>\n\nParis.", 60, True, False)


def _labels(tmp_path, rows=LABELS):
    p = tmp_path / "labels.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def _cfg(tmp_path, out="out", **kw):
    base = dict(input=str(_labels(tmp_path)), output_dir=str(tmp_path / out), shard_size=2, min_tokens=20,
                max_tokens=400, sampling=Sampling(do_sample=False))
    return PipelineConfig(**{**base, **kw})


def test_pipeline_scripted(tmp_path, tok):
    backend = ScriptedBackend(tok)
    summary = Pipeline(_cfg(tmp_path, generate_prompts=True, num_candidates=5), backend).run()
    recs = {r.id: r for r in read_manifest(summary.manifest)}
    assert set(recs) == {"s1", "e1", "cut", "q1", "given"}
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["rejected_by_reason"] == {"filter/target_too_short": 1, "prefilter/too_long_audio": 1}
    s1 = recs["s1"]
    assert s1.target.startswith("I hear it.") and s1.target.count("</think>") == 1
    assert s1.target.endswith("</think>\n\nHere is my answer.")
    assert s1.description == "[00:00-00:05] I missed the train.\n(duration: 4.2s, emotion: sad)"
    assert s1.prompt == "What can you hear?" and s1.meta["prompt_source"] == "generated"  # only valid candidate
    assert "</think>" not in recs["cut"].target and recs["cut"].meta["r0_closed"] is False
    assert recs["q1"].meta["rephrased"] is False and recs["q1"].target.startswith("The capital of France")
    assert recs["q1"].prompt == P.SPOKEN_INSTRUCTION_PROMPT
    assert recs["given"].prompt == "Is it raining?"
    assert all(20 <= r.meta["target_tokens"] <= 400 for r in recs.values())
    # R0 is capped at 512 tokens without a budget; the rephrase runs under the 1536-token thinking budget
    assert ("R0", 512, None) in {s[:3] for s in backend.stages}
    assert ("rephrase", 2560, 1536) in {s[:3] for s in backend.stages}


def test_fallback_prompt_is_seeded(tmp_path, tok):
    runs = [Pipeline(_cfg(tmp_path, out=f"o{i}", seed=seed), ScriptedBackend(tok)).run()
            for i, seed in enumerate([3, 3])]
    a, b = (read_manifest(r.manifest) for r in runs)
    assert [r.prompt for r in a] == [r.prompt for r in b]
    assert all(r.prompt in sum(P.FALLBACK_PROMPTS.values(), []) for r in a if r.meta["prompt_source"] == "fallback")


def test_resume_after_crash(tmp_path, tok):
    full = Pipeline(_cfg(tmp_path, out="ref"), ScriptedBackend(tok)).run()
    # 4 shards of 2 items; without prompt generation each shard makes 2 calls (R0, rephrase) except the
    # last one (1 item, spoken instruction: R0 only). Crash on call 4: the second call of shard 1.
    cfg = _cfg(tmp_path, out="crash")
    with pytest.raises(RuntimeError, match="injected crash"):
        Pipeline(cfg, ScriptedBackend(tok, crash_on_call=4)).run()
    shards = tmp_path / "crash" / "shards"
    assert sorted(p.name for p in shards.iterdir()) == ["shard-00000.jsonl", "shard-00000.rejects.jsonl"]
    assert not (tmp_path / "crash" / "manifest.jsonl").exists()
    backend = ScriptedBackend(tok)
    summary = Pipeline(cfg, backend).run()
    assert (summary.shards, summary.skipped_shards, summary.processed_shards) == (4, 1, 3)
    assert backend.calls == 5  # shard 0 was not redone
    assert read_manifest(summary.manifest) == read_manifest(full.manifest)
    again = Pipeline(cfg, ScriptedBackend(tok)).run()
    assert again.skipped_shards == 4 and again.kept == summary.kept
    with pytest.raises(ValueError, match="different settings.*thinking_budget"):
        Pipeline(_cfg(tmp_path, out="crash", thinking_budget=8), ScriptedBackend(tok)).run()


def test_parts_share_an_output_dir(tmp_path, tok):
    full = Pipeline(_cfg(tmp_path, out="ref"), ScriptedBackend(tok)).run()
    cfg = _cfg(tmp_path, out="parts")
    first = Pipeline(cfg, ScriptedBackend(tok)).run(part=1, num_parts=2)
    assert (first.processed_shards, first.pending_shards, first.manifest) == (2, 2, None)
    assert not (tmp_path / "parts" / "manifest.jsonl").exists()
    last = Pipeline(cfg, ScriptedBackend(tok)).run(part=0, num_parts=2)
    assert (last.processed_shards, last.pending_shards) == (2, 0)
    assert read_manifest(last.manifest) == read_manifest(full.manifest)
    with pytest.raises(ValueError, match="part"):
        Pipeline(cfg, ScriptedBackend(tok)).run(part=2, num_parts=2)


# ---- the real tiny LM, end to end ------------------------------------------------------------------------

def test_tiny_lm_end_to_end(tmp_path, tok):
    lm = build_tiny_lm(tok, seed=0)
    backend = HFBackend(lm, tok, batch_size=4)
    assert chat_prompt(tok, "hi").endswith("<|im_start|>assistant\n<think>\n")
    cfg = _cfg(tmp_path, r0_max_tokens=48, thinking_budget=6, rephrase_max_tokens=24, min_tokens=10,
               max_tokens=612, shard_size=4, generate_prompts=True, num_candidates=3, prompt_max_tokens=24,
               checker_max_tokens=12, checker_thinking_budget=4)
    summary = Pipeline(cfg, backend).run()
    recs = read_manifest(summary.manifest)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["items"] == len(LABELS) and stats["kept"] == len(recs)
    # a random LM never writes <answer> tags, so only the spoken instruction (not rephrased) survives
    assert [r.id for r in recs] == ["q1"]
    assert recs[0].meta["r0_closed"] is False and "</think>" not in recs[0].target
    assert recs[0].meta["target_tokens"] >= 10
    assert stats["rejected_by_reason"]["rephrase/no_answer_tags"] == 5


def _cli(argv):
    parser = argparse.ArgumentParser()
    rephrase_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_end_to_end(tmp_path, tok, capsys):
    model_dir = tmp_path / "tiny-lm"
    build_tiny_lm(tok, seed=1).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    labels = _labels(tmp_path)
    assert _cli(["rephrase", "describe", "--input", str(labels), "--output", str(tmp_path / "d.jsonl")]) == 0
    descs = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert descs[1]["description"] == "[00:00-00:02] |dog barking|\n(duration: 10s)"
    argv = ["rephrase", "run", "--input", str(labels), "--output-dir", str(tmp_path / "cli"), "--model",
            str(model_dir), "--dtype", "float32", "--device", "cpu", "--greedy", "--r0-max-tokens", "24",
            "--thinking-budget", "4", "--rephrase-max-tokens", "12", "--min-tokens", "5", "--shard-size", "4"]
    assert _cli(argv) == 0
    assert re.search(r"shards: 2 \(0 already done, 2 processed\); kept 1", capsys.readouterr().out)
    assert [r.id for r in read_manifest(tmp_path / "cli" / "manifest.jsonl")] == ["q1"]
    assert _cli(argv) == 0  # rerun: everything skipped
    assert "(2 already done, 0 processed)" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"bad.jsonl:1: missing field"):
        (tmp_path / "bad.jsonl").write_text('{"id": "x"}\n')
        _cli(["rephrase", "describe", "--input", str(tmp_path / "bad.jsonl"), "--output", str(tmp_path / "o")])


def test_vllm_two_phase_budget_logic(tok):
    """The vLLM backend's budget logic, with vLLM's generate replaced by a scripted token stream."""
    from alarm.generation import budget_suffix_ids, token_id
    from alarm.rephrase.backends import VLLMBackend

    end, eos = token_id(tok, "</think>"), tok.eos_token_id
    scripts = {1: [7] * 400, 2: [7, end, 8, 8, eos]}  # keeps thinking / closes thinking by itself

    def fake_run(prompt_ids, sampling, max_tokens):
        outs = []
        for p in prompt_ids:
            script, done = scripts[p[0]][len(p) - 1:], False
            new = []
            for t in script[:max_tokens]:
                new.append(t)
                if t == eos:
                    done = True
                    break
            outs.append((new, done))
        return outs

    be = object.__new__(VLLMBackend)
    be.think_start, be.think_end, be.suffix = token_id(tok, "<think>"), end, budget_suffix_ids(tok)
    be.special = set(tok.all_special_ids)
    be._run = fake_run
    be.tokenizer = type("T", (), {"encode": lambda self, p, add_special_tokens: [int(p[0])],
                                  "decode": lambda self, ids, skip_special_tokens: tok.decode(ids)})()
    think = "<think>\n"
    outs = be.generate(["1" + think, "2" + think], max_new_tokens=100, max_thinking_tokens=3)
    # cut at the budget inside its thinking: the forced text, then a second pass with its own 100 tokens
    assert outs[0].budget_hit and not outs[0].finished and outs[0].num_tokens == 3 + len(be.suffix) + 100
    assert outs[0].text == tok.decode([7] * 3 + be.suffix + [7] * 100)
    assert not outs[1].budget_hit and outs[1].finished and outs[1].num_tokens == 5
    assert outs[1].text == tok.decode([7, end, 8, 8])
