"""Precision: bf16 where the hardware computes it natively, fp32 elsewhere.

bf16 is ~4x faster than fp32 on CPUs with bf16 instructions (AVX512-BF16, AMX) and on
recent GPUs, but a CPU without them (e.g. an AVX2-only EPYC) emulates it: there a bf16
matmul ran over 100x *slower* than fp32 (``python benchmarks/precision.py``). ``bf16: null``
(the default) therefore means "bf16 if supported"; true or false force it.
"""

from __future__ import annotations

import functools
import warnings


@functools.cache
def bf16_supported(device: str = "cpu") -> bool:
    """Whether ``device`` has native bf16 arithmetic."""
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    try:  # oneDNN's own test: AVX512-BF16 / AMX (or AVX512 cores it runs bf16 on well)
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def use_bf16(setting: bool | None, device: str = "cpu") -> bool:
    """Resolve a ``bf16`` setting: None → bf16 if supported; True on hardware without it
    is honoured, with a warning that it will be slow."""
    if setting is None:
        return bf16_supported(device)
    if setting and not bf16_supported(device):
        warnings.warn(
            f"bf16 was asked for, but this {device.upper()} has no native bf16 arithmetic: expect it to run many "
            "times slower than fp32 (set bf16 to null or false)",
            stacklevel=2,
        )
    return bool(setting)
