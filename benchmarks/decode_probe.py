"""Per-token decoding latency of a student at batch 1: the library's generation (dynamic
KV cache) against a static KV cache with a compiled decoding step, on the same prompts,
and the memory-bandwidth bound of the machine (the time to read the bf16 weights once).

    python benchmarks/decode_probe.py --run-dir RUN --limit 16
"""

from __future__ import annotations

import argparse
import time


def bandwidth_gbs(megabytes: int = 512, repeats: int = 5) -> float:
    """Memory read bandwidth: summing a buffer far larger than the caches."""
    import torch

    buffer = torch.ones(megabytes * 2**20 // 2, dtype=torch.bfloat16)
    buffer.sum()
    started = time.perf_counter()
    for _ in range(repeats):
        buffer.sum()
    return megabytes * 2**20 * repeats / (time.perf_counter() - started) / 1e9


def main() -> None:
    import torch

    from stepdistill.data import load_splits
    from stepdistill.encode import encode_prompt
    from stepdistill.modes import LABEL_PREFIX
    from stepdistill.student import Student

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--operators", type=int, default=0, help="profile: the top N operators")
    parser.add_argument("--fp32", action="store_true", help="fp32 weights instead of bf16")
    parser.add_argument("--int8", action="store_true", help="int8 weights (inference.int8_weights)")
    parser.add_argument("--no-static", action="store_true", help="skip the static-cache row")
    args = parser.parse_args()
    student = Student.load(args.run_dir)
    model, tokenizer = student.model, student.tokenizer
    if args.fp32:
        model.float()
    if args.int8:
        from stepdistill.inference import int8_weights

        int8_weights(model)
    examples = load_splits(student.task)["test"][: args.limit]
    prompts = [
        torch.tensor([encode_prompt(tokenizer, LABEL_PREFIX, example.input, 512, False)])
        for example in examples
    ]
    weights_bytes = sum(
        t.numel() * t.element_size()
        for t in [*model.parameters(), *model.buffers()]
        if t.dim() == 2 or t.dtype == torch.int8
    )
    gbs = bandwidth_gbs()
    print(
        f"weights {weights_bytes / 1e6:.0f} MB; read bandwidth {gbs:.1f} GB/s -> "
        f"{1000 * weights_bytes / gbs / 1e9:.1f} ms per token at batch 1 (bound)"
    )

    def timed(label: str, **options) -> None:
        model.generate(prompts[0], max_new_tokens=4, do_sample=False, **options)  # warm-up
        started, written = time.perf_counter(), 0
        for ids in prompts:
            out = model.generate(
                ids,
                max_new_tokens=args.tokens,
                min_new_tokens=args.tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                **options,
            )
            written += out.shape[1] - ids.shape[1]
        seconds = time.perf_counter() - started
        print(f"{label:<32} {1000 * seconds / written:6.1f} ms per token ({written} tokens)")

    with torch.inference_mode():
        timed("dynamic cache (library)")
        if args.operators:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for ids in prompts[:4]:
                    model.generate(
                        ids,
                        max_new_tokens=args.tokens,
                        min_new_tokens=args.tokens,
                        do_sample=False,
                        pad_token_id=tokenizer.pad_token_id,
                    )
            print(
                prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.operators)
            )
        if args.no_static:
            return
        from transformers import CompileConfig

        started = time.perf_counter()
        compile_config = CompileConfig(dynamic=False, mode="default")
        compile_config._compile_all_devices = True
        timed(
            "static cache + compiled step",
            cache_implementation="static",
            max_cache_len=256,
            compile_config=compile_config,
        )
        print(f"(static row incl. compile: {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
