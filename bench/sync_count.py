"""Host syncs in one fast-path training step of the tiny ALARM model.

    python -m bench.sync_count --out OUT.json [--fusion CA]

Counts device-to-host transfers (``.item()``, ``.tolist()``, ``.cpu()``, ``int(t)``, ...) per calling site with
:func:`alarm_kernels.testing.count_host_transfers`, and on a GPU also the synchronizing CUDA calls torch reports
under ``torch.cuda.set_sync_debug_mode("warn")``. Sites inside ``alarm_kernels`` are the kernels' own syncs;
the rest belong to the model and its glue. Two steps are counted: from waveforms (the frozen encoders' host-side
feature extraction included) and from cached encoder features with their host-side frame counts
(``ModelBatch.lengths``, what the trainer's feature cache gives). Without a GPU the ops run their Triton
backends under the interpreter (``ALARM_KERNELS_BACKEND=triton`` unless set), as on a GPU: the CPU reference
attention reads its offsets on the host by design. Writes the counts (and the top sites) to the JSON file.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import warnings

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("ALARM_KERNELS_BACKEND", "triton")

from alarm.fileio import atomic_write_json  # noqa: E402
from alarm_kernels.testing import count_host_transfers  # noqa: E402

KERNELS_DIR = os.path.dirname(os.path.abspath(__import__("alarm_kernels").__file__))


def one_step(model, batch) -> None:
    """Forward + backward of one fast-path step (gradients dropped afterwards); ``batch``: the arguments of
    ``model(...)`` (a tuple) or a ``ModelBatch``."""
    out = model(*batch, layout="packed") if isinstance(batch, tuple) else model.forward_batch(batch, layout="packed")
    out.loss.backward()
    for p in model.trainable_parameters().values():
        p.grad = None


def counted_step(model, batch, device) -> tuple:
    """One warm-up then one counted step -> (host transfers per site, CUDA syncs per site) Counters."""
    one_step(model, batch)  # warm-up: compiles, caches
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    cuda_syncs: collections.Counter = collections.Counter()
    with count_host_transfers() as transfers, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")
        try:
            one_step(model, batch)
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode(0)
    for w in caught:
        if "synchroniz" in str(w.message):
            cuda_syncs[f"{w.filename}:{w.lineno}"] += 1
    return transfers, cuda_syncs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sync_count", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="JSON result file")
    parser.add_argument("--fusion", default="CA", choices=["sum", "concat", "CA", "P"])
    args = parser.parse_args(argv)
    from alarm.model import ALARMConfig, ALARMModel, ModelBatch
    from alarm.model.splice import tokenize_batch
    from alarm.model.tiny import synthetic_audio

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    with torch.device(device):
        model = ALARMModel(ALARMConfig.tiny(args.fusion))
    model.to(device).train()
    batch = (synthetic_audio([1.0, 0.6, 0.3], seed=0), 16000, ["what is it?"] * 3, ["a dog barks."] * 3)
    transfers, cuda_syncs = counted_step(model, batch, device)
    waves, rates = model._check(batch[0], batch[1])
    feats = model.encode(waves, rates)
    text = tokenize_batch(model.tokenizer, batch[2], batch[3], device=device)
    frames = {name: (cu[1:] - cu[:-1]).tolist() for name, (_, cu) in feats.items()}
    cached, cached_syncs = counted_step(model, ModelBatch(text, features=feats, lengths=frames), device)

    def in_kernels(counts):
        return sum(n for site, n in counts.items() if site.startswith(KERNELS_DIR))

    on_gpu = device.type == "cuda"
    report = dict(
        device=str(device), fusion=args.fusion, backend=os.environ.get("ALARM_KERNELS_BACKEND", "auto"),
        host_transfers=sum(transfers.values()), host_transfers_in_kernels=in_kernels(transfers),
        cuda_syncs=sum(cuda_syncs.values()) if on_gpu else None,
        top_transfer_sites=transfers.most_common(20), top_cuda_sync_sites=cuda_syncs.most_common(20),
        from_features=dict(host_transfers=sum(cached.values()), host_transfers_in_kernels=in_kernels(cached),
                           cuda_syncs=sum(cached_syncs.values()) if on_gpu else None,
                           top_transfer_sites=cached.most_common(20), top_cuda_sync_sites=cached_syncs.most_common(20)),
    )
    atomic_write_json(args.out, report)
    for label, counts, syncs in (("from waveforms", transfers, cuda_syncs),
                                 ("from cached features + host lengths", cached, cached_syncs)):
        print(f"host transfers in one step {label}: {sum(counts.values())} ({in_kernels(counts)} inside "
              f"alarm_kernels); CUDA syncs reported by torch: {sum(syncs.values()) if on_gpu else None}")
        for site, n in counts.most_common(10):
            print(f"  {n:4d}  {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
