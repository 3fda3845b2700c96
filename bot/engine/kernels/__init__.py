"""Fused Triton kernels for the decode step on CUDA (the torch reference is bot/engine/ops.py).

Inside a CUDA graph every small kernel costs about 2 µs whatever it does, so a decode step is
as fast as its number of kernels allows: these fuse residual add + RMSNorm, rotary + KV write
and SiLU·mul, and attend each row over its own slot (split over the positions, then reduced),
so no length buckets and no gathered copies of the cache are needed.
"""
