"""Tune the Triton kernels once for a model's shapes and save the chosen configs.

    python -m alarm_kernels.tune [--widths 1024,1280,768] [--llm-width 2560] [--tokens 2300] [--dtype bf16]

Runs every non-attention op forward and backward on the Triton backend with autotuning on
(``ALARM_KERNELS_AUTOTUNE=1``) at the given widths, then writes the configs Triton picked to one JSON file
in the cache folder (``ALARM_KERNELS_TUNE_CACHE``, default ``~/.cache/alarm_kernels/tune``), named by the
device and the torch / triton / alarm_kernels versions. With autotuning off (the default) every kernel
uses a saved config for its exact shape key when that file exists, else its fixed-config table. Under
``torch.distributed`` rank 0 tunes and broadcasts the result, so every rank runs the same configs.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Dict, Mapping, Sequence

import torch

TUNE_CACHE_ENV = "ALARM_KERNELS_TUNE_CACHE"
TUNED_OPS = ("varlen_pool", "varlen_conv1d", "weighted_layer_sum", "multi_encoder_concat")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def cache_file(device_index: int = 0) -> Path:
    """The JSON file holding tuned configs for this CUDA device and these library versions."""
    import triton

    from . import __version__

    folder = Path(os.environ.get(TUNE_CACHE_ENV) or Path.home() / ".cache" / "alarm_kernels" / "tune")
    name = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(device_index)).strip("-")
    versions = f"torch{torch.__version__}-triton{triton.__version__}-alarm{__version__}"
    return folder / f"{name}-{re.sub(r'[^A-Za-z0-9.]+', '_', versions)}.json"


def shape_key(key: Sequence[str], args: Mapping[str, object]) -> str:
    """The tuning key of one launch as a string: the values of the ``key`` arguments, then the dtypes of
    every tensor argument (the same key Triton's autotuner caches on)."""
    values = [args[name] for name in key if name in args]
    values += [str(v.dtype) for v in args.values() if isinstance(v, torch.Tensor)]
    return json.dumps(values, default=str)


_installed: Dict[str, dict] = {}  # kernel name -> shape key -> config record (set by install())


def install(entries: Mapping[str, Mapping[str, dict]]) -> None:
    """Make ``entries`` (kernel name -> shape key -> config record) the saved configs of this process."""
    _installed.clear()
    _installed.update({kernel: dict(per_key) for kernel, per_key in entries.items()})


@functools.lru_cache(maxsize=None)
def _load(device_index: int) -> bool:
    path = cache_file(device_index)
    if not _installed and path.is_file():
        install(json.loads(path.read_text())["entries"])
    return True


def saved_config(candidates, key: Sequence[str], args: Mapping[str, object], kernel: str):
    """The candidate config saved for ``kernel`` at this launch's shape key, or None."""
    tensor = next((v for v in args.values() if isinstance(v, torch.Tensor)), None)
    if tensor is not None and tensor.device.type == "cuda":
        _load(tensor.device.index or 0)
    record = _installed.get(kernel, {}).get(shape_key(key, args))
    if record is None:
        return None
    for config in candidates:
        if (config.kwargs == record["kwargs"] and config.num_warps == record["num_warps"]
                and config.num_stages == record["num_stages"]):
            return config
    return None


def _autotuners():
    """(kernel name, triton Autotuner) of every tuned op's Triton module."""
    from triton.runtime.autotuner import Autotuner

    for op in TUNED_OPS:
        module = importlib.import_module(f"alarm_kernels.{op}.triton")
        for obj in vars(module).values():
            if isinstance(obj, Autotuner):
                yield obj.base_fn.__name__, obj


def _workload(widths: Sequence[int], llm_width: int, tokens: int, dtype: torch.dtype, device) -> None:
    """Forward + backward of every tuned op at the model's widths, on the Triton backend."""
    import alarm_kernels as ak

    gen = torch.Generator(device="cpu").manual_seed(0)
    lengths = torch.randint(max(1, tokens // 8), tokens + 1, (4,), generator=gen).tolist()
    cu = ak.seqlens_to_cu_seqlens(lengths, device=device)

    def leaf(*shape):
        return torch.randn(*shape, device=device, dtype=dtype, requires_grad=True)

    streams = [leaf(sum(lengths), w) for w in widths]
    for x in streams:
        y, _ = ak.varlen_pool(x, cu, 2, "mean", backend="triton")
        y.float().sum().backward()
        y, _ = ak.varlen_conv1d(x, cu, leaf(x.shape[1], x.shape[1], 3), leaf(x.shape[1]), 2, 1, "gelu",
                                backend="triton")
        y.float().sum().backward()
        ak.weighted_layer_sum([leaf(*x.shape) for _ in range(5)], leaf(5), backend="triton").float().sum().backward()
    weight = leaf(llm_width, sum(widths))
    for w, b in ((None, None), (weight, leaf(llm_width))):
        y, _ = ak.multi_encoder_concat(streams, [cu] * len(streams), w, b, backend="triton")
        y.float().sum().backward()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def tune(widths: Sequence[int], llm_width: int, tokens: int, dtype: torch.dtype, save: bool = True) -> dict:
    """Autotune every tuned op at these shapes (rank 0 only under torch.distributed, then broadcast);
    install the result in this process and (on rank 0, if ``save``) write it to :func:`cache_file`.
    Returns the entries (kernel name -> shape key -> config record)."""
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    device = torch.device("cuda", torch.cuda.current_device())
    entries: dict = {}
    if not distributed or dist.get_rank() == 0:
        previous = os.environ.get("ALARM_KERNELS_AUTOTUNE")
        os.environ["ALARM_KERNELS_AUTOTUNE"] = "1"
        try:
            _workload(widths, llm_width, tokens, dtype, device)
        finally:
            if previous is None:
                os.environ.pop("ALARM_KERNELS_AUTOTUNE")
            else:
                os.environ["ALARM_KERNELS_AUTOTUNE"] = previous
        for name, tuner in _autotuners():
            for key, config in tuner.cache.items():
                entries.setdefault(name, {})[json.dumps(list(key), default=str)] = dict(
                    kwargs=dict(config.kwargs), num_warps=config.num_warps, num_stages=config.num_stages)
    if distributed:
        box = [entries]
        dist.broadcast_object_list(box, src=0)
        entries = box[0]
    install(entries)
    if save and (not distributed or dist.get_rank() == 0):
        path = cache_file(device.index or 0)
        save_entries(path, entries, torch.cuda.get_device_name(device))
        print(f"wrote {path}")
    return entries


def save_entries(path: Path, entries: Mapping[str, Mapping[str, dict]], device_name: str) -> None:
    """Write tuned ``entries`` (kernel name -> shape key -> config record) to ``path`` as JSON, atomically: a
    temporary file in the same folder, flushed to disk, then renamed over ``path`` (readers never see half a
    file). The toolkit stands alone, so this is its own small writer rather than the application's."""
    import triton

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"device": device_name, "torch": torch.__version__, "triton": triton.__version__,
                       "entries": entries}, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix="-" + path.name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the mode open() would give, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    folder = os.open(path.parent, os.O_RDONLY)  # the rename survives a power loss
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alarm_kernels.tune", description=__doc__.split("\n")[0])
    parser.add_argument("--widths", default="1024,1280,768", help="encoder stream widths, comma-separated")
    parser.add_argument("--llm-width", type=int, default=2560)
    parser.add_argument("--tokens", type=int, default=2300, help="longest packed sequence")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="bf16")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("tuning needs a CUDA device")
    widths = [int(w) for w in args.widths.split(",") if w]
    entries = tune(widths, args.llm_width, args.tokens, _DTYPES[args.dtype])
    print(f"tuned {sum(len(v) for v in entries.values())} shape keys of {len(entries)} kernels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
