"""bf16 vs fp32 matrix-multiply speed on this machine, and what stepdistill's default
(``bf16: null``) picks here. On CPUs with native bf16 (AVX512-BF16 / AMX) bf16 is several
times faster than fp32; without it torch emulates bf16 and is far slower (an AVX2-only
EPYC: over 100x; an AVX512 Xeon without AVX512-BF16, which oneDNN still calls supported:
3.7-6x). Usage:

    python benchmarks/precision.py
"""

from __future__ import annotations

import json
import time


def gflops(dtype_name: str, size: int, seconds: float = 2.0) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - started) / 1e9


def main() -> None:
    import torch

    from stepdistill.device import NATIVE_BF16_FLAGS, bf16_supported, onednn_bf16, x86_cpu_flags

    size = 1024
    fp32, bf16 = gflops("float32", size), gflops("bfloat16", size)
    print(
        json.dumps(
            {
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "cpu_bf16_flags": sorted((x86_cpu_flags() or frozenset()) & NATIVE_BF16_FLAGS),
                "onednn_says_bf16": onednn_bf16(),
                "threads": torch.get_num_threads(),
                "matmul_size": size,
                "fp32_gflops": round(fp32, 1),
                "bf16_gflops": round(bf16, 1),
                "bf16_over_fp32": round(bf16 / fp32, 3),
                "stepdistill_default_bf16": bf16_supported(),
            }
        )
    )


if __name__ == "__main__":
    main()
