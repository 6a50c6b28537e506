"""``alarm eval run``: answer every item of a benchmark with a saved model, then fill and score.

Work files live next to the output, in ``<output>.work/``:
- ``config.json``: everything that changes the answers (benchmark, model folders, metadata file hash,
  prompt style, system prompt, budgets, sampling, batch size, number of parts). A rerun with different
  settings is refused;
- ``responses.part-<i>-of-<n>.jsonl``: one line per answered item, appended and fsynced after every batch.
  A rerun skips the items already there (a line torn by a kill is dropped), so an interrupted run resumes
  by running the same command again.

Items are split into ``num_parts`` disjoint parts (item k belongs to part k mod n): one process per GPU,
or ``torchrun`` (RANK/WORLD_SIZE). Inside a part, items are batched longest audio file first. Each batch
samples with its own seed, derived from ``seed`` and the batch's first item id, so a rerun reproduces it.
The process that finds every part complete writes the predictions file and the report.
"""
from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from alarm.fileio import atomic_write_json, atomic_write_jsonl

from .benchmarks import PAPER_KEY, Benchmark, answers_withheld, fill_item, markdown_table, score

CONFIG_NAME = "config.json"


def load_clip(path: str) -> tuple[np.ndarray, int]:
    """The one place that reads benchmark audio: (float32 mono samples, rate in Hz); ValueError if unreadable."""
    from alarm.audio import load_audio
    return load_audio(path)


def write_items(path: str | Path, items: list[dict]) -> None:
    """Write benchmark items atomically: JSON Lines when ``path`` ends in ``.jsonl``, else one JSON list."""
    if str(path).endswith(".jsonl"):
        atomic_write_jsonl(path, items)
    else:
        atomic_write_json(path, items)


def work_dir(output: str | Path) -> Path:
    return Path(str(output) + ".work")




def check_config(folder: Path, config: dict) -> None:
    """Record ``config`` in ``folder`` on the first run; refuse a rerun whose settings differ."""
    path = folder / CONFIG_NAME
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        if changed:
            raise ValueError(f"{folder} holds a run with different settings ({', '.join(changed)}); "
                             "use another --output or delete that folder")
        return
    atomic_write_json(path, config)


def _part_file(folder: Path, part: int, num_parts: int) -> Path:
    return folder / f"responses.part-{part}-of-{num_parts}.jsonl"


def read_responses(folder: Path) -> dict[str, dict]:
    """Every complete response line of every part file: {item id: row}. A torn last line (no newline) is
    ignored; any other unreadable line is a ValueError naming it."""
    done = {}
    for path in sorted(folder.glob("responses.part-*.jsonl")):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").split("\n")[:-1], 1):
            try:
                row = json.loads(line)
                done[str(row["id"])] = row
            except (json.JSONDecodeError, TypeError, KeyError):
                raise ValueError(f"{path}:{lineno}: not a response line; delete {folder} to start over") from None
    return done


def _append_rows(path: Path, rows: list[dict]) -> None:
    """Append rows to a JSONL results file and fsync it. A line torn by a kill is cut off first, so the file
    always ends with a complete line (appending is what lets a killed run keep every finished item)."""
    if path.is_file():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _batch_seed(seed: int, first_id: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(first_id.encode("utf-8"))) % (2 ** 31)


