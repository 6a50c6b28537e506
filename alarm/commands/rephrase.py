"""Build ALARM training targets from labelled clips by self-generation and self-rephrasing.

  alarm rephrase describe --input LABELS.jsonl --output DESCRIPTIONS.jsonl
  alarm rephrase run --input LABELS.jsonl --output-dir DIR --model PATH_OR_NAME

Reference: docs/training.md.
"""
from __future__ import annotations

from alarm.commands import add_command

DEFAULT_MODEL = "Qwen/Qwen3-4B-Thinking-2507"
DESCRIBE_DOC = """Write the text description of every labelled clip, without loading a model.
"""
RUN_DOC = """Run the pipeline (prompts, R0, rephrasing, filtering) and write the training manifest DIR/manifest.jsonl.

Work is sharded and resumable: rerun the same command after a crash and finished shards are skipped. A
rerun with other settings into the same folder is refused. Several GPUs: one process per GPU on the same
--output-dir with --part i --num-parts N.
"""


def register(subparsers) -> None:
    p = add_command(subparsers, "rephrase", __doc__)
    sub = p.add_subparsers(dest="rephrase_command", required=True)

    d = add_command(sub, "describe", DESCRIBE_DOC)
    d.add_argument("--input", required=True, help="labels JSONL (see alarm/data/descriptions.py)")
    d.add_argument("--output", required=True, help="JSONL of {id, dataset, description}")
    d.set_defaults(func=_describe)

    r = add_command(sub, "run", RUN_DOC)
    r.add_argument("--input", required=True, help="labels JSONL (see alarm/data/descriptions.py)")
    r.add_argument("--output-dir", required=True)
    r.add_argument("--model", default=DEFAULT_MODEL, help="reasoning LLM (local path or hub id)")
    r.add_argument("--prompt-model", help="instruct LLM writing/checking prompts (default: --model)")
    r.add_argument("--generate-prompts", action="store_true", help="run the optional prompt-generation stage")
    r.add_argument("--num-candidates", type=int, default=20)
    r.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    r.add_argument("--batch-size", type=int, default=8, help="HF backend batch size")
    r.add_argument("--dtype", default="auto", help="auto, bfloat16, float16 or float32 (checked before any load)")
    r.add_argument("--device", help="HF backend device (default: cuda when available)")
    r.add_argument("--shard-size", type=int, default=256)
    r.add_argument("--part", type=int, default=0, help="this process's part (one per GPU), 0-based")
    r.add_argument("--num-parts", type=int, default=1, help="processes sharing --output-dir (shard k -> part k %% N)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--greedy", action="store_true", help="greedy decoding instead of T=0.6/top-p 0.95/top-k 20")
    r.add_argument("--r0-max-tokens", type=int, default=512)
    r.add_argument("--thinking-budget", type=int, default=1536)
    r.add_argument("--rephrase-max-tokens", type=int, default=2560)
    r.add_argument("--min-tokens", type=int, default=100)
    r.add_argument("--max-tokens", type=int, default=612)
    r.add_argument("--max-duration", type=float, default=60.0)
    r.add_argument("--check-audio", action="store_true", help="drop items whose audio file does not exist")
    r.set_defaults(func=_run)


def _describe(args) -> int:
    from alarm.commands.checks import check_input_file
    from alarm.data.descriptions import read_label_items
    from alarm.data.jsonl import write_jsonl_atomic

    check_input_file("--input", args.input)
    items = read_label_items(args.input)
    write_jsonl_atomic(args.output, ({"id": it.id, "dataset": it.dataset, "description": it.describe()}
                                     for it in items))
    print(f"{len(items)} descriptions written to {args.output}")
    return 0


def _backend(args, name: str):
    from alarm.rephrase.backends import HFBackend, VLLMBackend

    if args.backend == "vllm":
        return VLLMBackend(name, dtype=args.dtype, seed=args.seed)
    return HFBackend.from_pretrained(name, batch_size=args.batch_size, dtype=args.dtype, device=args.device)


def _check_args(args) -> None:
    """Every cheap check of ``rephrase run``, before a model is loaded or the output folder is touched."""
    from alarm.commands.checks import (check_backend_installed, check_device, check_dtype, check_hf_model,
                                       check_input_file, check_range)

    lower_bounds = {"--num-candidates": 1, "--batch-size": 1, "--shard-size": 1, "--num-parts": 1,
                    "--r0-max-tokens": 1, "--thinking-budget": 0, "--rephrase-max-tokens": 1, "--min-tokens": 1,
                    "--seed": 0}
    for option, low in lower_bounds.items():
        check_range(option, getattr(args, option[2:].replace("-", "_")), low)
    check_range("--part", args.part, 0, args.num_parts - 1)
    check_range("--max-tokens", args.max_tokens, args.min_tokens)
    check_range("--max-duration", args.max_duration, 1e-3)
    check_dtype("--dtype", args.dtype)
    if args.backend == "vllm":
        check_backend_installed("--backend", "vllm", "vllm")
        if args.device is not None:
            raise ValueError("--device applies to the hf backend only (vLLM places the model itself)")
    else:
        check_device("--device", args.device)
    check_input_file("--input", args.input)
    check_hf_model("--model", args.model)
    if args.prompt_model:
        if not args.generate_prompts:
            raise ValueError("--prompt-model is used only with --generate-prompts")
        check_hf_model("--prompt-model", args.prompt_model)


def _run(args) -> int:
    from alarm.data.descriptions import read_label_items
    from alarm.rephrase.backends import Sampling
    from alarm.rephrase.pipeline import Pipeline, PipelineConfig, check_resumable

    _check_args(args)
    read_label_items(args.input)  # a bad labels line fails here, not after the model load
    cfg = PipelineConfig(
        input=args.input, output_dir=args.output_dir, shard_size=args.shard_size, seed=args.seed,
        generate_prompts=args.generate_prompts, num_candidates=args.num_candidates,
        r0_max_tokens=args.r0_max_tokens, thinking_budget=args.thinking_budget,
        rephrase_max_tokens=args.rephrase_max_tokens, min_tokens=args.min_tokens, max_tokens=args.max_tokens,
        max_duration=args.max_duration, check_audio=args.check_audio,
        sampling=Sampling(do_sample=not args.greedy, seed=args.seed))
    name = args.model + (f" (prompts: {args.prompt_model})" if args.generate_prompts and args.prompt_model else "")
    check_resumable(cfg, name)
    backend = _backend(args, args.model)
    prompt_backend = _backend(args, args.prompt_model) if args.generate_prompts and args.prompt_model else None
    summary = Pipeline(cfg, backend, prompt_backend, model_name=name).run(args.part, args.num_parts)
    print(f"shards: {summary.shards} ({summary.skipped_shards} already done, {summary.processed_shards} processed); "
          f"kept {summary.kept}, rejected {summary.rejected}; "
          + (f"manifest: {summary.manifest}" if summary.manifest else
             f"{summary.pending_shards} shard(s) of other parts pending: the last part to finish writes the manifest"))
    return 0
