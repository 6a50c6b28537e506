"""One op-definition helper: a small spec registers the ``torch.library`` custom ops (forward and backward, with
fake implementations and the autograd formula) and returns the callable the public function runs.

Each op's package holds ``reference.py`` / ``triton.py`` / ``cuda.py`` (attention: ``flash_attn.py``) with
``forward(*inputs)`` and ``backward(*inputs)``; its ``__init__.py`` checks the inputs, resolves the backend and
calls the :class:`Op` that :func:`define_op` returns, with the arguments in schema order. A backend may also
define ``forward_saving(*inputs) -> (outputs, (tensors, rest))``: the eager autograd path then keeps ``tensors`` (a
tuple of tensors or None: index tensors and other intermediates its backward would otherwise recompute) through
``ctx.save_for_backward`` with the op's own, so that ``torch.autograd.graph.saved_tensors_hooks`` (activation
offloading, ``torch.utils.checkpoint``'s non-reentrant mode, memory accounting) sees every tensor it keeps, and
``rest`` (anything without tensors: sizes, flags) on ``ctx``; it calls ``backward(*inputs, saved=(tensors, rest))``
with ``tensors`` as the hooks unpacked them. The custom-op path calls ``forward`` and ``backward`` without it (the
backward recomputes what it needs).

The call path (docs/kernels.md, "Call path and host cost"): eagerly, an :class:`Op` calls the backend's
``forward`` straight away (one ``torch.autograd.Function`` around it when an input requires grad, whose backward
calls the backend's ``backward``; only the inputs that require grad are the Function's tensor arguments, the rest
reach it as one opaque tuple); while ``torch.compile`` traces, and for meta tensors, it calls
the registered custom op instead, so the graph holds one opaque node with its fake shapes and autograd formula.
Both routes run the same backend functions with the same arguments; everything that depends only on the schema
(which arguments are tensor lists, where the backend name sits) is worked out once, here, not per call.
"""
from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

__all__ = ["OpSpec", "Op", "define_op", "record_backends"]

# callbacks ``f(op_name, backend)`` told about every eager call (see :func:`record_backends`)
_observers: List[Callable[[str, str], None]] = []


@contextlib.contextmanager
def record_backends():
    """Record which backend every op call ran on while the block runs (eager calls and compiled graphs' calls alike).

    Yields a dict ``op name -> set of backend names`` (e.g. ``{"varlen_pool": {"cuda"}}``), filled as ops run::

        with alarm_kernels.record_backends() as ran:
            loss = model(batch).loss
        print(ran)

    Costs nothing outside the block (one empty-list check per call)."""
    seen: Dict[str, set] = {}

    def observe(op: str, backend: str) -> None:
        seen.setdefault(op, set()).add(backend)

    _observers.append(observe)
    try:
        yield seen
    finally:
        _observers.remove(observe)


@dataclass(frozen=True)
class OpSpec:
    """What an op registers.

    Attributes:
        name: registers ``alarm_kernels::<name>`` and ``alarm_kernels::<name>_backward``.
        package: the op's package; backend ``b`` lives in module ``<package>.<b>``.
        schema: forward schema, e.g. ``"(Tensor x, int ratio) -> (Tensor, Tensor)"``; a ``str backend`` argument
            is appended unless the schema names one (then the op takes it at that position).
        backward_schema: the backward op's schema, same form (its ``str backend`` goes at the same rule).
        fake: ``fake(*inputs)`` -> outputs of the right shapes (for torch.compile tracing); ``inputs`` are the
            schema's arguments without the backend.
        backward_fake: the same for the backward op.
        save: ``save(ctx, inputs, outputs) -> tensors``: keep on ``ctx`` the non-tensor values the backward needs and
            return the tensors it needs (a tuple of tensors or None; the caller passes them to
            ``ctx.save_for_backward``). Which inputs need gradients is read from their ``requires_grad`` here (it
            holds on both call paths).
        gradients: ``gradients(ctx, saved, backward, *grad_outputs)`` -> one gradient (or None; a list for a tensor
            list) per input; ``saved`` is the tuple ``save`` returned (unpacked), ``backward`` runs the backend's
            backward (pass its arguments without the backend).
        non_differentiable: indices of the forward's outputs that carry no gradient (offsets, log-sum-exp,
            saved intermediates): autograd never materializes a gradient for them.
    """

    name: str
    package: str
    schema: str
    backward_schema: str
    fake: Callable[..., Any]
    backward_fake: Callable[..., Any]
    save: Callable[[Any, Sequence[Any], Any], None]
    gradients: Callable[..., Sequence[Any]]
    non_differentiable: Tuple[int, ...] = ()


