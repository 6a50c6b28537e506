"""Evaluate a saved model on MCQA benchmarks (MMAU, MMAR, MMSU, AIR-Bench foundation), from checkpoint to score.

"alarm eval run" answers and scores in one go; "fill" and "score" process responses produced elsewhere.
--protocol paper adds the ALARM repository's own parsing and scoring beside the official and strict scores.
Reference: docs/evaluation.md.
"""
from __future__ import annotations

import os
from pathlib import Path

from alarm.commands import add_command
from alarm.commands.checks import check_backend_installed, check_input_file
from alarm.commands.generate import add_generation_args, generation_kwargs, load_models
from alarm.fileio import atomic_write_json

RUN_DOC = """Answer every item of a benchmark with a saved model, then fill and score the predictions.

Answers are appended after every batch, so rerunning the same command after a crash skips the items
already answered. Several GPUs: one process per GPU with --part i --num-parts N, or torchrun. The
predictions are written in the benchmark's own format and the report beside them.
"""
FILL_DOC = """Parse raw model responses into the key each benchmark's official scoring script reads.

The raw replies are read from --response-key (default model_response); an unparseable reply is recorded
as such, never mapped to an option.
"""
SCORE_DOC = """Score a filled predictions file: the official and strict accuracies side by side (and the paper's).
"""
COMPARE_DOC = """Print the ALARM paper's numbers next to this run's scores (docs/reproduce.md, section 7).

Reads OUT_DIR/alarm_ca/<benchmark>.report.json and OUT_DIR/alarm_e/<benchmark>.report.json as alarm eval run
wrote them (mmau-test-mini, mmau-test, mmar, mmsu); the paper's protocol is the column to compare.
"""


def _add_protocol(p) -> None:
    p.add_argument("--protocol", choices=("official", "paper"), default="official",
                   help="official: the upstream scripts' scores (with strict); paper: also the ALARM repository's "
                        "own parsing into model_prediction and its scripts' scores")


