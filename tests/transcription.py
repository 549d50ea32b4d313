"""An independent float64 transcription of DESIGN §1, written as facebookresearch/swav's
``main_swav.py`` writes it (plain ``exp``, no log domain, no shared code with the package).

Only valid while ``exp(score / ε)`` fits in float64 (|score| < ~35 at ε = 0.05).
"""
import torch


def sinkhorn_f64(out: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """(N, K) scores → (N, K) codes, one process."""
    Q = torch.exp(out.double() / epsilon).t()  # K × N
    n_samples = Q.shape[1]
    n_prototypes = Q.shape[0]
    Q /= torch.sum(Q)
    for _ in range(iterations):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= n_prototypes
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= n_samples
    Q *= n_samples
    return Q.t()


def swav_loss_f64(scores, n_crops, crops_for_assign, temperature, epsilon, iterations, queue_scores=None):
    """scores (V·B, K), crop-major; queue_scores (|A|, L, K) or None. Differentiable in float64."""
    output = scores.double()
    bs = output.shape[0] // n_crops
    loss = 0
    for i, crop_id in enumerate(crops_for_assign):
        with torch.no_grad():
            out = output[bs * crop_id: bs * (crop_id + 1)].detach()
            if queue_scores is not None:
                out = torch.cat((queue_scores[i].double(), out))
            q = sinkhorn_f64(out, epsilon, iterations)[-bs:]
        subloss = 0
        for v in [x for x in range(n_crops) if x != crop_id]:
            x = output[bs * v: bs * (v + 1)] / temperature
            subloss -= torch.mean(torch.sum(q * torch.log_softmax(x, dim=1), dim=1))
        loss += subloss / (n_crops - 1)
    return loss / len(crops_for_assign)


def codes_f64(scores, n_crops, crops_for_assign, epsilon, iterations, queue_scores=None):
    """(|A|, B, K) codes of the batch rows of each assign crop."""
    bs = scores.shape[0] // n_crops
    codes = []
    for i, crop_id in enumerate(crops_for_assign):
        out = scores[bs * crop_id: bs * (crop_id + 1)].double()
        if queue_scores is not None:
            out = torch.cat((queue_scores[i].double(), out))
        codes.append(sinkhorn_f64(out, epsilon, iterations)[-bs:])
    return torch.stack(codes)