def _with_backend(schema: str) -> Tuple[str, int]:
    """``(schema with a str backend argument, its position)``: appended unless the schema has one."""
    args, _, returns = schema.partition("->")
    args = args.strip()
    if not (args.startswith("(") and args.endswith(")")):
        raise ValueError(f"schema must look like '(...) -> ...', got {schema!r}")
    names = [a.name for a in torch._C.parse_schema(f"x{args} -> ()").arguments]
    if "backend" in names:
        return schema, names.index("backend")
    inner = args[1:-1].strip()
    return f"({inner}{', ' if inner else ''}str backend) -> {returns.strip()}", len(names)


def _without(args: Sequence[Any], position: int) -> List[Any]:
    return [*args[:position], *args[position + 1:]]


# ``ctx.rest`` of a backend without forward_saving (its backward takes no ``saved``)
_NOT_SAVING = object()


class _Function(torch.autograd.Function):
    """Autograd for the eager path: ``apply(op, impl, inputs, where, *differentiable)``. ``inputs`` are the op's
    arguments as given (backend left out), opaque to autograd; ``differentiable`` the tensors among them that
    require grad, the only ones autograd has to see (each tensor argument of a Function costs it about two
    microseconds per call), at positions ``where``: ``(input index, index in its tensor list or None), ...``."""

    @staticmethod
    def forward(ctx, op: "Op", impl, inputs, where, *differentiable):
        saving = getattr(impl, "forward_saving", None)
        if saving is None:
            outputs, ctx.rest = impl.forward(*inputs), _NOT_SAVING
            tensors = ()
        else:
            outputs, (tensors, ctx.rest) = saving(*inputs)
        ctx.set_materialize_grads(False)
        if op.spec.non_differentiable:
            ctx.mark_non_differentiable(*(outputs[i] for i in op.spec.non_differentiable))
        own = op.spec.save(ctx, inputs, outputs)
        ctx.save_for_backward(*own, *tensors)  # one call: the backend's intermediates after the op's own tensors
        ctx.op, ctx.impl, ctx.where, ctx.own = op, impl, where, len(own)
        return outputs

    @staticmethod
    def backward(ctx, *grad_outputs):
        if torch.is_grad_enabled():  # create_graph=True: the backends' backwards are not differentiable themselves
            return _backward_once_differentiable(ctx, *grad_outputs)
        for g in grad_outputs:
            if g is not None:
                break
        else:  # no gradient reached the op's outputs (never materialized)
            return (None,) * (4 + len(ctx.where))
        op, impl, rest, saved = ctx.op, ctx.impl, ctx.rest, ctx.saved_tensors
        if rest is _NOT_SAVING:
            grads = op.spec.gradients(ctx, saved, lambda *args: op.run(impl.backward, args), *grad_outputs)
        else:
            own, intermediates = saved[:ctx.own], (saved[ctx.own:], rest)
            grads = op.spec.gradients(ctx, own, lambda *args: op.run(impl.backward, args, intermediates),
                                      *grad_outputs)
        return (None, None, None, None,
                *(grads[i] if j is None else None if grads[i] is None else grads[i][j] for i, j in ctx.where))


# with create_graph=True: the backward run under no_grad, its results marked so that differentiating them again raises
_backward_once_differentiable = torch.autograd.function.once_differentiable(_Function.backward)
# Function.apply minus its Python preamble, which _Function does not need when no functorch transform is active: it
# has no setup_context to bind, and the preamble's other step (functorch's dead-wrapper unwrapping) concerns tensors
# leaked out of a transform. About five microseconds per call.
_apply = super(torch.autograd.Function, _Function).apply


