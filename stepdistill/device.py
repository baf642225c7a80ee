"""Where a student runs and in which precision, decided here and nowhere else.

Device: the ``device`` setting is ``auto`` (CUDA when available, else the CPU), ``cpu``,
``cuda``, ``cuda:N`` or ``mps``. Under a multi-process launch (``accelerate launch``,
``torchrun``) ``auto`` and ``cuda`` mean this process's own GPU, ``cuda:LOCAL_RANK``.
A device the machine does not have is a one-line error naming what it has.

Precision: bf16 where the device computes it natively, fp32 elsewhere. bf16 is ~4x
faster than fp32 on CPUs with bf16 instructions (AVX512-BF16, AMX) and on recent GPUs,
but a CPU without them emulates it: on an AVX2-only EPYC a bf16 matmul ran over 100x
*slower* than fp32, and on an AVX512 Xeon without AVX512-BF16 (where oneDNN still reports
bf16 as supported) 3.7-6x slower, and training 2.5x slower (``python
benchmarks/precision.py``, ``benchmarks/RESULTS.md``). So on x86 Linux the
CPU's own flags decide (``avx512_bf16`` or ``amx_bf16``), elsewhere oneDNN's test.
``bf16: null`` (the default) therefore means "bf16 if supported"; true or false force it.
How training uses it:

- CPU: bf16 parameters for compute, fp32 master weights for the optimizer
  (``master_weights.py``): bf16 autocast over fp32 weights would re-cast every weight in
  every pass, which is slower on a CPU.
- CUDA: fp32 parameters under bf16 autocast (fp16 autocast with gradient scaling on a GPU
  without bf16), TF32 matmuls on.

Inference (``inference.for_inference``) uses bf16 parameters wherever bf16 is on. One
difference remains on a GPU: validation during training runs under bf16 autocast over
the fp32 training parameters, while the test at the end (and a reloaded ``Student``)
casts the parameters to bf16, so the best step is chosen on numbers that can differ
slightly from the test's. On the CPU both are bf16 parameters.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import warnings
from typing import Any

from .encode import is_seq2seq

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


class DeviceError(ValueError):
    """A device (or a precision on it) this machine does not have."""


@functools.cache
def bf16_supported(device: str = "cpu") -> bool:
    """Whether ``device`` has native bf16 arithmetic."""
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device == "mps":
        return True
    flags = x86_cpu_flags()
    if flags is not None:  # oneDNN says yes on any AVX512 core, where bf16 trained 2.5x slower
        return bool(flags & NATIVE_BF16_FLAGS)
    return onednn_bf16()  # elsewhere (e.g. ARM with BF16), oneDNN's own test


def onednn_bf16() -> bool:
    """oneDNN's answer to "does this CPU have bf16" (yes on any AVX512 core)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def x86_cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str] | None:
    """The first x86 core's feature flags from ``cpuinfo``; None where there are none to read
    (not Linux, or not x86: ARM lists ``Features``, not ``flags``)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                key, colon, value = line.partition(":")
                if colon and key.strip() == "flags":
                    return frozenset(value.split())
    except OSError:
        pass
    return None


def use_bf16(setting: bool | None, device: str = "cpu") -> bool:
    """Resolve a ``bf16`` setting: None → bf16 if supported. True on a CPU without it is
    honoured, with a warning that it will be slow; on a GPU without it, it is an error
    (that GPU trains in fp16 with gradient scaling instead)."""
    if setting is None:
        return bf16_supported(device)
    if setting and not bf16_supported(device):
        if device.startswith("cuda"):
            raise DeviceError(
                f"bf16 was asked for on {device} ({gpu_name(device)}), which has no bf16: set bf16 "
                "to null (fp16 with gradient scaling there) or false"
            )
        warnings.warn(
            f"bf16 was asked for, but this {device.upper()} has no native bf16 arithmetic: expect it to run many "
            "times slower than fp32 (set bf16 to null or false)",
            stacklevel=2,
        )
    return bool(setting)


def gpu_name(device: str) -> str:
    import torch

    return str(torch.cuda.get_device_name(torch.device(device)))


def available() -> str:
    """What this machine has, in words: ``cpu, cuda:0 (NVIDIA H200), cuda:1 (...)``."""
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += [
            f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())
        ]
    if mps_available():
        names.append("mps")
    return ", ".join(names)


def mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(setting: str | None = "auto") -> str:
    """The device a ``device`` setting means on this machine (and in this process of a
    multi-process launch), e.g. ``"cpu"`` or ``"cuda:1"``; a ``DeviceError`` when the
    machine has no such device."""
    import torch

    setting = (setting or "auto").strip().lower()
    if setting not in ("auto", "cpu", "cuda", "mps") and not re.fullmatch(r"cuda:\d+", setting):
        raise DeviceError(f"unknown device {setting!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    local_rank = os.environ.get("LOCAL_RANK")
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cpu":
        return "cpu"
    if setting == "mps":
        if not mps_available():
            raise DeviceError(
                f"device mps: this machine has no MPS device; available: {available()}"
            )
        return "mps"
    if not torch.cuda.is_available():
        build = "a CPU-only build of torch" if torch.version.cuda is None else "no visible GPU"
        raise DeviceError(
            f"device {setting}: this machine has no CUDA device ({build}); available: {available()}"
        )
    if setting == "cuda":
        setting = f"cuda:{int(local_rank) if local_rank is not None else 0}"
    index = int(setting.split(":")[1])
    if index >= torch.cuda.device_count():
        raise DeviceError(
            f"device {setting}: this machine has {torch.cuda.device_count()} CUDA device(s); "
            f"available: {available()}"
        )
    return setting


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def training_precision(setting: bool | None, device: str) -> str:
    """``bf16``, ``fp16`` or ``fp32``: how training computes on ``device`` for a ``bf16``
    setting. ``fp16`` only on a GPU without bf16 when the setting is null (auto)."""
    if is_cuda(device) and setting is None and not bf16_supported(device):
        return "fp16"
    return "bf16" if use_bf16(setting, device) else "fp32"


def training_autocast(device: str, precision: str) -> Any:
    """The autocast context of a training forward pass: on a GPU, bf16 or fp16 over fp32
    parameters; on the CPU none (its parameters are bf16 already when bf16 is on, see
    ``master_weights.py``)."""
    import contextlib

    import torch

    if not is_cuda(device) or precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def gradient_scaler(precision: str) -> Any:
    """fp16 training scales the loss so small gradients survive; None otherwise."""
    import torch

    return torch.amp.GradScaler("cuda") if precision == "fp16" else None


def prepare_device(device: str) -> None:
    """Process-wide settings for a device: TF32 matmuls on a GPU (fp32 work that autocast
    leaves, at a precision training does not notice)."""
    import torch

    if is_cuda(device):
        torch.cuda.set_device(torch.device(device))
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def to_device(batch: dict[str, Any], device: str) -> dict[str, Any]:
    """A collated batch on the training device (pinned host memory, an asynchronous copy)."""
    if device == "cpu":
        return batch
    if not is_cuda(device):  # mps: a plain copy (pinned memory is a CUDA host feature)
        return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
    return {
        key: value.pin_memory().to(device, non_blocking=True)
        if hasattr(value, "pin_memory")
        else value
        for key, value in batch.items()
    }


# ----------------------------------------------------------------------------- compilation

COMPILE_MIN_PARAMETERS = 10_000_000


def compile_pays(setting: bool | None, model: Any, device: str, bf16: bool, lora: bool) -> bool:
    """Whether training compiles the student (the config's ``compile``). Default (None):
    where it was measured to pay (``benchmarks/train_throughput.py``): a decoder-only
    student of at least 10M parameters, bf16 on the CPU, no LoRA. A tiny model's step
    takes milliseconds and would never repay a compile of a minute or more; a GPU was not
    measured. True or False force it."""
    if setting is not None:
        return bool(setting)
    return (
        not is_cuda(device)
        and device != "mps"
        and bf16
        and not lora
        and not is_seq2seq(model.config)
        and sum(p.numel() for p in model.parameters()) >= COMPILE_MIN_PARAMETERS
    )


def compile_student(model: Any, regional: bool = True) -> None:
    """Compile the student's transformer body in place (TorchInductor) for training.

    - Regional (the default): each decoder layer compiled on its own; the layers share
      one compiled graph, so compiling takes ~20 s cold and ~10 s from the cache, where
      the whole body as one graph (``regional=False``) took ~270 s cold and ~80 s from
      the cache for 4% more tokens a second (``benchmarks/train_throughput.py --variants
      today,compiled,regional``): a 135-step run is faster regional, cold or warm.
      A body without a ``layers`` list is compiled whole.
    - Dynamic shapes: the packed micro-batches of every step (their row and target counts
      vary) share one compiled graph instead of recompiling for each new shape.
    - Attention as plain matmuls (Hugging Face's ``eager`` attention, with the packing's
      block-diagonal mask made additive in ``additive_mask``), which inductor fuses with
      the mask and the softmax: the CPU's fused SDPA kernel with a mask was a quarter of
      the compiled step (``benchmarks/profile_train.py``).
    - In place: the parameters and the saved model's names are unchanged.

    Validation and the test answer through ``uncompiled``: the model as it loads, its
    own attention, not compiled (generation's shapes change at every token)."""
    import torch
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    # A persistent cache: a second run of the same student reuses the compiled kernels.
    # Importing torch._dynamo (transformers does) already set the variable to torch's
    # default under /tmp; a directory the user chose is kept.
    torch_default = default_cache_dir()
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR", torch_default) == torch_default:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.expanduser("~/.cache/stepdistill/inductor")
    model._answer_attention = model.config._attn_implementation
    model.set_attn_implementation("eager")
    layers = getattr(model.base_model, "layers", None)  # Llama-style bodies (GPT-2's: .h)
    if regional and isinstance(layers, torch.nn.ModuleList):
        for layer in layers:  # one layer's compiled code serves all of them
            layer.compile(dynamic=True)
    else:
        model.base_model.compile(dynamic=True)
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 16)
    # A machine that cannot compile (no C++ compiler, say) trains uncompiled, with torch's
    # warning, rather than failing the run.
    torch._dynamo.config.suppress_errors = True


def is_compiled(model: Any) -> bool:
    """Whether ``compile_student`` compiled this student (``train.token_losses`` then
    compiles the LM head and its loss too)."""
    return getattr(model, "_answer_attention", None) is not None


@contextlib.contextmanager
def uncompiled(model: Any) -> Any:
    """A student compiled for training (``compile_student``) answers as it loads:
    uncompiled, with its own attention implementation."""
    import torch

    attention = getattr(model, "_answer_attention", None)
    if attention is None:
        yield
        return
    training = model.config._attn_implementation
    model.set_attn_implementation(attention)
    try:
        with torch.compiler.set_stance("force_eager"):
            yield
    finally:
        model.set_attn_implementation(training)


def restore_attention(model: Any) -> None:
    """After training: the attention implementation the student loaded with, for saving."""
    attention = getattr(model, "_answer_attention", None)
    if attention is not None:
        model.set_attn_implementation(attention)


def additive_mask(model: Any, mask: Any) -> Any:
    """The packing's boolean 4-D mask as an additive one (0 where a token may look, the
    dtype's minimum where not) for attention that adds its mask to the scores (Hugging
    Face's ``eager``): added as 0/1, a boolean mask would mask nothing. Other masks and
    other attention implementations get the mask unchanged."""
    import torch

    if (
        mask is None
        or mask.dim() != 4
        or mask.dtype != torch.bool
        or getattr(model.config, "_attn_implementation", None) != "eager"
    ):
        return mask
    dtype = next(model.parameters()).dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
        ~mask, torch.finfo(dtype).min
    )
