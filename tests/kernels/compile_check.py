"""Shared check that ``torch.compile(fullgraph=True)`` traces a module through our custom ops."""
import torch


def _outputs(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _run(module, inputs, grad_inputs):
    for t in grad_inputs:
        t.grad = None
    module.zero_grad()
    outputs = _outputs(module(*inputs))
    outputs[0].square().sum().backward()
    grads = [t.grad.clone() for t in grad_inputs] + [p.grad.clone() for p in module.parameters()]
    return outputs, grads


def assert_compiled_matches_eager(module: torch.nn.Module, inputs: tuple, grad_inputs=()) -> None:
    """Run ``module(*inputs)`` eagerly and compiled with fullgraph=True (a graph break raises), backprop
    ``sum(first_output ** 2)`` through both, and require equal outputs (offsets bit-equal) and equal
    gradients for ``grad_inputs`` and every parameter."""
    eager_out, eager_grads = _run(module, inputs, grad_inputs)
    compiled_out, compiled_grads = _run(torch.compile(module, fullgraph=True), inputs, grad_inputs)
    assert len(eager_out) == len(compiled_out)
    for e, c in zip(eager_out, compiled_out, strict=True):
        if e.is_floating_point():
            torch.testing.assert_close(c, e)
        else:
            assert torch.equal(c, e)
    for e, c in zip(eager_grads, compiled_grads, strict=True):
        torch.testing.assert_close(c, e)