def generate_part(bench: Benchmark, items: list[dict], model, *, audio_root: str, folder: Path, part: int,
                  num_parts: int, batch_size: int, prompt_style: str, system_prompt: Optional[str],
                  gen_kwargs: dict, progress: bool = True,
                  on_batch: Optional[Callable[[int], None]] = None) -> int:
    """Answer the items of ``part`` not answered yet, appending one row per item; returns how many were new.

    ``model``: an ``ALARMModel`` or ``ALARMEnsemble``. ``gen_kwargs`` go to its ``generate`` (a ``seed`` in
    them is replaced per batch). ``on_batch(n_done)`` is called after each batch is written.
    """
    from tqdm.auto import tqdm

    from alarm.prompts import mcqa_prompts

    done = read_responses(folder)
    mine = [it for k, it in enumerate(items) if k % num_parts == part and str(it[bench.id_key]) not in done]
    paths = {str(it[bench.id_key]): os.path.join(audio_root, bench.audio_path(it)) for it in mine}
    for iid, p in paths.items():
        if not os.path.isfile(p):
            raise ValueError(f"item {iid}: audio file not found: {p}")
    mine.sort(key=lambda it: -os.path.getsize(paths[str(it[bench.id_key])]))
    members = getattr(model, "models", [model])
    max_seconds = min(m.config.max_audio_seconds for m in members)
    eos = members[0].tokenizer.eos_token or ""
    out_path = _part_file(folder, part, num_parts)
    bar = tqdm(total=len(mine), unit="item", desc=f"{bench.name} part {part}/{num_parts}", disable=not progress)
    written = 0
    for start in range(0, len(mine), batch_size):
        batch = mine[start:start + batch_size]
        waves, rates, cropped, prompts = [], [], [], []
        for it in batch:
            wave, rate = load_clip(paths[str(it[bench.id_key])])
            limit = int(max_seconds * rate)
            cropped.append(len(wave) > limit)
            waves.append(wave[:limit])
            rates.append(rate)
            prompts.append(mcqa_prompts(it["question"], bench.options(it), prompt_style)[1])
        kw = dict(gen_kwargs)
        if kw.get("do_sample", True):
            kw["seed"] = _batch_seed(int(kw.get("seed", 0)), str(batch[0][bench.id_key]))
        out = model.generate(waves, prompts, sampling_rate=rates, system_prompt=system_prompt, **kw)
        gen = out["generation"]
        rows = []
        for j, it in enumerate(batch):
            text = out["text"][j]
            if bool(gen.finished[j]) and eos and text.endswith(eos):
                text = text[: -len(eos)]
            rows.append({"id": str(it[bench.id_key]), "response": text, "num_tokens": int(gen.lengths[j]),
                         "thinking_tokens": int(gen.thinking_tokens[j]), "budget_hit": bool(gen.budget_hit[j]),
                         "finished": bool(gen.finished[j]), "cropped": cropped[j]})
        _append_rows(out_path, rows)
        written += len(rows)
        bar.update(len(rows))
        if on_batch is not None:
            on_batch(written)
    bar.close()
    return written


def finish(bench: Benchmark, items: list[dict], folder: Path, output: str | Path,
           report_path: str | Path, protocol: str = "official") -> dict | None:
    """When every item has a response: fill the official keys (and ``model_prediction`` with ``protocol=
    "paper"``), write ``output`` and the report (returned); otherwise None (another part is still running).
    Items without gold answers (withheld) are filled, not scored: the report then says ``answers_withheld``."""
    done = read_responses(folder)
    if any(str(it[bench.id_key]) not in done for it in items):
        return None
    stats = {"budget_hit": 0, "unfinished": 0, "cropped_audio": 0}
    for it in items:
        row = done[str(it[bench.id_key])]
        fill_item(bench, it, row["response"], protocol)
        stats["budget_hit"] += row["budget_hit"]
        stats["unfinished"] += not row["finished"]
        stats["cropped_audio"] += row["cropped"]
    if answers_withheld(bench, items):
        report = {"benchmark": bench.name, "items": len(items), "answers_withheld": True,
                  "prediction_keys": [bench.official_key] + ([PAPER_KEY] if protocol == "paper" else [])}
    else:
        report = score(bench, items, protocol)
    report["generation"] = stats
    report["answer_status"] = _count(it["answer_status"] for it in items)
    write_items(output, items)
    atomic_write_json(report_path, report)
    return report


def _count(values) -> dict:
    out: dict = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def summary_text(report: dict) -> str:
    """The report's table plus the generation and parsing counts."""
    g = report["generation"]
    table = (f"{report['items']} {report['benchmark']} items without gold answers (withheld): predictions under "
             f"{', '.join(report['prediction_keys'])}, not scored; submit them to the benchmark's evaluation server"
             if report.get("answers_withheld") else markdown_table(report))
    return (table + f"\ngeneration: {g['budget_hit']} hit the thinking budget, {g['unfinished']} "
            f"cut by the answer budget, {g['cropped_audio']} clips cropped to the model's limit\n"
            f"answer parsing: {report['answer_status']}")
