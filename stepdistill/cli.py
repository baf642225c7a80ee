"""The ``stepdistill`` command: parses arguments and calls the stage of the same name."""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing
from collections.abc import Sequence
from typing import Any

from .annotate import annotate
from .bootstrap import bootstrap_demos
from .config import ConfigError, TrainConfig, field_docs, load_config, parse_overrides
from .data import DataError
from .device import resolve_device
from .evaluate import evaluate
from .export import export_annotations
from .gguf_export import export_gguf
from .hub_export import export_hf
from .models import StudentError
from .parallel import Processes, launch_rank
from .predict import predict
from .report import report
from .run import ensure_annotations, run
from .sweep import sweep
from .tasks import TaskError, load_task
from .train import train
from .training_data import needs_annotations


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def metavar(hint: Any) -> str:
    """``str`` / ``int | None`` rather than ``<class 'str'>`` in --help."""
    return (
        getattr(hint, "__name__", None)
        if isinstance(hint, type)
        else str(hint).replace("typing.", "")
    )


def add_config_flags(
    parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None
) -> None:
    """One flag per TrainConfig field (typed, documented), plus --config and key=value."""
    docs = field_docs(TrainConfig)
    hints = typing.get_type_hints(TrainConfig)
    for name, hint in hints.items():
        default = (defaults or {}).get(name, TrainConfig.__dataclass_fields__[name].default)
        help_text = f"{docs.get(name, '')} (default: {default})"
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default=None,
            metavar=metavar(hint),
            help=help_text,
        )
    parser.add_argument(
        "--config", help="YAML file of config values (flags and key=value override it)"
    )
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides, e.g. epochs=3")


def config_from_args(
    args: argparse.Namespace, defaults: dict[str, Any] | None = None
) -> TrainConfig:
    values: dict[str, Any] = dict(defaults or {})
    values.update(parse_overrides(args.overrides))
    for name in TrainConfig.__dataclass_fields__:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    return load_config(args.config, values)


TEXT_OPTIONS = {"custom_id"}
"""Teacher options taken as written, not read as YAML."""


def teacher_options(args: argparse.Namespace) -> dict[str, Any]:
    """--model / --base-url / --temperature and repeated --option key=value (YAML values)."""
    import yaml

    options: dict[str, Any] = {}
    for item in args.option or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--option expects key=value, got {item!r}")
        name = key.strip().replace("-", "_")
        # A custom_id pattern is text ("{split}-{row}" would read as YAML flow mapping).
        options[name] = value if name in TEXT_OPTIONS else yaml.safe_load(value)
    for name in ("model", "base_url", "temperature", "concurrency"):
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    if getattr(args, "retry_failed", False):
        options["retry_failed"] = True
    return options


def run_teacher_options(args: argparse.Namespace) -> dict[str, Any]:
    """For run and train: the teacher's options, plus the budget and store of its
    annotation (used only when the rationale dataset does not exist yet)."""
    options = teacher_options(args)
    for name in ("max_cost", "prices", "store"):
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    return options


