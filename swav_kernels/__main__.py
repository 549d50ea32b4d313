"""``python -m swav_kernels``: run the SwAV loss once on a built-in example and print it.

The example is the paper's per-GPU ImageNet shape (``swav-4096`` in DESIGN §5: B=64 images,
2+6 crops, K=3000 prototypes, D=128) with random unit embeddings; the loss and its
gradients are checked against a float64 evaluation of the reference.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from . import reference
from .loss import swav_loss
from .registry import backend_names, resolve_backend


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m swav_kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="auto", choices=backend_names())
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=64, help="images per step (B)")
    parser.add_argument("--nmb-crops", type=int, nargs="+", default=[2, 6])
    parser.add_argument("--prototypes", type=int, default=3000, help="K")
    parser.add_argument("--feat-dim", type=int, default=128, help="D")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.batch < 1 or args.prototypes < 1 or args.feat_dim < 1:
        parser.error("--batch, --prototypes and --feat-dim must be >= 1")

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    n_crops = sum(args.nmb_crops)
    g = torch.Generator().manual_seed(args.seed)
    z = F.normalize(torch.randn(n_crops * args.batch, args.feat_dim, generator=g), dim=1)
    c = F.normalize(torch.randn(args.prototypes, args.feat_dim, generator=g), dim=1)
    z = z.to(device, dtype).requires_grad_()
    c = c.to(device, dtype).requires_grad_()

    backend = resolve_backend(args.backend, device, dtype)
    start = time.perf_counter()
    loss = swav_loss(z, c, nmb_crops=args.nmb_crops, backend=backend.name)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start

    z64 = z.detach().double().requires_grad_()
    c64 = c.detach().double().requires_grad_()
    loss64 = reference.swav_loss_from_embeddings_reference(z64, c64, n_crops)
    loss64.backward()

    def err(a, b):
        return ((a.double() - b).abs().max() / b.abs().max()).item()

    print(f"SwAV loss, B={args.batch} crops={args.nmb_crops} K={args.prototypes} D={args.feat_dim} "
          f"{args.dtype} on {device} with backend={backend.name}")
    print(f"  loss          {loss.item():.6f}   (ln K = {torch.log(torch.tensor(float(args.prototypes))):.4f})")
    print(f"  |dL/dZ|       {z.grad.float().norm():.6e}   |dL/dC| {c.grad.float().norm():.6e}")
    print(f"  vs float64    loss {abs(loss.item() - loss64.item()) / abs(loss64.item()):.2e}  "
          f"dZ {err(z.grad, z64.grad):.2e}  dC {err(c.grad, c64.grad):.2e}  (relative)")
    print(f"  forward+backward {elapsed * 1e3:.1f} ms (first call, includes any compilation)")


if __name__ == "__main__":
    main()
