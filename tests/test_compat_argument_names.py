"""Every adapter's argument errors name the argument as the trainer's caller wrote it, in the
upstream's API (``preds[2]``, ``assignments[0]``, ``num_iters``, ``sinkhorn_epsilon``,
``high_resolution_outputs[0]``, ``loss_config.num_iters``, ``args.epsilon``, ...), never in the
core's words (``inputs``, ``codes``, ``scores``, ``iterations``, ``nmb_crops``). Each case passes
one wrong argument of one kind (type, rank, dtype, shape, device, count, a setting out of range)
and reads the message. Needs none of the upstream packages."""
import argparse
import re

import pytest
import torch

from swav_kernels.compat import dinov2, facebook_swav, lightly, solo_learn, vissl

B, K, D = 4, 6, 5


def scores(rows=B, columns=K, **kwargs):
    return torch.randn(rows, columns, **kwargs)


def meta(rows=B, columns=K):
    """A tensor on another device than the CPU ones (meta: no memory, no GPU needed)."""
    return torch.empty(rows, columns, device="meta")


# the core API's argument names, as its errors use them ("inputs[2] has shape ...", "iterations must be ...")
CORE_NAMES = ("inputs", "codes", "scores", "iterations", "nmb_crops", "crops_for_assign", "queue_scores")


def core_names_in(message):
    return {match.group(1) for match in re.finditer(
        r"(?<![\w.])(" + "|".join(CORE_NAMES) + r")(\[\d+\])? (must|has|is|holds)\b", message)}


def check_message(call, error, starts_with, upstream_names=()):
    """``call()`` raises ``error`` whose message starts with the upstream's name of the argument
    and calls no argument by a core name, except names the upstream shares."""
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert message.startswith(starts_with), message
    assert not core_names_in(message) - set(upstream_names), message


# ---- lightly: SwaVLoss(temperature, sinkhorn_iterations, sinkhorn_epsilon)(high, low, queue); sinkhorn(out, ...)
def lightly_call(high=None, low=None, queue=None, **settings):
    high = [scores(), scores()] if high is None else high
    low = [scores(), scores()] if low is None else low
    return lambda: lightly.SwaVLoss(**settings)(high, low, queue)


LIGHTLY = {
    "not a tensor": (lightly_call(high=[scores(), "crop"]), TypeError, "high_resolution_outputs[1] must be a torch.Tensor"),
    "rank": (lightly_call(low=[torch.randn(K), scores()]), ValueError, "low_resolution_outputs[0] must be 2-D"),
    "integer dtype": (lightly_call(low=[scores(), torch.ones(B, K, dtype=torch.long)]), TypeError,
                      "low_resolution_outputs[1] must be float16, bfloat16, float32 or float64"),
    "mixed dtypes": (lightly_call(low=[scores(dtype=torch.float64), scores()]), TypeError,
                     "low_resolution_outputs[0] has dtype torch.float64 but high_resolution_outputs[0]"),
    "shape": (lightly_call(low=[scores(), scores(columns=K + 1)]), ValueError,
              "low_resolution_outputs[1] has shape (4, 7) but high_resolution_outputs[0] has (4, 6)"),
    "device": (lightly_call(low=[meta(), scores()]), ValueError,
               "low_resolution_outputs[0] is on meta but high_resolution_outputs[0] is on cpu"),
    "not a list": (lightly_call(high=3), TypeError, "high_resolution_outputs must be a list"),
    "one crop": (lightly_call(high=[scores()], low=[]), ValueError, "high_resolution_outputs and low_resolution_outputs"),
    "queue rank": (lightly_call(queue=[scores(8), torch.randn(1, 8, K)]), ValueError, "queue_outputs[1] must be 2-D"),
    "queue width": (lightly_call(queue=[scores(8, K + 1), scores(8, K + 1)]), ValueError,
                    "queue_outputs must be tensors of one shape (L, K=6"),
    "queue device": (lightly_call(queue=[meta(8), meta(8)]), ValueError,
                     "queue_outputs[0] is on meta but high_resolution_outputs[0] is on cpu"),
    "temperature": (lightly_call(temperature=0.0), ValueError, "temperature must be a finite number > 0"),
    "sinkhorn_epsilon": (lightly_call(sinkhorn_epsilon=-0.05), ValueError, "sinkhorn_epsilon must be a finite number > 0"),
    "sinkhorn_iterations": (lightly_call(sinkhorn_iterations=-1), ValueError, "sinkhorn_iterations must be >= 0"),
    "sinkhorn_iterations type": (lightly_call(sinkhorn_iterations=2.5), TypeError, "sinkhorn_iterations must be an int"),
    "sinkhorn out": (lambda: lightly.sinkhorn(torch.randn(2, B, K)), ValueError, "out must be 2-D"),
    "sinkhorn iterations": (lambda: lightly.sinkhorn(scores(), iterations=-3), ValueError, "iterations must be >= 0"),
    "sinkhorn epsilon": (lambda: lightly.sinkhorn(scores(), epsilon=0), ValueError, "epsilon must be a finite number"),
}


