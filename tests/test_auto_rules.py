"""``backend="auto"`` on a GPU: the rule table of swav_kernels/auto_rules.py, per shape."""
import pathlib

import pytest
import torch

from problems import make_problem
from swav_kernels import Backend, swav_loss
from swav_kernels.auto_rules import RULES, AutoBackend, rule_for

ROOT = pathlib.Path(__file__).resolve().parents[1]


class Recording(Backend):
    """The reference, recording which of its entry points ran (its loss from embeddings is its loss from
    scores)."""

    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def assignment_codes(self, rows, epsilon, iterations, process_group):
        self.calls.append((self.name, "codes"))
        return super().assignment_codes(rows, epsilon, iterations, process_group)

    def loss_from_scores(self, scores, codes, spec):
        self.calls.append((self.name, "loss"))
        return super().loss_from_scores(scores, codes, spec)

    def prepare_embeddings_loss(self, embeddings, prototypes, queue, spec, with_grad):
        self.calls.append((self.name, "prepare"))
        return None  # the generic path: codes, then loss

    def prepare_scores_loss(self, scores, queue_scores, spec, with_grad):
        self.calls.append((self.name, "prepare"))
        return None

    def shift_queue(self, queue, embeddings, crops, batch):
        self.calls.append((self.name, "shift"))
        return super().shift_queue(queue, embeddings, crops, batch)


def test_every_rule_cites_a_measurement_and_says_what_is_unmeasured():
    assert RULES[-1].max_prototypes is None  # the last rule takes any shape
    for rule in RULES:
        assert "benchmarks/results/2026-12-04-h200" in rule.evidence
        assert "redesigned cuda backend: unmeasured" in rule.evidence
        assert set(rule.order) == {"triton", "cuda"}
    for results in ("2026-11-29-h200", "2026-12-04-h200", "2026-12-04-h200-f5ce584"):  # committed, as cited
        assert (ROOT / "benchmarks" / "results" / results / "README.md").is_file()


def test_rule_for_shapes():
    assert rule_for(1) is RULES[0] and rule_for(3000) is RULES[0] and rule_for(4096) is RULES[0]
    assert rule_for(4097) is RULES[1] and rule_for(65536) is RULES[1]


def test_the_first_available_backend_of_the_rule_runs_codes_and_loss_of_a_call():
    calls = []
    auto = AutoBackend({"cuda": Recording("cuda", calls), "triton": Recording("triton", calls)})
    p = make_problem(n_crops=3, batch=2, prototypes=7, dim=4)
    # through swav_loss's orchestration, as "auto" resolves on a GPU
    from swav_kernels import registry

    registry.register_backend("auto-test", lambda: auto)
    try:
        swav_loss(p.embeddings, p.prototypes, nmb_crops=3, backend="auto-test")
        swav_loss(p.scores, nmb_crops=3, backend="auto-test")
    finally:
        registry.unregister_backend("auto-test")
    assert calls == [("triton", "prepare"), ("triton", "codes"), ("triton", "loss")] * 2
    only_cuda = AutoBackend({"cuda": Recording("cuda", calls)})
    assert only_cuda.choose(3000).name == "cuda" and only_cuda.choose(65536).name == "cuda"
    unnamed = AutoBackend({"mine": Recording("mine", calls), "cuda": Recording("cuda", calls)})
    assert unnamed.choose(10).name == "cuda"  # named by the rule, before the unnamed ones
    assert AutoBackend({"mine": Recording("mine", calls)}).choose(10).name == "mine"
    with pytest.raises(ValueError, match="at least one candidate"):
        AutoBackend({})


def test_auto_on_a_cuda_device_resolves_to_the_rule_table():
    """The registry's "auto" on a device where kernel backends apply: an AutoBackend over them (here a
    stand-in available everywhere, as no kernel backend applies to CUDA tensors without a GPU)."""
    from swav_kernels import registry

    calls = []
    registry.register_backend("everywhere", lambda: Recording("everywhere", calls), auto_rank=-1)
    try:
        chosen = registry.resolve_backend("auto", torch.device("cuda"), torch.float32)
        assert isinstance(chosen, AutoBackend) and list(chosen.candidates)[0] == "everywhere"
        assert chosen.choose(3000).name == "everywhere" and chosen.choose(65536).name == "everywhere"
    finally:
        registry.unregister_backend("everywhere")
        registry._RESOLVED.clear()