class Op:
    """A registered op: call it with the schema's arguments (backend included, at its position).

    Attributes:
        spec: the :class:`OpSpec`.
        custom_op: ``torch.ops.alarm_kernels.<name>`` (what torch.compile traces).
        backward_op: ``torch.ops.alarm_kernels.<name>_backward``.
    """

    def __init__(self, spec: OpSpec):
        self.spec = spec
        schema, self.backend_at = _with_backend(spec.schema)
        backward_schema, backward_at = _with_backend(spec.backward_schema)
        arguments = torch._C.parse_schema(f"alarm_kernels::{spec.name}{schema}").arguments
        inputs = _without(arguments, self.backend_at)
        self.n_inputs = len(inputs)
        # positions (among the inputs, backend left out) of the Tensor[] and of the Tensor / Tensor? arguments
        self.list_inputs = tuple(i for i, a in enumerate(inputs) if str(a.type) == "List[Tensor]")
        self.tensor_inputs = tuple(i for i, a in enumerate(inputs) if str(a.type) in ("Tensor", "Optional[Tensor]"))
        self._modules: Dict[str, Any] = {}
        at = self.backend_at

        def forward(*args):
            for observe in _observers:
                observe(spec.name, args[at])
            return self.run(self.backend(args[at]).forward, _without(args, at))

        def backward(*args):
            return self.run(self.backend(args[backward_at]).backward, _without(args, backward_at))

        self.custom_op = torch.library.custom_op(f"alarm_kernels::{spec.name}", forward, mutates_args=(),
                                                 schema=schema)
        self.custom_op.register_fake(lambda *args: spec.fake(*_without(args, at)))
        self.backward_op = torch.library.custom_op(f"alarm_kernels::{spec.name}_backward", backward,
                                                   mutates_args=(), schema=backward_schema)
        self.backward_op.register_fake(lambda *args: spec.backward_fake(*_without(args, backward_at)))

        def setup_context(ctx, inputs, output):
            ctx.set_materialize_grads(False)
            if spec.non_differentiable:
                ctx.mark_non_differentiable(*(output[i] for i in spec.non_differentiable))
            ctx.backend = inputs[at]
            ctx.save_for_backward(*spec.save(ctx, _without(inputs, at), output))

        def autograd(ctx, *grad_outputs):
            def run_backward(*args):
                return self.backward_op(*args[:backward_at], ctx.backend, *args[backward_at:])

            grads = list(spec.gradients(ctx, ctx.saved_tensors, run_backward, *grad_outputs))
            grads.insert(at, None)
            return tuple(grads)

        self.custom_op.register_autograd(autograd, setup_context=setup_context)

    def backend(self, name: str):
        """The module ``<package>.<name>`` (imported on first use, then cached)."""
        module = self._modules.get(name)
        if module is None:
            module = self._modules[name] = importlib.import_module(f"{self.spec.package}.{name}")
        return module

    @staticmethod
    def run(fn: Callable, args: Sequence[Any], saved: Any = None):
        """``fn(*args)`` (``fn(*args, saved=saved)`` when ``saved`` is given) with the first tensor's GPU made current
        when it is not (Triton launches on the current device: ``cuda:1`` tensors while ``cuda:0`` is current would
        be read on the wrong GPU)."""
        first = args[0]
        if not isinstance(first, torch.Tensor):
            first = first[0]
        if first.is_cuda and first.get_device() != torch.cuda.current_device():
            with torch.cuda.device(first.device):
                return fn(*args) if saved is None else fn(*args, saved=saved)
        return fn(*args) if saved is None else fn(*args, saved=saved)

    def __call__(self, *args):
        if torch.compiler.is_compiling():
            return self.custom_op(*args)
        at = self.backend_at
        inputs = args[:at] if at == self.n_inputs else _without(args, at)
        first = inputs[0] if isinstance(inputs[0], torch.Tensor) else inputs[0][0]
        if first.is_meta:
            return self.custom_op(*args)
        if _observers:
            for observe in _observers:
                observe(self.spec.name, args[at])
        impl = self._modules.get(args[at]) or self.backend(args[at])
        if first.is_cuda and first.get_device() != torch.cuda.current_device():
            with torch.cuda.device(first.device):
                return self._eager(impl, inputs)
        return self._eager(impl, inputs)

    def _eager(self, impl, inputs: Sequence[Any]):
        """The backend's forward, inside :class:`_Function` when an input requires grad."""
        where = self._differentiable(inputs) if torch.is_grad_enabled() else ()
        if not where:
            return impl.forward(*inputs)
        apply = _Function.apply if torch._C._are_functorch_transforms_active() else _apply
        return apply(self, impl, inputs, where, *(inputs[i] if j is None else inputs[i][j] for i, j in where))

    def _differentiable(self, inputs: Sequence[Any]) -> List[Tuple[int, Optional[int]]]:
        """Positions ``(input index, index in its tensor list or None)`` of the input tensors that require grad."""
        where = []
        for i in self.tensor_inputs:
            a = inputs[i]
            if a is not None and a.requires_grad:
                where.append((i, None))
        for i in self.list_inputs:
            for j, t in enumerate(inputs[i]):
                if t.requires_grad:
                    where.append((i, j))
        return where


def define_op(spec: OpSpec) -> Op:
    """Register ``spec`` and return the :class:`Op` to call (``op(*inputs_with_backend)``)."""
    return Op(spec)