@pytest.mark.parametrize("kind", LIGHTLY)
def test_lightly_errors_use_lightlys_names(kind):
    call, error, starts_with = LIGHTLY[kind]
    check_message(call, error, starts_with, upstream_names={"iterations"} if kind == "sinkhorn iterations" else ())


def test_lightly_settings_changed_on_an_instance_are_named_at_forward():
    """patch() runs our forward on instances lightly built: their attributes are checked there."""
    loss = lightly.SwaVLoss()
    loss.sinkhorn_epsilon = 0.0
    check_message(lambda: loss([scores(), scores()], []), ValueError, "sinkhorn_epsilon must be")


# ---- solo-learn: swav_loss_func(preds, assignments, temperature); SinkhornKnopp(num_iters, epsilon)(Q)
def solo_call(preds=None, assignments=None, temperature=0.1):
    preds = [scores() for _ in range(4)] if preds is None else preds
    assignments = [scores().softmax(1), scores().softmax(1)] if assignments is None else assignments
    return lambda: solo_learn.swav_loss_func(preds, assignments, temperature)


SOLO = {
    "not a tensor": (solo_call(preds=[scores(), scores(), None, scores()]), TypeError, "preds[2] must be a torch.Tensor"),
    "rank": (solo_call(preds=[scores(), torch.randn(1, B, K), scores()]), ValueError, "preds[1] must be 2-D"),
    "integer dtype": (solo_call(preds=[scores(), torch.ones(B, K, dtype=torch.int32)]), TypeError, "preds[1] must be float16"),
    "shape": (solo_call(preds=[scores(), scores(B + 1)]), ValueError, "preds[1] has shape (5, 6) but preds[0] has (4, 6)"),
    "device": (solo_call(preds=[scores(), meta()]), ValueError, "preds[1] is on meta but preds[0] is on cpu"),
    "one view": (solo_call(preds=[scores()]), ValueError, "preds must hold at least 2 views"),
    "not a list": (solo_call(preds=None, assignments=7), TypeError, "assignments must be a list"),
    "no assignments": (solo_call(assignments=[]), ValueError, "assignments is empty"),
    "assignment dtype": (solo_call(assignments=[torch.ones(B, K, dtype=torch.long)]), TypeError,
                         "assignments[0] must be float16"),
    "assignment shape": (solo_call(assignments=[scores(), scores(columns=K - 1)]), ValueError,
                         "assignments[1] has shape (4, 5) but preds[0] has (4, 6)"),
    "assignment device": (solo_call(assignments=[meta()]), ValueError, "assignments[0] is on meta but preds[0] is on cpu"),
    "temperature": (solo_call(temperature=-1.0), ValueError, "temperature must be a finite number > 0"),
    "num_iters": (lambda: solo_learn.SinkhornKnopp(num_iters=-1), ValueError, "num_iters must be >= 0"),
    "epsilon": (lambda: solo_learn.SinkhornKnopp(epsilon=0.0), ValueError, "epsilon must be a finite number > 0"),
    "Q rank": (lambda: solo_learn.SinkhornKnopp()(torch.randn(K)), ValueError, "Q must be 2-D"),
    "Q empty": (lambda: solo_learn.SinkhornKnopp()(torch.randn(0, K)), ValueError, "Q must have at least one row"),
}


@pytest.mark.parametrize("kind", SOLO)
def test_solo_learn_errors_use_solo_learns_names(kind):
    call, error, starts_with = SOLO[kind]
    check_message(call, error, starts_with)


# ---- facebookresearch/swav main_swav.py: distributed_sinkhorn(out, ...); swav_loss_block(output, ..., args)
def main_swav_args(**changes):
    values = dict(nmb_crops=[2, 2], crops_for_assign=[0, 1], temperature=0.1, epsilon=0.05, sinkhorn_iterations=3)
    values.update(changes)
    return argparse.Namespace(**values)


