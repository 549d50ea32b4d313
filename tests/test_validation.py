"""Every bad argument raises TypeError/ValueError naming the argument, before any compute."""
import pytest
import torch

from swav_kernels import SwAVLoss, sinkhorn, swav_loss

Z = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
C = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
S = Z @ C.t()


def nonfinite(value):
    t = S.clone()
    t[1, 2] = value
    return t


LOSS_CASES = {
    "inputs not a tensor": (dict(inputs=S.numpy(), nmb_crops=2), TypeError, "inputs must be a torch.Tensor, got ndarray"),
    "list of lists": (dict(inputs=S.tolist(), nmb_crops=2), TypeError, r"inputs\[0\] must be a torch.Tensor"),
    "integer inputs": (dict(inputs=S.long(), nmb_crops=2), TypeError, "inputs must be float16"),
    "1-D inputs": (dict(inputs=S.flatten(), nmb_crops=2), ValueError, "inputs must be 2-D"),
    "3-D inputs": (dict(inputs=S[None], nmb_crops=2), ValueError, "inputs must be 2-D"),
    "empty list": (dict(inputs=[], nmb_crops=2), ValueError, "inputs is an empty list"),
    "ragged list": (dict(inputs=[S[:4], S[:3]]), ValueError, r"inputs\[1\] has shape"),
    "list dtype mismatch": (dict(inputs=[S[:4], S[4:].double()]), TypeError, r"inputs\[1\] has dtype"),
    "list vs nmb_crops": (dict(inputs=[S[:4], S[4:]], nmb_crops=3), ValueError, "nmb_crops adds up to 3"),
    "nmb_crops missing": (dict(inputs=S), ValueError, "nmb_crops is required"),
    "batch not divisible": (dict(inputs=S, nmb_crops=3), ValueError, "not a positive multiple of the 3 crops"),
    "nmb_crops one crop": (dict(inputs=S, nmb_crops=[1]), ValueError, "nmb_crops must add up to at least 2"),
    "nmb_crops negative": (dict(inputs=S, nmb_crops=[4, -2]), ValueError, "nmb_crops must hold non-negative"),
    "nmb_crops float": (dict(inputs=S, nmb_crops=2.0), TypeError, "nmb_crops must be an int"),
    "nmb_crops bool": (dict(inputs=S, nmb_crops=True), TypeError, "nmb_crops"),
    "assign out of range": (dict(inputs=S, nmb_crops=2, crops_for_assign=(0, 2)), ValueError,
                            r"crops_for_assign holds \[2\]"),
    "assign negative": (dict(inputs=S, nmb_crops=2, crops_for_assign=(-1,)), ValueError, "crops_for_assign holds"),
    "assign repeated": (dict(inputs=S, nmb_crops=2, crops_for_assign=(0, 0)), ValueError, "must not repeat"),
    "assign empty": (dict(inputs=S, nmb_crops=2, crops_for_assign=()), ValueError, "at least one crop"),
    "assign not ints": (dict(inputs=S, nmb_crops=2, crops_for_assign=(0.0,)), TypeError, "crops_for_assign must hold"),
    "temperature zero": (dict(inputs=S, nmb_crops=2, temperature=0.0), ValueError, "temperature must be"),
    "temperature negative": (dict(inputs=S, nmb_crops=2, temperature=-0.1), ValueError, "temperature"),
    "temperature nan": (dict(inputs=S, nmb_crops=2, temperature=float("nan")), ValueError, "temperature"),
    "temperature string": (dict(inputs=S, nmb_crops=2, temperature="0.1"), TypeError, "temperature"),
    "epsilon zero": (dict(inputs=S, nmb_crops=2, epsilon=0), ValueError, "epsilon must be"),
    "epsilon inf": (dict(inputs=S, nmb_crops=2, epsilon=float("inf")), ValueError, "epsilon"),
    "iterations negative": (dict(inputs=S, nmb_crops=2, sinkhorn_iterations=-1), ValueError,
                            "sinkhorn_iterations must be >= 0"),
    "iterations float": (dict(inputs=S, nmb_crops=2, sinkhorn_iterations=3.0), TypeError, "sinkhorn_iterations"),
    "nan scores": (dict(inputs=nonfinite(float("nan")), nmb_crops=2, check_finite_inputs=True), ValueError, "inputs contains NaN"),
    "inf scores": (dict(inputs=nonfinite(float("inf")), nmb_crops=2, check_finite_inputs=True), ValueError, "inputs contains NaN or infinite"),
    "prototypes wrong D": (dict(inputs=Z, prototypes=C[:, :3], nmb_crops=2), ValueError,
                           r"prototypes must have shape \(K >= 1, D=4\)"),
    "prototypes 3-D": (dict(inputs=Z, prototypes=C[None], nmb_crops=2), ValueError, "prototypes must be 2-D"),
    "prototypes dtype": (dict(inputs=Z, prototypes=C.double(), nmb_crops=2), TypeError, "prototypes has dtype"),
    "prototypes device": (dict(inputs=Z, prototypes=C.to("meta"), nmb_crops=2), ValueError, "prototypes is on meta"),
    "prototypes nan": (dict(inputs=Z, prototypes=C * float("nan"), nmb_crops=2, check_finite_inputs=True), ValueError,
                       "prototypes contains NaN"),
    "queue without prototypes": (dict(inputs=S, nmb_crops=2, queue=torch.zeros(2, 3, 6)), ValueError,
                                 "queue holds embeddings and needs prototypes"),
    "queue wrong shape": (dict(inputs=Z, prototypes=C, nmb_crops=2, queue=torch.zeros(2, 3, 5)), ValueError,
                          r"queue must have shape \(len\(crops_for_assign\)=2, L, D=4\)"),
    "queue wrong crops": (dict(inputs=Z, prototypes=C, nmb_crops=2, queue=torch.zeros(1, 3, 4)), ValueError,
                          "queue must have shape"),
    "queue nan": (dict(inputs=Z, prototypes=C, nmb_crops=2, queue=torch.full((2, 3, 4), float("nan")),
                       check_finite_inputs=True), ValueError,
                  "queue contains NaN"),
    "queue_scores wrong K": (dict(inputs=S, nmb_crops=2, queue_scores=torch.zeros(2, 3, 5)), ValueError,
                             r"queue_scores must have shape \(len\(crops_for_assign\)=2, L, K=6\)"),
    "queue and queue_scores": (dict(inputs=Z, prototypes=C, nmb_crops=2, queue=torch.zeros(2, 3, 4),
                                    queue_scores=torch.zeros(2, 3, 6)), ValueError, "either queue"),
    "unknown backend": (dict(inputs=S, nmb_crops=2, backend="fast"), ValueError, "backend must be one of"),
}


