"""Build training manifests from the published ALARM corpora and your copies of their source datasets.

  alarm data sources
  alarm data import-corpora --corpus ALARM-Corpora --out data/alarm \\
      --audio-root librispeech=/data/LibriSpeech --audio-root esc50=/data/ESC-50-master \\
      --audio-map heysquad.tsv --allow-missing
  alarm data import-corpora --corpus ALARM-Corpora --out data/alarm --audio-roots data/audio --allow-missing

Reference: docs/data.md.
"""
from __future__ import annotations

from alarm.commands import add_command

SOURCES_DOC = """List the datasets of the corpora, the ids their rows carry and the folder layout each expects.
"""
IMPORT_DOC = """Match the corpus rows (JSONL or parquet) to local audio and write train/validation manifests.

Writes OUT/train.jsonl, OUT/validation.jsonl, OUT/report.json (per-dataset counts) and OUT/missing.tsv, all
replaced together when the run succeeds; clips the official scripts assembled are built once under OUT/clips.
"""


def register(subparsers) -> None:
    p = add_command(subparsers, "data", __doc__)
    sub = p.add_subparsers(dest="data_command", required=True)

    s = add_command(sub, "sources", SOURCES_DOC)
    s.set_defaults(func=_sources)

    i = add_command(sub, "import-corpora", IMPORT_DOC)
    i.add_argument("--corpus", required=True,
                   help="folder with the corpus files: <split>.jsonl, <split>.parquet or <split>-*.parquet (the hub's "
                        "shards), at any depth; parquet needs pyarrow (pip install 'alarm-toolkit[corpora]')")
    i.add_argument("--out", required=True, help="output folder: train.jsonl, validation.jsonl, missing.tsv, "
                                                "report.json (and clips/ for built clips)")
    i.add_argument("--mode", choices=("filtered", "raw"), default="filtered",
                   help="filtered: the published train/validation splits (default); raw: raw_train/raw_validation, "
                        "split and filtered here as the official scripts did")
    i.add_argument("--audio-root", action="append", default=[], metavar="NAME=DIR",
                   help="a dataset's folder in its official layout (repeatable; `alarm data sources` lists them)")
    i.add_argument("--audio-roots", metavar="DIR",
                   help="a folder with one subfolder per dataset, named as `alarm data sources` names them "
                        "(DIR/librispeech, DIR/esc50, ...): each is that dataset's --audio-root (--audio-root wins)")
    i.add_argument("--audio-map", action="append", default=[], metavar="TSV",
                   help="table of clips: dataset_name, unique_id_1, unique_id_2, path (tab-separated, with that "
                        "header; relative paths are relative to the table); repeatable; wins over --audio-root")
    i.add_argument("--clips-dir", help="where built clips (VoxCeleb pairs, dialogue/meeting windows, segments) are "
                                       "written once as FLAC (default: OUT/clips)")
    i.add_argument("--tokenizer", help="local folder of the reasoning model's tokenizer (Qwen3-4B-Thinking-2507 in "
                                       "the paper): keep targets of --min-tokens..--max-tokens tokens (the 31 audio "
                                       "datasets; required by --mode raw, optional with filtered)")
    i.add_argument("--min-tokens", type=int, default=100, help="with --tokenizer: shortest target kept (default 100)")
    i.add_argument("--max-tokens", type=int, default=612, help="with --tokenizer: longest target kept (default 612)")
    i.add_argument("--max-seconds", type=float, default=60.0,
                   help="clips this long or longer are dropped (default 60, as published)")
    i.add_argument("--duration-tolerance", type=float, default=1.0,
                   help="seconds a clip may differ from the duration its description states (default 1.0)")
    i.add_argument("--allow-missing", action="store_true",
                   help="skip rows whose audio is missing or unreadable (listed in missing.tsv) instead of failing")
    i.add_argument("--workers", type=int, default=4, help="threads locating and probing clips (default 4)")
    i.add_argument("--no-progress", action="store_true", help="no progress bar")
    i.set_defaults(func=_import)


def _sources(args) -> int:
    from alarm.data.corpora.registry import ALIASES, SOURCES

    for name, cls in SOURCES.items():
        aliases = [a for a, target in ALIASES.items() if target == name]
        print(f"{name}{' (also ' + ', '.join(aliases) + ')' if aliases else ''}  [{cls.kind}]")
        print(f"    ids:    {cls.ids}")
        print(f"    layout: {cls.layout}")
    return 0


def _import(args) -> int:
    from alarm.data.corpora.importer import ImportOptions, import_corpora, parse_audio_roots, roots_under

    roots = {**(roots_under(args.audio_roots) if args.audio_roots else {}), **parse_audio_roots(args.audio_root)}
    opts = ImportOptions(corpus=args.corpus, out=args.out, mode=args.mode, roots=roots,
                         maps=tuple(args.audio_map), clips_dir=args.clips_dir, tokenizer=args.tokenizer,
                         min_tokens=args.min_tokens, max_tokens=args.max_tokens, max_seconds=args.max_seconds,
                         duration_tolerance=args.duration_tolerance, allow_missing=args.allow_missing,
                         workers=args.workers, progress=not args.no_progress)
    report = import_corpora(opts)
    for split in ("train", "validation"):
        total = report["splits"][split]["total"]
        dropped = {k: v for k, v in total.items() if k not in ("rows", "matched", "no_context_copies") and v}
        print(f"{split}: {report['splits'][split]['records']} records from {total['rows']} rows"
              + (f" (dropped: {', '.join(f'{k} {v}' for k, v in dropped.items())})" if dropped else ""))
    print(f"wrote {args.out}/train.jsonl, validation.jsonl, missing.tsv and report.json")
    return 0