def register(subparsers) -> None:
    from alarm.eval.benchmarks import BENCHMARKS
    from alarm.prompts import PROMPT_STYLES

    names = ", ".join(sorted(BENCHMARKS))
    p = add_command(subparsers, "eval", __doc__)
    sub = p.add_subparsers(dest="eval_command", required=True)

    r = add_command(sub, "run", RUN_DOC)
    r.add_argument("--benchmark", required=True, help=f"one of: {names}")
    r.add_argument("--model", required=True, help="folder written by ALARMModel.save_pretrained")
    r.add_argument("--ensemble", action="append", help="another model folder: ALARM-E (repeatable)")
    r.add_argument("--data", required=True, help="the benchmark's metadata file (JSON list or JSONL)")
    r.add_argument("--audio-root", required=True, help="folder the metadata's audio paths are relative to")
    r.add_argument("--output", required=True, help="predictions in the benchmark's format (.json or .jsonl)")
    r.add_argument("--report", help="report JSON (default: OUTPUT with .report.json)")
    r.add_argument("--prompt-style", choices=PROMPT_STYLES, default="published",
                   help="MCQA prompt: the published ALARM evaluation's (default) or this project's earlier one")
    r.add_argument("--backend", choices=("hf", "vllm"), default="hf",
                   help="LLM generation: transformers generate (default) or vLLM from prompt embeddings")
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--limit", type=int, default=None, help="only the first N items")
    r.add_argument("--part", type=int, default=None, help="this process's part (default: RANK or 0)")
    r.add_argument("--num-parts", type=int, default=None, help="number of parts (default: WORLD_SIZE or 1)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_protocol(r)
    add_generation_args(r)
    r.set_defaults(func=_run)

    s = add_command(sub, "score", SCORE_DOC)
    s.add_argument("--benchmark", required=True, help=f"one of: {names}")
    s.add_argument("--input", required=True, help="JSON list or JSONL of items with the official key filled")
    s.add_argument("--output", required=True, help="report JSON")
    s.add_argument("--scored-items", help="also write the items with their 0/1 'match' (strict), "
                                          "'official_match' and 'paper_match' fields")
    _add_protocol(s)
    s.set_defaults(func=_score)

    f = add_command(sub, "fill", FILL_DOC)
    f.add_argument("--benchmark", required=True, help=f"one of: {names}")
    f.add_argument("--input", required=True)
    f.add_argument("--output", required=True, help="filled items (.jsonl: JSON Lines, else a JSON list)")
    f.add_argument("--response-key", default="model_response", help="where the raw responses are")
    _add_protocol(f)
    f.set_defaults(func=_fill)

    c = add_command(sub, "compare", COMPARE_DOC)
    c.add_argument("out_dir", help="the folder holding alarm_ca/ and alarm_e/ with the reports of alarm eval run")
    c.add_argument("--json", help="also write the rows as JSON here")
    c.set_defaults(func=_compare)


def _score(args) -> int:
    from alarm.eval.benchmarks import get_benchmark, load_items, markdown_table, score
    from alarm.eval.run import write_items

    bench = get_benchmark(args.benchmark)
    check_input_file("--input", args.input)
    items = load_items(args.input, bench)
    report = score(bench, items, args.protocol)
    report["input"] = str(args.input)
    atomic_write_json(args.output, report)
    if args.scored_items:
        write_items(args.scored_items, items)
    print(markdown_table(report))
    return 0


def _fill(args) -> int:
    from collections import Counter

    from alarm.eval.benchmarks import PAPER_PARSE_KEY, fill_item, get_benchmark, load_items
    from alarm.eval.mcqa import OK
    from alarm.eval.run import write_items

    bench = get_benchmark(args.benchmark)
    check_input_file("--input", args.input)
    items = load_items(args.input, bench)
    for i, item in enumerate(items):
        if args.response_key not in item:
            raise ValueError(f"{args.input}: item {i} ({item[bench.id_key]!r}) has no {args.response_key!r} field")
    bad = sum(fill_item(bench, item, item[args.response_key], args.protocol) != OK for item in items)
    write_items(args.output, items)
    print(f"{len(items)} items, {bad} malformed answers (empty {bench.official_key!r}; see answer_status)")
    if args.protocol == "paper":
        rules = Counter(item[PAPER_PARSE_KEY] for item in items)
        print(f"model_prediction (published parsing): {dict(sorted(rules.items()))}")
    return 0


def _compare(args) -> int:
    from alarm.eval.paper import compare, compare_table

    if not os.path.isdir(args.out_dir):
        raise ValueError(f"not a folder: {args.out_dir}")
    rows = compare(args.out_dir)
    print(compare_table(rows))
    if args.json:
        atomic_write_json(args.json, rows)
    return 0


def _part(args) -> tuple[int, int, str]:
    """(part, num_parts, device) from the options or the torchrun environment."""
    num = args.num_parts if args.num_parts is not None else int(os.environ.get("WORLD_SIZE", 1))
    part = args.part if args.part is not None else int(os.environ.get("RANK", 0))
    if num < 1 or not 0 <= part < num:
        raise ValueError(f"--part must be in [0, --num-parts), got part {part} of {num}")
    device = args.device
    if "LOCAL_RANK" in os.environ and device == "cuda":
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return part, num, device


def _run(args) -> int:
    from alarm.eval.benchmarks import get_benchmark, load_items
    from alarm.fileio import file_sha256
    from alarm.eval.run import check_config, finish, generate_part, summary_text, work_dir
    from alarm.prompts import mcqa_system_prompt

    bench = get_benchmark(args.benchmark)
    items = load_items(args.data, bench)
    if args.limit is not None:
        items = items[: args.limit]
    for item in items:
        if not isinstance(item.get("question"), str):
            raise ValueError(f"{args.data}: item {item[bench.id_key]!r} has no question text")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not os.path.isdir(args.audio_root):
        raise ValueError(f"--audio-root is not a folder: {args.audio_root}")
    if args.backend == "vllm":
        check_backend_installed("--backend", "vllm", "vllm")
    part, num_parts, device = _part(args)
    gen_kwargs = generation_kwargs(args)
    system_prompt = mcqa_system_prompt(args.prompt_style)
    models = [os.path.abspath(args.model)] + [os.path.abspath(m) for m in args.ensemble or []]
    config = {"benchmark": bench.name, "models": models, "data": os.path.abspath(args.data),
              "data_sha256": file_sha256(args.data), "limit": args.limit, "prompt_style": args.prompt_style,
              "system_prompt": system_prompt, "generation": gen_kwargs, "backend": args.backend,
              "batch_size": args.batch_size, "num_parts": num_parts}
    folder = work_dir(args.output)
    check_config(folder, config)
    if args.backend == "vllm":  # before CUDA starts: the engine goes to the first visible GPU
        from alarm.eval.vllm_backend import pin_engine_gpu
        device = pin_engine_gpu(device)
    model = load_models(args.model, args.ensemble, device)
    if args.backend == "vllm":
        from alarm.eval.vllm_backend import VLLMGenerator
        model = VLLMGenerator(model)
    new = generate_part(bench, items, model, audio_root=args.audio_root, folder=folder, part=part,
                        num_parts=num_parts, batch_size=args.batch_size, prompt_style=args.prompt_style,
                        system_prompt=system_prompt, gen_kwargs=gen_kwargs, progress=not args.no_progress)
    report_path = args.report or str(Path(args.output).with_suffix(".report.json"))
    report = finish(bench, items, folder, args.output, report_path, args.protocol)
    if report is None:
        print(f"part {part}/{num_parts}: {new} item(s) answered; other parts still running")
        return 0
    print(f"{new} item(s) answered in this run; predictions: {args.output}; report: {report_path}")
    print(summary_text(report))
    return 0