@pytest.mark.parametrize("case", sorted(LOSS_CASES))
def test_swav_loss_rejects(case):
    kwargs, error, message = LOSS_CASES[case]
    with pytest.raises(error, match=message):
        swav_loss(**kwargs)


SINKHORN_CASES = {
    "1-D": (dict(scores=S.flatten()), ValueError, "scores must be 2-D or 3-D"),
    "int": (dict(scores=S.int()), TypeError, "scores must be float16"),
    "no columns": (dict(scores=S[:, :0]), ValueError, "at least one row and one column"),
    "epsilon": (dict(scores=S, epsilon=-1.0), ValueError, "epsilon must be"),
    "iterations": (dict(scores=S, iterations=-2), ValueError, "iterations must be >= 0"),
    "nan": (dict(scores=nonfinite(float("nan")), check_finite_inputs=True), ValueError, "scores contains NaN"),
    "process group not initialised": (dict(scores=S, process_group=object()), ValueError,
                                      "torch.distributed is not initialized"),
}


@pytest.mark.parametrize("case", sorted(SINKHORN_CASES))
def test_sinkhorn_rejects(case):
    kwargs, error, message = SINKHORN_CASES[case]
    with pytest.raises(error, match=message):
        sinkhorn(backend="reference", **kwargs)


def test_module_rejects_bad_hyper_parameters():
    with pytest.raises(ValueError, match="crops_for_assign holds"):
        SwAVLoss(nmb_crops=[2], crops_for_assign=(0, 3))
    with pytest.raises(ValueError, match="temperature"):
        SwAVLoss(temperature=0)
    with pytest.raises(ValueError, match="queue_length must be >= 0"):
        SwAVLoss(queue_length=-5)
