"""The README's two CUDA-graph recipes, run as written (GPU only), then held to eager calls: the
replays must equal eager bitwise (DESIGN §5a, issue 18)."""
import pathlib
import re

import pytest
import torch

README = pathlib.Path(__file__).parent.parent / "README.md"


def recipe(name: str) -> str:
    """The code block after ``<!-- recipe: name -->`` in the README."""
    found = re.search(rf"<!-- recipe: {re.escape(name)} -->\s*```python\n(.*?)```", README.read_text(), re.S)
    assert found, f"README has no recipe {name!r}"
    return found.group(1)


def test_the_recipes_are_in_the_readme():
    for name in ("make_graphed_callables", "reduce-overhead"):
        assert "swav_loss" in recipe(name)


def grads(module_or_params):
    params = module_or_params if isinstance(module_or_params, list) else list(module_or_params.parameters())
    return [p.grad.clone() for p in params]


@pytest.mark.gpu
def test_make_graphed_callables_recipe_replays_bitwise_equal_to_eager():
    scope = {}
    exec(compile(recipe("make_graphed_callables"), "README:make_graphed_callables", "exec"), scope)
    head, graphed = scope["head"], scope["graphed_head"]
    embeddings = torch.randn(8 * 64, 128, device="cuda")
    results = []
    for call in (graphed, head):
        x = embeddings.clone().requires_grad_()
        loss = call(x)
        loss.backward()
        results.append((loss.detach(), x.grad, *grads(head)))
        head.zero_grad(set_to_none=True)
    for replayed, eager in zip(*results):
        assert torch.equal(replayed, eager)


@pytest.mark.gpu
def test_reduce_overhead_recipe_replays_bitwise_equal_to_eager():
    scope = {}
    exec(compile(recipe("reduce-overhead"), "README:reduce-overhead", "exec"), scope)
    compiled, forward = scope["compiled_forward"], scope["forward"]
    params = [*scope["backbone"].parameters(), *scope["prototypes"].parameters()]
    images = torch.randn(8 * 64, 256, device="cuda")
    results = []
    for call in (compiled, compiled, forward):  # a replay, another, then eager
        loss = call(images)
        loss.backward()
        results.append((loss.detach().clone(), *grads(params)))
        for p in params:
            p.grad = None
    for first, second in zip(results[0], results[1]):
        assert torch.equal(first, second)  # replays are bitwise reproducible
    for replayed, eager in zip(results[0], results[2]):
        difference = (replayed.double() - eager.double()).abs().max().item()
        assert torch.equal(replayed, eager), f"compiled replay differs from eager by {difference:.3g}"