def cmd_annotate(args: argparse.Namespace) -> int:

    splits = tuple(args.splits.split(","))
    summary = annotate(
        args.task,
        args.teacher,
        args.output,
        splits=splits,
        data=args.data_dir,
        limit=args.limit,
        teacher_options=teacher_options(args),
        samples=args.samples,
        filter_correct=args.filter_correct,
        estimate=args.estimate,
        max_cost=args.max_cost,
        max_tokens=args.max_tokens,
        prices=args.prices,
        store=args.store,
    )
    if args.estimate:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"rationale dataset: {summary['output']}")
    print(f"{'split':<8}{'rows':>8}{'parsed':>9}{'failed':>9}{'written':>9}{'teacher acc':>13}")
    for split, s in summary["splits"].items():
        accuracy = f"{100 * s['teacher_accuracy']:.1f}%" if "teacher_accuracy" in s else "-"
        print(
            f"{split:<8}{s['rows']:>8}{s['parsed']:>9}{s['rows'] - s['parsed']:>9}{s['rows_written']:>9}{accuracy:>13}"
        )
        for reason, count in s.get("failures", {}).items():
            print(f"  failed requests: {count} x {reason}")
        if s.get("failed_ids"):
            more = sum(s["failures"].values()) - len(s["failed_ids"])
            print(
                f"  failed rows: {', '.join(s['failed_ids'])}{f' and {more} more' if more > 0 else ''}"
            )
    usage = summary["usage"]
    print(
        f"tokens: {usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion; cost ${usage['cost_usd']:.4f}"
    )
    batches = summary.get("backend", {})
    if batches.get("batches_created") or batches.get("batches_resumed"):
        print(
            f"batches: created {', '.join(batches['batches_created']) or 'none'}; resumed "
            f"{', '.join(batches['batches_resumed']) or 'none'} (ids kept in {batches['state']})"
        )
    if "stopped" in summary:
        print(f"stopped: {summary['stopped']} (everything answered is stored; rerun to continue)")
    return 0


