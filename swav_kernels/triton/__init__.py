"""Triton kernels for the three kernel families (DESIGN §2), JIT-compiled for any CUDA GPU.

Under ``TRITON_INTERPRET=1`` (set before the kernels are first used) they run on CPU
tensors in Triton's interpreter, which is how they are tested on machines without a GPU.
Nothing here imports triton until a kernel is launched.
"""
