"""One op-definition helper: a small spec registers the ``torch.library`` custom op, its fake implementation,
its autograd formula and the dispatch to the chosen backend's module.

Each op's package holds ``reference.py`` / ``triton.py`` / ``cuda.py`` with ``forward(*inputs)`` and
``backward(*inputs)``; its ``__init__.py`` checks the inputs, resolves the backend and calls the op returned by
:func:`define_op`, which takes the backend name as its last argument.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ._utils import on_tensor_device

__all__ = ["OpSpec", "define_op"]


@dataclass(frozen=True)
class OpSpec:
    """What an op registers.

    Attributes:
        name: registers ``alarm_kernels::<name>`` and ``alarm_kernels::<name>_backward``.
        package: the op's package; backend ``b`` lives in module ``<package>.<b>``.
        schema: forward schema without the backend, e.g. ``"(Tensor x, int ratio) -> (Tensor, Tensor)"``.
        backward_schema: the backward op's schema, same form.
        fake: ``fake(*inputs)`` -> outputs of the right shapes (for torch.compile tracing).
        backward_fake: the same for the backward op.
        save: ``save(ctx, inputs, outputs)``: keep on ``ctx`` what the backward needs (``ctx.backend`` is set).
        gradients: ``gradients(ctx, backward, *grad_outputs)`` -> one gradient (or None) per input; ``backward``
            runs the backward op on ``ctx.backend`` (pass its arguments without the backend).
    """

    name: str
    package: str
    schema: str
    backward_schema: str
    fake: Callable[..., Any]
    backward_fake: Callable[..., Any]
    save: Callable[[Any, Sequence[Any], Any], None]
    gradients: Callable[..., Sequence[Any]]


def _with_backend(schema: str) -> str:
    args, _, returns = schema.partition("->")
    args = args.strip()
    if not (args.startswith("(") and args.endswith(")")):
        raise ValueError(f"schema must look like '(...) -> ...', got {schema!r}")
    inner = args[1:-1].strip()
    return f"({inner}{', ' if inner else ''}str backend) -> {returns.strip()}"


def _impl(package: str, backend: str):
    return importlib.import_module(f"{package}.{backend}")


def define_op(spec: OpSpec):
    """Register ``spec`` and return the forward custom op, called as ``op(*inputs, backend)``."""
    def forward(*args):
        with on_tensor_device(args):
            return _impl(spec.package, args[-1]).forward(*args[:-1])

    def backward_impl(*args):
        with on_tensor_device(args):
            return _impl(spec.package, args[-1]).backward(*args[:-1])

    op = torch.library.custom_op(f"alarm_kernels::{spec.name}", forward, mutates_args=(),
                                 schema=_with_backend(spec.schema))
    op.register_fake(lambda *args: spec.fake(*args[:-1]))
    backward_op = torch.library.custom_op(f"alarm_kernels::{spec.name}_backward", backward_impl, mutates_args=(),
                                          schema=_with_backend(spec.backward_schema))
    backward_op.register_fake(lambda *args: spec.backward_fake(*args[:-1]))

    def setup_context(ctx, inputs, output):
        ctx.backend = inputs[-1]
        spec.save(ctx, inputs[:-1], output)

    def autograd(ctx, *grad_outputs):
        grads = spec.gradients(ctx, lambda *args: backward_op(*args, ctx.backend), *grad_outputs)
        return (*grads, None)

    op.register_autograd(autograd, setup_context=setup_context)
    return op