def block_call(output=None, embedding=None, prototypes=None, queue=None, args=None, **keywords):
    embedding = torch.nn.functional.normalize(torch.randn(4 * B, D), dim=1) if embedding is None else embedding
    prototypes = torch.randn(K, D) if prototypes is None else prototypes
    output = embedding @ prototypes.t() if output is None else output
    args = main_swav_args() if args is None else args
    return lambda: facebook_swav.swav_loss_block(output, embedding, prototypes, queue, False, args, **keywords)


FACEBOOK = {
    "out rank": (lambda: facebook_swav.distributed_sinkhorn(torch.randn(2, B, K)), ValueError, "out must be 2-D"),
    "sinkhorn_iterations": (lambda: facebook_swav.distributed_sinkhorn(scores(), sinkhorn_iterations=-1), ValueError,
                            "sinkhorn_iterations must be >= 0"),
    "epsilon": (lambda: facebook_swav.distributed_sinkhorn(scores(), epsilon=0.0), ValueError, "epsilon must be"),
    "output dtype": (block_call(output=torch.ones(4 * B, K, dtype=torch.long)), TypeError, "output must be float16"),
    "output rows": (block_call(output=scores(4 * B + 1)), ValueError, "output (17, 6) and embedding (16, 5)"),
    "embedding device": (block_call(embedding=meta(4 * B, D), output=scores(4 * B)), ValueError,
                         "embedding is on meta but output is on cpu"),
    "prototypes shape": (block_call(output=scores(4 * B), prototypes=torch.randn(K + 1, D), queue=torch.zeros(2, 8, D)),
                         ValueError, "prototypes must have shape (K=6, D=5)"),
    "queue shape": (block_call(queue=torch.zeros(3, 8, D)), ValueError, "queue must have shape (len(crops_for_assign)=2"),
    "args.nmb_crops": (block_call(args=main_swav_args(nmb_crops=[1])), ValueError, "args.nmb_crops must add up to at least 2"),
    "args.crops_for_assign": (block_call(args=main_swav_args(crops_for_assign=[0, 5])), ValueError,
                              "args.crops_for_assign holds [5], outside the 4 crops"),
    "args.temperature": (block_call(args=main_swav_args(temperature=0)), ValueError, "args.temperature must be"),
    "args.epsilon": (block_call(args=main_swav_args(epsilon=float("nan"))), ValueError, "args.epsilon must be"),
    "args.sinkhorn_iterations": (block_call(args=main_swav_args(sinkhorn_iterations=-2)), ValueError,
                                 "args.sinkhorn_iterations must be >= 0"),
    "keyword epsilon": (block_call(epsilon=-1.0), ValueError, "epsilon must be a finite number > 0"),
    "keyword crops_for_assign": (block_call(crops_for_assign=[1, 1]), ValueError, "crops_for_assign must not repeat"),
}


@pytest.mark.parametrize("kind", FACEBOOK)
def test_main_swav_errors_use_main_swavs_names(kind):
    call, error, starts_with = FACEBOOK[kind]
    check_message(call, error, starts_with, upstream_names={"crops_for_assign"} if kind.startswith("keyword") else ())


# ---- VISSL: SwAVLoss(loss_config)(output); SwAVCriterion(temperature, ..., num_iters, ...)(scores, head_id)
def vissl_config(**changes):
    values = {"temperature": 0.1, "crops_for_assign": [0, 1], "num_crops": 4, "num_iters": 3, "epsilon": 0.05,
              "use_double_precision": False, "num_prototypes": [K], "embedding_dim": D,
              "temp_hard_assignment_iters": 0, "output_dir": "", "queue": {"local_queue_length": 0, "start_iter": 0}}
    values.update(changes)
    return values


def vissl_forward(output, **changes):
    return lambda: vissl.SwAVLoss(vissl_config(**changes))(output)


def criterion(**changes):
    values = dict(temperature=0.1, crops_for_assign=[0, 1], num_crops=4, num_iters=3, epsilon=0.05,
                  use_double_prec=False, num_prototypes=[K], local_queue_length=0, embedding_dim=D,
                  temp_hard_assignment_iters=0, output_dir="")
    values.update(changes)
    return lambda: vissl.SwAVCriterion(**values)