def cmd_bootstrap_demos(args: argparse.Namespace) -> int:

    summary = bootstrap_demos(
        args.task,
        args.teacher,
        args.output,
        count=args.count,
        split=args.split,
        data=args.data_dir,
        teacher_options=teacher_options(args),
    )
    print(json.dumps(summary, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:

    if args.resume:
        # A resumed run takes its saved config from the run folder: other settings would
        # be ignored, so they are refused (but the device: a run may move machines).
        given = [
            "--" + name.replace("_", "-")
            for name in TrainConfig.__dataclass_fields__
            if getattr(args, name, None) is not None and name != "device"
        ]
        given += ["--config"] if args.config else []
        given += list(args.overrides)
        if given:
            raise ConfigError(
                f"--resume continues a run with its saved config; drop {' '.join(given)}"
            )
        metrics = train(TrainConfig(), resume=args.resume, device=args.device)
    else:
        config = config_from_args(args)
        task = load_task(config.task)
        if needs_annotations(config):
            # As `stepdistill run` does: annotate with the teacher when nothing is stored
            # yet (under a multi-process launch rank 0 does it, the others then find it).
            with Processes(resolve_device(config.device)).main_first():
                config.annotations = str(
                    ensure_annotations(config, task, run_teacher_options(args))
                )
        metrics = train(config, task=task)

    if launch_rank() == 0:  # under a multi-process launch, rank 0 reports
        print(json.dumps({k: v for k, v in metrics.items() if k != "valid_history"}, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:

    result = evaluate(
        args.run_dir, split=args.split, limit=args.limit, rescore=args.rescore, device=args.device
    )
    print(json.dumps(result, indent=2))
    return 0


def cmd_run(args: argparse.Namespace) -> int:

    run(config_from_args(args), teacher_options=run_teacher_options(args))
    return 0


def cmd_export(args: argparse.Namespace) -> int:

    if args.quant is not None and args.format != "gguf":
        raise ValueError("--quant picks the GGUF file's precision: use it with --format gguf")
    if args.format == "gguf":
        if args.push_to_hub:
            raise ValueError("--push-to-hub uploads a model folder: use it with --format hf")
        print(
            json.dumps(export_gguf(args.source, args.output, quant=args.quant or "f16"), indent=2)
        )
        return 0
    if args.format == "hf":
        summary = export_hf(
            args.source,
            args.output,
            datasets=args.dataset,
            license=args.license,
            push_to_hub=args.push_to_hub,
            private=args.private,
        )
        print(json.dumps(summary, indent=2))
        return 0
    if args.push_to_hub:
        raise ValueError("--push-to-hub uploads a model folder: use it with --format hf")
    summary = export_annotations(
        args.source,
        args.output,
        splits=tuple(args.splits.split(",")),
        parsed_only=args.parsed_only,
    )
    print(json.dumps(summary, indent=2))
    return 0


def add_int8_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--int8",
        action="store_true",
        help="CPU only: int8 weights (one scale per row) for faster decoding; check the "
        "accuracy on your task first (benchmarks/RESULTS.md)",
    )


def cmd_predict(args: argparse.Namespace) -> int:

    summary = predict(
        args.run_dir,
        args.input,
        args.output,
        rationale=args.rationale,
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        limit=args.limit,
        device=args.device,
        int8=args.int8,
        engine=args.engine,
        gguf=args.gguf,
        threads=args.threads,
    )
    print(json.dumps(summary, indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import ServeSettings, serve

    settings = ServeSettings(
        api_key=args.api_key,
        model_name=args.model_name,
        dynamic_batching=not args.no_batching,
        batch_wait_ms=args.batch_wait_ms,
        max_inputs=args.max_inputs,
        max_input_chars=args.max_input_chars,
        max_body_bytes=args.max_body_bytes,
        max_tokens=args.max_tokens,
        request_timeout_s=args.request_timeout,
        allow_public_without_key=args.allow_public_without_key,
    )
    serve(
        args.run_dir,
        host=args.host,
        port=args.port,
        settings=settings,
        threads=args.threads,
        batch_size=args.batch_size,
        device=args.device,
        int8=args.int8,
    )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:

    rows = sweep(
        args.sweep_file,
        dry_run=args.dry_run,
        report_to=args.report,
        device=args.device,
        only=args.only or (),
    )
    print(f"{len(rows)} result rows")
    return 0


def cmd_report(args: argparse.Namespace) -> int:

    print(f"report: {report(args.results, args.output)}")
    return 0


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        help="auto (default: CUDA when available, else the CPU), cpu, cuda, cuda:N or mps",
    )


def add_teacher_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="teacher model name (openai) or folder / hub id (hf)")
    parser.add_argument(
        "--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1"
    )
    parser.add_argument("--temperature", type=float, help="teacher sampling temperature")
    parser.add_argument("--concurrency", type=int, help="requests in flight (openai)")
    parser.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="other teacher options, e.g. style=chat, max_tokens=256, api_key_env=MY_KEY, requests_per_minute=60",
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="openai-batch: ask the requests that failed in the batch again on the normal API "
        "(else a rerun puts them in a new batch)",
    )


def add_run_teacher_flags(parser: argparse.ArgumentParser) -> None:
    """run / train: the teacher's flags, used when its rationale dataset is made."""
    group = parser.add_argument_group(
        "teacher (used only when the rationale dataset does not exist yet)"
    )
    add_teacher_flags(group)
    group.add_argument(
        "--max-cost", type=float, help="stop the teacher after this many USD of new requests"
    )
    group.add_argument("--prices", help="price table, YAML or JSON (see annotate --help)")
    group.add_argument(
        "--store", help="response store (default <annotations>/store.sqlite for live teachers)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stepdistill",
        description="Distilling step-by-step: small students from LLM rationales.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser(
        "run",
        help="the whole pipeline (annotate, train, evaluate); defaults: SVAMP, PaLM replay, SmolLM2-135M, dss",
    )
    add_config_flags(p)
    add_run_teacher_flags(p)
    p.set_defaults(func=cmd_run)

    p = commands.add_parser(
        "annotate", help="teacher stage: rationales and labels for a task's examples"
    )
    p.add_argument("--task", default="svamp", help="built-in task or task YAML file")
    p.add_argument(
        "--teacher",
        default="replay",
        help="replay (the task's stored outputs, or a Batch API output file: --option "
        "batch_output=FILE), openai, openai-batch (the Batch API, half price), hf, store, or an alias",
    )
    p.add_argument("--output", help="output folder (default annotations/<task>-<teacher>)")
    p.add_argument("--splits", default="train,valid,test")
    p.add_argument(
        "--data-dir", help="benchmark data folder (default $STEPDISTILL_DATA or ../shared/data)"
    )
    p.add_argument("--limit", type=int, help="annotate only the first N examples of each split")
    add_teacher_flags(p)
    p.add_argument(
        "--samples", type=int, default=1, help="rationales per example (needs --temperature > 0)"
    )
    p.add_argument(
        "--filter-correct",
        action="store_true",
        help="keep only rows whose teacher label matches gold",
    )
    p.add_argument(
        "--estimate", action="store_true", help="print expected tokens and cost; ask nothing"
    )
    p.add_argument(
        "--max-cost", type=float, help="stop cleanly after this many USD of new requests"
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        help="stop cleanly after this many new tokens (prompt + completion)",
    )
    p.add_argument(
        "--prices", help="price table, YAML or JSON: {model: {prompt: USD/1M, completion: USD/1M}}"
    )
    p.add_argument(
        "--store", help="response store (default <output>/store.sqlite for live teachers)"
    )
    p.set_defaults(func=cmd_annotate)

    p = commands.add_parser(
        "bootstrap-demos",
        help="few-shot demonstrations from labelled examples, explained by a teacher",
    )
    p.add_argument("--task", required=True, help="built-in task or task YAML file")
    p.add_argument("--teacher", required=True, help="teacher backend or alias")
    p.add_argument("--output", required=True, help="YAML file of demonstrations to review")
    p.add_argument("--count", type=int, default=8, help="demonstrations wanted")
    p.add_argument("--split", default="train", help="split the labelled examples come from")
    p.add_argument("--data-dir", help="benchmark data folder")
    add_teacher_flags(p)
    p.set_defaults(func=cmd_bootstrap_demos)

    p = commands.add_parser("train", help="student stage: train one student into a new run folder")
    add_config_flags(p)
    add_run_teacher_flags(p)
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a killed run from its last checkpoint (its saved config is used)",
    )
    p.set_defaults(func=cmd_train)

    p = commands.add_parser(
        "export",
        help="a rationale dataset as one JSONL file (default), or a trained run as a "
        "Hugging Face model folder with a model card (--format hf) or a GGUF file for "
        "llama.cpp / Ollama with a Modelfile (--format gguf)",
    )
    p.add_argument(
        "source",
        help="jsonl: folder written by annotate (annotations/<task>-<teacher>); "
        "hf, gguf: a finished run folder",
    )
    p.add_argument(
        "--format",
        default="jsonl",
        choices=["jsonl", "hf", "gguf"],
        help="jsonl: the rationale dataset's rows; hf: safetensors weights, tokenizer, "
        "config.json, generation_config.json and README.md model card; gguf: one GGUF "
        "file (llama-architecture students) and an Ollama Modelfile",
    )
    p.add_argument(
        "--output",
        required=True,
        help="JSONL file (jsonl) or new, empty folder (hf, gguf) to write",
    )
    p.add_argument(
        "--quant",
        help="gguf: f16 (default), bf16, q8_0 or q4_k_m (q4_k_m runs llama.cpp's "
        "quantizer: needs stepdistill[deploy])",
    )
    p.add_argument("--splits", default="train,valid,test", help="jsonl: splits to write")
    p.add_argument(
        "--parsed-only", action="store_true", help="jsonl: only rows whose answer parsed"
    )
    p.add_argument(
        "--push-to-hub",
        metavar="REPO",
        help="hf: also upload the folder to this hub model repo (token from HF_TOKEN or "
        "huggingface_hub's login; never written to the folder)",
    )
    p.add_argument("--private", action="store_true", help="hf: make a new hub repo private")
    p.add_argument(
        "--dataset",
        action="append",
        help="hf: the card's datasets entry (a hub dataset id; repeatable; default: the task's name)",
    )
    p.add_argument(
        "--license",
        help="hf: the card's license (default: the built-in student's, else 'other')",
    )
    p.set_defaults(func=cmd_export)

    p = commands.add_parser("evaluate", help="recompute a run's metrics from its saved model")
    p.add_argument("run_dir")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--limit", type=int)
    p.add_argument(
        "--rescore", action="store_true", help="re-score the saved predictions only (no model)"
    )
    add_device_flag(p)
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser(
        "predict", help="label a JSONL / CSV file with a trained student (resumable)"
    )
    p.add_argument("run_dir", help="run folder (or any HF model folder)")
    p.add_argument("--input", required=True, help="JSONL / JSON / CSV file of task records")
    p.add_argument("--output", required=True, help="JSONL file; rows already there are skipped")
    p.add_argument("--rationale", action="store_true", help="also generate a rationale per row")
    p.add_argument(
        "--chunk-size", type=int, default=256, help="rows read, predicted and appended at a time"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="inputs per generate call (default: the run's eval_batch_size)",
    )
    p.add_argument("--limit", type=int, help="only the first N rows")
    p.add_argument(
        "--engine",
        default="torch",
        help="torch (default): the run's model; llama.cpp: the GGUF file --gguf exported "
        "from the run (labels only, one at a time; needs stepdistill[deploy])",
    )
    p.add_argument("--gguf", help="llama.cpp: the file `stepdistill export --format gguf` wrote")
    p.add_argument("--threads", type=int, help="CPU threads (default: the engine's choice)")
    add_int8_flag(p)
    add_device_flag(p)
    p.set_defaults(func=cmd_predict)

    p = commands.add_parser("serve", help="HTTP server: /v1/predict and an OpenAI-compatible API")
    p.add_argument("run_dir", help="run folder (or any HF causal / seq2seq model folder)")
    add_int8_flag(p)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key",
        help="require 'Authorization: Bearer KEY' (default $STEPDISTILL_API_KEY; prefer the "
        "variable: a flag is visible to every user of the machine in ps)",
    )
    p.add_argument(
        "--allow-public-without-key",
        action="store_true",
        help="serve on a non-loopback --host without an API key (refused otherwise)",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=120.0,
        help="seconds a request may take before 504 (waiting work is then dropped)",
    )
    p.add_argument(
        "--model-name", help="model id reported by /v1/models (default: the folder name)"
    )
    p.add_argument("--no-batching", action="store_true", help="one model call per request")
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        help="wait for more requests before a model call",
    )
    p.add_argument("--batch-size", type=int, help="inputs per generate call")
    p.add_argument("--max-inputs", type=int, default=64, help="inputs or prompts per request")
    p.add_argument("--max-input-chars", type=int, default=20_000, help="characters per input")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000, help="request body size limit")
    p.add_argument("--max-tokens", type=int, default=512, help="largest max_tokens accepted")
    p.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    add_device_flag(p)
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser(
        "sweep", help="run a grid of trainings from a YAML file; skips runs already done"
    )
    p.add_argument("sweep_file")
    p.add_argument("--dry-run", action="store_true", help="list the runs to do; train nothing")
    p.add_argument(
        "--only",
        action="append",
        metavar="PATTERN",
        help="train only the runs whose id matches this shell-style pattern, e.g. '*-s0' or"
        " '*-dss-f0.25-*' (repeatable; --dry-run lists the ids)",
    )
    add_device_flag(p)
    p.add_argument(
        "--report",
        metavar="DIR",
        help="write the report (as `stepdistill report`) into DIR again after every recorded run",
    )
    p.set_defaults(func=cmd_sweep)

    p = commands.add_parser(
        "report", help="markdown tables and PNG plots from a sweep's results file"
    )
    p.add_argument("results", help="results.jsonl written by `stepdistill sweep`")
    p.add_argument("--output", help="folder (default: report/ next to the results file)")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_libraries()
    args = build_parser().parse_args(argv)

    try:
        return int(args.func(args) or 0)
    except (
        ConfigError,
        DataError,
        StudentError,
        TaskError,
        FileNotFoundError,
        ValueError,
    ) as error:
        print(f"stepdistill {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
