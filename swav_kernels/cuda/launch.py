"""Launch helpers of the CUDA kernel wrappers: stream handle, device facts, scratch buffers."""
from __future__ import annotations

import functools

import torch


def stream_handle(device: torch.device) -> int:
    """PyTorch's current CUDA stream on ``device``, as the integer handle the bindings take."""
    return torch.cuda.current_stream(device).cuda_stream


@functools.lru_cache(maxsize=None)
def multiprocessor_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def workspace(floats: int, device: torch.device) -> torch.Tensor:
    """A float32 scratch buffer of ``floats`` elements (from PyTorch's caching allocator)."""
    return torch.empty(max(int(floats), 0), device=device, dtype=torch.float32)
