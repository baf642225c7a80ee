"""The ``stepdistill`` command: parses arguments and calls the stage of the same name."""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing
from collections.abc import Sequence
from typing import Any

from .config import ConfigError, TrainConfig, field_docs, load_config, parse_overrides


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def add_config_flags(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """One flag per TrainConfig field (typed, documented), plus --config and key=value."""
    docs = field_docs(TrainConfig)
    hints = typing.get_type_hints(TrainConfig)
    for name, hint in hints.items():
        default = (defaults or {}).get(name, TrainConfig.__dataclass_fields__[name].default)
        help_text = f"{docs.get(name, '')} (default: {default})"
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, metavar=str(hint).replace("typing.", ""), help=help_text)
    parser.add_argument("--config", help="YAML file of config values (flags and key=value override it)")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides, e.g. epochs=3")


def config_from_args(args: argparse.Namespace, defaults: dict[str, Any] | None = None) -> TrainConfig:
    values: dict[str, Any] = dict(defaults or {})
    values.update(parse_overrides(args.overrides))
    for name in TrainConfig.__dataclass_fields__:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    return load_config(args.config, values)


def cmd_annotate(args: argparse.Namespace) -> int:
    from .annotate import annotate

    splits = tuple(args.splits.split(","))
    summary = annotate(args.task, args.teacher, args.output, splits=splits, data=args.data_dir, limit=args.limit)
    print(f"rationale dataset: {summary['output']}")
    print(f"{'split':<8}{'examples':>10}{'parsed':>9}{'failed':>9}{'teacher acc':>13}")
    for split, s in summary["splits"].items():
        accuracy = f"{100 * s['teacher_accuracy']:.1f}%" if "teacher_accuracy" in s else "-"
        print(f"{split:<8}{s['examples']:>10}{s['parsed']:>9}{s['examples'] - s['parsed']:>9}{accuracy:>13}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    metrics = train(config_from_args(args))
    print(json.dumps({k: v for k, v in metrics.items() if k != "valid_history"}, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    result = evaluate(args.run_dir, split=args.split, limit=args.limit, rescore=args.rescore)
    print(json.dumps(result, indent=2))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .run import run

    run(config_from_args(args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stepdistill", description="Distilling step-by-step: small students from LLM rationales.")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("run", help="the whole pipeline (annotate, train, evaluate); defaults: SVAMP, PaLM replay, SmolLM2-135M, dss")
    add_config_flags(p)
    p.set_defaults(func=cmd_run)

    p = commands.add_parser("annotate", help="teacher stage: rationales and labels for a task's examples")
    p.add_argument("--task", default="svamp", help="built-in task or task YAML file")
    p.add_argument("--teacher", default="palm-replay", help="teacher backend or alias")
    p.add_argument("--output", help="output folder (default annotations/<task>-<teacher>)")
    p.add_argument("--splits", default="train,valid,test")
    p.add_argument("--data-dir", help="benchmark data folder (default $STEPDISTILL_DATA or ../shared/data)")
    p.add_argument("--limit", type=int, help="annotate only the first N examples of each split")
    p.set_defaults(func=cmd_annotate)

    p = commands.add_parser("train", help="student stage: train one student into a new run folder")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("evaluate", help="recompute a run's metrics from its saved model")
    p.add_argument("run_dir")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--limit", type=int)
    p.add_argument("--rescore", action="store_true", help="re-score the saved predictions only (no model)")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    from .data import DataError
    from .students import StudentError
    from .tasks import TaskError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, DataError, StudentError, TaskError, FileNotFoundError, ValueError) as error:
        print(f"stepdistill {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
