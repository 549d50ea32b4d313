"""One float32 allocation for every intermediate of a call (column statistics, potentials, codes,
loss rows, split partials): one allocator call instead of a dozen, and buffers whose alignment is
known when the kernels are compiled (each starts on a 128-byte boundary)."""
from __future__ import annotations

import math

import torch

ALIGN_ELEMENTS = 32  # 128 bytes of float32


class Workspace:
    """Named float32 regions at fixed offsets of one flat buffer."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self.offsets: list[int] = []
        self.size = 0

    def add(self, *shape: int) -> int:
        """Reserve a region of ``shape``; returns its number (its index in ``views``/``addresses``)."""
        self.offsets.append(self.size)
        self.shapes.append(tuple(int(s) for s in shape))
        numel = math.prod(self.shapes[-1])
        self.size += -(-max(numel, 1) // ALIGN_ELEMENTS) * ALIGN_ELEMENTS
        return len(self.shapes) - 1

    def allocate(self, device: torch.device) -> torch.Tensor:
        return torch.empty(max(self.size, 1), device=device, dtype=torch.float32)

    def view(self, buffer: torch.Tensor, region: int) -> torch.Tensor:
        """Region ``region`` of ``buffer`` as a tensor of its shape."""
        offset, shape = self.offsets[region], self.shapes[region]
        return buffer.narrow(0, offset, math.prod(shape)).view(shape)

    def views(self, buffer: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.view(buffer, region) for region in range(len(self.shapes)))

    def addresses(self, buffer: torch.Tensor) -> tuple[int, ...]:
        base = buffer.data_ptr()
        return tuple(base + 4 * offset for offset in self.offsets)