VISSL = {
    "loss_config.num_iters": (lambda: vissl.SwAVLoss(vissl_config(num_iters=-1)), ValueError,
                              "loss_config.num_iters must be >= 0"),
    "loss_config.epsilon": (lambda: vissl.SwAVLoss(vissl_config(epsilon=0)), ValueError, "loss_config.epsilon must be"),
    "loss_config.temperature": (lambda: vissl.SwAVLoss(vissl_config(temperature="0.1")), TypeError,
                                "loss_config.temperature must be a positive number"),
    "loss_config.num_crops": (lambda: vissl.SwAVLoss(vissl_config(num_crops=1)), ValueError,
                              "loss_config.num_crops must add up to at least 2 crops"),
    "loss_config.crops_for_assign": (lambda: vissl.SwAVLoss(vissl_config(crops_for_assign=[0, 9])), ValueError,
                                     "loss_config.crops_for_assign holds [9]"),
    "loss_config.num_prototypes": (lambda: vissl.SwAVLoss(vissl_config(num_prototypes=[])), ValueError,
                                   "loss_config.num_prototypes must be a list of prototype counts"),
    "loss_config.queue.local_queue_length": (
        lambda: vissl.SwAVLoss(vissl_config(queue={"local_queue_length": -8, "start_iter": 0})), ValueError,
        "loss_config.queue.local_queue_length must be >= 0"),
    "output[1] width": (vissl_forward([None, scores(4 * B, K + 1)]), ValueError,
                        "output[1] must have shape (num_crops·B, K) with num_crops=4 and this head's num_prototypes K=6"),
    "output[1] dtype": (vissl_forward([None, torch.ones(4 * B, K, dtype=torch.long)]), TypeError, "output[1] must be float16"),
    "output[2] device": (vissl_forward([None, scores(4 * B), meta(4 * B)], num_prototypes=[K, K]), ValueError,
                         "output[2] is on meta but output[1] is on cpu"),
    "output heads": (vissl_forward([None, scores(4 * B), scores(4 * B)]), ValueError, "output holds 2 head(s)"),
    "output[0] with a queue": (vissl_forward([scores(4 * B, D + 1), scores(4 * B)],
                                             queue={"local_queue_length": 8, "start_iter": 0}), ValueError,
                               "output[0] (the embedding) must have shape (num_crops·B=16, loss_config.embedding_dim=5)"),
    "criterion num_iters": (criterion(num_iters=-1), ValueError, "num_iters must be >= 0"),
    "criterion crops_for_assign": (criterion(crops_for_assign=[4]), ValueError, "crops_for_assign holds [4]"),
    "criterion scores": (lambda: criterion()()(torch.randn(4 * B), 0), ValueError, "scores must be 2-D"),
}


@pytest.mark.parametrize("kind", VISSL)
def test_vissl_errors_use_vissls_names(kind):
    call, error, starts_with = VISSL[kind]
    shared = {"scores": "criterion scores", "crops_for_assign": "criterion crops_for_assign"}  # SwAVCriterion's own
    check_message(call, error, starts_with, upstream_names={name for name, case in shared.items() if case == kind})


# ---- DINOv2: sinkhorn_knopp_teacher(teacher_output, teacher_temp, n_iterations), the iBOT one with n_masked_patches_tensor
DINOV2 = {
    "teacher_output rank": (lambda: dinov2.sinkhorn_knopp_teacher(torch.randn(K), 0.07), ValueError,
                            "teacher_output must be 2-D"),
    "teacher_output dtype": (lambda: dinov2.sinkhorn_knopp_teacher(torch.ones(B, K, dtype=torch.long), 0.07), TypeError,
                             "teacher_output must be float16"),
    "teacher_output empty": (lambda: dinov2.sinkhorn_knopp_teacher(torch.randn(B, 0), 0.07), ValueError,
                             "teacher_output must have at least one row and one column"),
    "teacher_temp": (lambda: dinov2.sinkhorn_knopp_teacher(scores(), 0.0), ValueError, "teacher_temp must be"),
    "n_iterations": (lambda: dinov2.sinkhorn_knopp_teacher(scores(), 0.07, -1), ValueError, "n_iterations must be >= 0"),
    "ibot n_iterations": (lambda: dinov2.ibot_sinkhorn_knopp_teacher(scores(), 0.07, torch.tensor([B]), 1.5), TypeError,
                          "n_iterations must be an int"),
    "n_masked_patches_tensor": (lambda: dinov2.ibot_sinkhorn_knopp_teacher(scores(), 0.07, B), TypeError,
                                "n_masked_patches_tensor must be a real torch.Tensor"),
    "patched method": (lambda: dinov2._dino_method(None, scores(), -0.07), ValueError, "teacher_temp must be"),
}


@pytest.mark.parametrize("kind", DINOV2)
def test_dinov2_errors_use_dinov2s_names(kind):
    call, error, starts_with = DINOV2[kind]
    check_message(call, error, starts_with)
