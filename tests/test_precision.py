"""bf16 by default only where the hardware computes it: emulated bf16 (an AVX2-only CPU)
ran matrix products over 100x slower than fp32 (benchmarks/precision.py)."""

import json
import warnings

import pytest
from tiny_run import train_command

import stepdistill.device as precision
from stepdistill.cli import main
from stepdistill.config import make_config


@pytest.fixture(params=[True, False], ids=["bf16-cpu", "no-bf16-cpu"])
def hardware(request, monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda device="cpu": request.param)
    return request.param


def test_default_follows_the_hardware_and_an_explicit_choice_wins(hardware):
    assert make_config({}).bf16 is None
    assert precision.use_bf16(None) is hardware
    assert precision.use_bf16(False) is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert precision.use_bf16(True) is True
    assert bool(caught) is (not hardware)  # forcing bf16 without hardware support warns
    if caught:
        assert "no native bf16" in str(caught[0].message)


def test_bf16_supported_answers_for_this_machine():
    assert isinstance(precision.bf16_supported(), bool)


X86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f {}\n\n"
ARM = "processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd sve bf16\n\n"


@pytest.fixture
def cpu(tmp_path, monkeypatch):
    """Make this machine's CPU the one a cpuinfo text describes, oneDNN saying it has bf16."""
    import torch

    read_flags = precision.x86_cpu_flags
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(precision, "x86_cpu_flags", lambda: read_flags(str(cpuinfo)))
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    precision.bf16_supported.cache_clear()
    yield cpuinfo
    precision.bf16_supported.cache_clear()


@pytest.mark.parametrize(
    ("extra_flags", "native"),
    [
        ("", False),
        ("avx512_vnni avx512bw", False),
        ("avx512_bf16", True),
        ("amx_tile amx_bf16", True),
    ],
)
def test_an_x86_cpu_needs_its_own_bf16_flags_whatever_onednn_says(extra_flags, native, cpu):
    # oneDNN reports bf16 on any AVX512 core; on a Xeon without AVX512-BF16 a bf16 matmul
    # ran 3.7x slower than fp32 (benchmarks/precision.py), so there the flags decide.
    cpu.write_text(X86.format(extra_flags))
    assert precision.bf16_supported("cpu") is native
    assert precision.use_bf16(None) is native


def test_without_x86_flags_onednn_decides(cpu):
    cpu.write_text(ARM)
    assert precision.x86_cpu_flags() is None
    assert precision.bf16_supported("cpu") is True  # oneDNN's answer, patched to yes
    cpu.unlink()
    assert precision.x86_cpu_flags() is None


def test_a_training_run_records_the_precision_it_used(
    hardware, tiny_causal, annotations, data_dir, tmp_path
):
    arguments = train_command(
        tiny_causal,
        annotations,
        tmp_path / "runs",
        data_dir=data_dir,
        run_name="run",
        max_steps=1,
        batch_size=2,
        train_limit=2,
        eval_limit=2,
    )
    assert main(arguments) == 0
    metrics = json.loads((tmp_path / "runs" / "run" / "metrics.json").read_text())
    assert metrics["bf16"] is hardware
