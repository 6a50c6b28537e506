"""``alarm eval``: score MCQA benchmark predictions (MMAU, MMSU, MMAR, AIR-Bench foundation).

``alarm eval fill`` turns raw model responses (``--response-key``, default ``model_output``) into
``model_prediction`` option texts; ``alarm eval score`` scores a file whose ``model_prediction`` is filled.
"""
from __future__ import annotations

import json

from alarm.commands.checks import check_input_file
from alarm.fileio import atomic_write_json


def register(subparsers) -> None:
    from alarm.eval.benchmarks import BENCHMARKS

    p = subparsers.add_parser("eval", help="score MCQA benchmark predictions")
    sub = p.add_subparsers(dest="eval_command", required=True)
    s = sub.add_parser("score", help="score a predictions file in the benchmark's own format")
    s.add_argument("--benchmark", required=True, help=f"one of: {', '.join(sorted(BENCHMARKS))}")
    s.add_argument("--input", required=True, help="JSON list or JSONL of items with model_prediction filled")
    s.add_argument("--output", required=True, help="report JSON (total, per task/category/sub-category)")
    s.add_argument("--scored-items", help="optionally also write the items with a 0/1 'match' field")
    s.set_defaults(func=_score)
    f = sub.add_parser("fill", help="parse raw responses into model_prediction (option text)")
    f.add_argument("--benchmark", required=True)
    f.add_argument("--input", required=True)
    f.add_argument("--output", required=True, help="JSON list with model_prediction and answer_status")
    f.add_argument("--response-key", default="model_output")
    f.set_defaults(func=_fill)


def _write_json(path, obj) -> None:
    atomic_write_json(path, obj)


def _score(args) -> int:
    from alarm.eval.benchmarks import get_benchmark, load_items, markdown_table, score

    bench = get_benchmark(args.benchmark)
    check_input_file("--input", args.input)
    items = load_items(args.input, bench)
    report = score(bench, items)
    report["input"] = str(args.input)
    _write_json(args.output, report)
    if args.scored_items:
        _write_json(args.scored_items, items)
    print(markdown_table(report))
    if report["missing_predictions"]:
        print(f"\n{report['missing_predictions']} item(s) had no model_prediction (counted as wrong)")
    return 0


def _fill(args) -> int:
    from alarm.eval.benchmarks import PREDICTION_KEY, get_benchmark, load_items
    from alarm.eval.mcqa import OK, parse_answer

    bench = get_benchmark(args.benchmark)
    check_input_file("--input", args.input)
    items = load_items(args.input, bench)
    bad = 0
    for i, item in enumerate(items):
        if args.response_key not in item:
            raise ValueError(f"{args.input}: item {i} has no {args.response_key!r} field")
        parsed = parse_answer(item[args.response_key], [str(o) for o in bench.options(item)])
        item[PREDICTION_KEY] = parsed.prediction
        item["answer_status"] = parsed.status
        bad += parsed.status != OK
    _write_json(args.output, items)
    print(f"{len(items)} items, {bad} malformed answers (empty model_prediction)")
    return 0
