"""One allocation for every intermediate of a call (column statistics, potentials, codes, loss rows,
split partials, int32 tickets): one allocator call instead of a dozen, and buffers whose alignment is
known when the kernels are compiled (each region starts on a 128-byte boundary)."""
from __future__ import annotations

import math

import torch

from .launcher import Buffer

ALIGN_ELEMENTS = 32  # 128 bytes of float32


class Workspace:
    """Regions of 4-byte elements (float32, or int32 where asked) at fixed offsets of one flat float32
    buffer. Region r is the call's buffer ``first_buffer + r`` (the buffers before it are the call's
    input tensors)."""

    def __init__(self, first_buffer: int) -> None:
        self.first_buffer = first_buffer
        self.shapes: list[tuple[int, ...]] = []
        self.dtypes: list[torch.dtype] = []
        self.offsets: list[int] = []  # in elements
        self.byte_offsets: list[int] = []
        self.size = 0

    def add(self, *shape: int, dtype: torch.dtype = torch.float32) -> Buffer:
        """Reserve a region of ``shape`` (float32, or int32); returns its placeholder."""
        self.dtypes.append(dtype)
        self.offsets.append(self.size)
        self.byte_offsets.append(4 * self.size)
        self.shapes.append(tuple(int(s) for s in shape))
        numel = math.prod(self.shapes[-1])
        self.size += -(-max(numel, 1) // ALIGN_ELEMENTS) * ALIGN_ELEMENTS
        return Buffer(self.first_buffer + len(self.shapes) - 1)

    def span(self, first: Buffer, last: Buffer) -> int:
        """Elements from the start of region ``first`` to the end of region ``last`` (padding included)."""
        start = self.offsets[first.index - self.first_buffer]
        index = last.index - self.first_buffer
        return self.offsets[index] + math.prod(self.shapes[index]) - start

    def allocate(self, like: torch.Tensor) -> torch.Tensor:
        """The flat buffer, on the device of the float32 tensor ``like`` (``new_empty`` parses faster
        than ``torch.empty(device=…, dtype=…)``)."""
        return like.new_empty(max(self.size, 1))

    def view(self, buffer: torch.Tensor, region: Buffer) -> torch.Tensor:
        """Region ``region`` of ``buffer`` as a tensor of its shape."""
        index = region.index - self.first_buffer
        shape = self.shapes[index]
        return buffer.narrow(0, self.offsets[index], math.prod(shape)).view(self.dtypes[index]).view(shape)

    def views(self, buffer: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.view(buffer, Buffer(self.first_buffer + r)) for r in range(len(self.shapes)))

    def addresses(self, buffer: torch.Tensor) -> tuple[int, ...]:
        base = buffer.data_ptr()
        return tuple([base + offset for offset in self.byte_offsets])
