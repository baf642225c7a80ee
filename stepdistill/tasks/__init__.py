"""Tasks as data: each task is one YAML file in this folder (or a user's own file).

A task says where its examples live, how a record becomes the model's input, what
the label's normal form is, how a teacher's raw continuation is parsed into
(rationale, label), and which metric scores predictions. Nothing in the library
branches on a task's name: adding a task means adding a YAML file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

BUILTIN_DIR = Path(__file__).parent
NORMALIZERS = ("text", "equation", "none")
METRICS = ("exact", "equation", "number")


class TaskError(ValueError):
    """A task definition is missing, unknown or malformed."""


@dataclass
class ParserSpec:
    """How a teacher continuation becomes (rationale, label)."""

    cut_at: list[str] = field(default_factory=lambda: ["\n\nQ:", "\nQ:"])
    """The continuation is cut at the first of these markers (the LLM often runs on
    into an invented next few-shot example)."""
    # Written to run in linear time on any text (no nested or adjacent quantifiers that
    # can split the same run of spaces many ways): the cut text is already stripped, so
    # the label needs no trailing ``\s*``; ``(?<!\s)`` starts the spaces before the
    # marker only at the first of them, and ``\s*+`` never gives spaces back.
    pattern: str = r"(?s)^(?P<rationale>.*?)(?<!\s)\s*+So the answer is:?\s*+(?P<label>.+?)\.?$"
    """Regular expression with named groups ``rationale`` and ``label`` (optionally
    ``letter`` for multiple choice), searched in the cut text."""

    def __post_init__(self) -> None:
        import regex

        try:
            compiled = regex.compile(self.pattern, flags=regex.VERSION0)
        except (regex.error, TypeError) as error:
            raise TaskError(f"parser pattern is not a valid regular expression: {error}") from None
        if "label" not in compiled.groupindex:
            raise TaskError("parser pattern needs a named group (?P<label>...)")


@dataclass
class Task:
    """One task's definition; see the built-in YAML files for examples."""

    name: str
    """Short name used on the command line and in run folders."""
    files: dict[str, str] = field(default_factory=dict)
    """Split name -> file (JSONL, JSON lines, JSON list or CSV). ``{data}`` expands to
    the benchmark data folder; other relative paths are relative to the YAML file."""
    hf: dict[str, Any] | None = None
    """Instead of ``files``: a dataset read with the ``datasets`` package,
    ``{path: ..., name: ..., splits: {train: train, test: validation}}`` (``path``: a hub
    id, a folder written by ``save_to_disk``, or a folder / file of Parquet or Arrow files;
    ``splits``: the task's split -> the dataset's split). See ``stepdistill.hf_data``."""
    input_template: str = "{input}"
    """``str.format`` template over a record's fields, e.g. ``{premise}\\n{hypothesis}``."""
    label_field: str | None = None
    """Field holding the gold label; ``None`` for unlabeled data."""
    description: str = ""
    validation: dict[str, Any] | None = None
    """``{from: train, fraction: 0.1, seed: 0}`` carves validation from a split when
    the files have none."""
    id_field: str | None = None
    """Field with a stable example id; otherwise ``<split>-<row>``."""
    label_map: dict[Any, str] | None = None
    """Maps stored label values (e.g. 0/1/2) to label text."""
    labels: list[str] | None = None
    """Closed label set, or ``None`` for free text."""
    letter_labels: dict[str, str] | None = None
    """Maps a bare letter answer (the parser's ``letter`` group, e.g. ``(b)``) to a label of
    the fixed label set, e.g. ``{a: entailment, b: neutral, c: contradiction}``."""
    choices_field: str | None = None
    """Field with per-example answer choices (multiple choice)."""
    normalize: str = "text"
    """Label normal form: ``text`` (lower case, single spaces, no final period),
    ``equation`` (single spaces) or ``none``."""
    metric: str = "exact"
    """``exact`` (normalised match), ``equation`` (same arithmetic value) or ``number``
    (same numeric value; a trailing unit such as ``9 (apples)`` or ``$5`` is ignored, and
    a gold equation counts by its value)."""
    max_label_tokens: int = 32
    """Generation budget for a label."""
    human_rationale_field: str | None = None
    """Field with a human-written rationale, where the dataset has one."""
    parser: ParserSpec = field(default_factory=ParserSpec)
    teacher_outputs: dict[str, list[str]] = field(default_factory=dict)
    """Split -> stored teacher continuation files (JSON lists aligned with the rows),
    for the replay teacher. ``{0..9}`` expands to ten files."""
    teacher_output_field: str | None = None
    """Where a teacher-outputs file holds the continuation: ``None`` for a JSON list of
    strings; a field name (e.g. ``gen_label``) for a JSON list of objects or a JSONL file."""
    teacher_custom_id: str | None = None
    """When a teacher-outputs file is a Batch API output file: how its ``custom_id`` names a
    row, a template (``{split}-{row}``; fields task, split, row, sample) or a regex with a
    group ``(?P<row>...)``. Default: ``{task}-{split}-{row}-{sample}``, what
    ``--teacher openai-batch`` writes."""
    teacher_name: str | None = None
    """Who wrote the stored teacher outputs (e.g. ``palm``, ``llama3``): the replay teacher
    is then called ``<teacher_name>-replay`` (its annotations folder, summaries and tables
    say so). Default: the first teacher-outputs file's name."""
    demonstrations: list[dict[str, str]] = field(default_factory=list)
    """Few-shot examples (input, rationale, label) for prompting a live teacher. A
    demonstration may also carry record fields that ``question_template`` names."""
    question_template: str = "Q: {input}\nA:"
    """How a question is shown to a teacher: ``str.format`` over the record's fields
    and ``input`` (the formatted input). The teacher continues after it."""
    answer_template: str = " {rationale} So the answer is {label}."
    """How a demonstration's answer follows its question; must parse back with the
    task's parser (a test checks every built-in task)."""
    demonstration_separator: str = "\n\n"
    """Text between demonstrations, and before the question asked."""
    source: str = ""
    """Where this definition was read from."""

    def __post_init__(self) -> None:
        self._check_types()
        if isinstance(self.parser, dict):
            unknown = sorted(set(self.parser) - {"cut_at", "pattern"})
            if unknown:
                raise TaskError(
                    f"{self._where()}: unknown parser field(s) {unknown}; known: ['cut_at', 'pattern']"
                )
            self.parser = ParserSpec(**self.parser)
        if self.normalize not in NORMALIZERS:
            raise TaskError(f"task {self.name}: normalize must be one of {NORMALIZERS}")
        if self.metric not in METRICS:
            raise TaskError(f"task {self.name}: metric must be one of {METRICS}")
        if "train" not in self.splits and "test" not in self.splits:
            where = "hf.splits" if self.hf is not None else "files"
            raise TaskError(f"task {self.name}: {where} must name at least a train or test split")
        if self.labels is not None:
            self.labels = [normalize_label(str(label), self.normalize) for label in self.labels]
        if self.letter_labels is not None:
            self.letter_labels = {
                letter.strip("() ").lower(): normalize_label(str(label), self.normalize)
                for letter, label in self.letter_labels.items()
            }
            stray = sorted(set(self.letter_labels.values()) - set(self.labels or []))
            if self.labels is None or stray:
                raise TaskError(
                    f"{self._where()}: letter_labels must map letters to labels of the fixed "
                    f"label set (labels: {self.labels}); not in it: {stray}"
                )

    @property
    def splits(self) -> list[str]:
        """The task's own split names: those of ``files``, or of ``hf.splits``."""
        if self.hf is not None:
            return list(self.hf.get("splits") or {})
        return list(self.files)

    @property
    def replay_name(self) -> str:
        """What the replay teacher of this task is called: ``<teacher_name>-replay``, else
        named after the first stored-outputs file (``outputs-replay`` for ``outputs.json``)."""
        source = self.teacher_name
        if source is None:
            first = next((f for files in self.teacher_outputs.values() for f in files), "")
            source = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(first).stem).strip("-.") or "stored"
        return f"{source}-replay"

    def _where(self) -> str:
        return self.source or f"task {self.name}"

    def _check_types(self) -> None:
        """A hand-written task file gets an error naming the field, not a traceback later."""

        def fail(name: str, expected: str, value: Any) -> TaskError:
            return TaskError(
                f"{self._where()}: field {name!r} must be {expected}, got {type(value).__name__} {value!r:.60}"
            )

        scalar = (str, int, float)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("max_label_tokens",):
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise fail(f.name, "a positive whole number", value)
            elif f.name in (
                "label_field",
                "id_field",
                "choices_field",
                "human_rationale_field",
                "teacher_output_field",
                "teacher_name",
            ):
                if value is not None and not isinstance(value, str):
                    raise fail(f.name, "a field name", value)
            elif f.name == "teacher_custom_id":
                if value is not None and not isinstance(value, str):
                    raise fail(f.name, "a custom_id template or regex", value)
            elif f.name == "files":
                if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in value.items()
                ):
                    raise fail(f.name, "a mapping of split name to file path", value)
            elif f.name == "hf":
                if value is not None:
                    _check_hf(self._where(), value)
            elif f.name == "labels":
                if value is not None and (
                    not isinstance(value, list) or not all(isinstance(v, scalar) for v in value)
                ):
                    raise fail(f.name, "a list of labels or 'free text'", value)
            elif f.name == "label_map":
                if value is not None and (
                    not isinstance(value, dict)
                    or not all(isinstance(v, scalar) for v in value.values())
                ):
                    raise fail(f.name, "a mapping of stored value to label", value)
            elif f.name == "letter_labels":
                if value is not None and (
                    not isinstance(value, dict)
                    or not all(
                        isinstance(k, str) and isinstance(v, scalar) for k, v in value.items()
                    )
                ):
                    raise fail(f.name, "a mapping of letter to label, e.g. {a: yes, b: no}", value)
            elif f.name == "validation":
                if value is not None and not isinstance(value, dict):
                    raise fail(
                        f.name, "a mapping such as {from: train, fraction: 0.1, seed: 0}", value
                    )
            elif f.name == "teacher_outputs":
                if not isinstance(value, dict) or not all(
                    isinstance(v, list) and all(isinstance(x, str) for x in v)
                    for v in value.values()
                ):
                    raise fail(f.name, "a mapping of split name to a list of files", value)
            elif f.name == "demonstrations":
                if not isinstance(value, list) or not all(
                    isinstance(d, dict) and {"rationale", "label"} <= set(d) for d in value
                ):
                    raise fail(
                        f.name, "a list of mappings with (at least) rationale and label", value
                    )
            elif f.name == "parser":
                if not isinstance(value, dict | ParserSpec):
                    raise fail(f.name, "a mapping with cut_at and pattern", value)
            elif not isinstance(value, str):
                raise fail(f.name, "text", value)
        carve = self.validation or {}
        unknown = sorted(set(carve) - {"from", "fraction", "size", "seed"})
        if unknown:
            raise TaskError(
                f"{self._where()}: unknown validation field(s) {unknown}; known: from, fraction, size, seed"
            )
        if self.hf is not None and self.files:
            raise TaskError(f"{self._where()}: name either files or hf, not both")
        if carve and carve.get("from", "train") not in self.splits:
            where = "hf.splits" if self.hf is not None else "files"
            raise TaskError(
                f"{self._where()}: validation.from names split {carve.get('from', 'train')!r}, not in {where}"
            )
        fraction = carve.get("fraction", 0.1)
        if (
            not isinstance(fraction, int | float)
            or isinstance(fraction, bool)
            or not 0 <= fraction < 1
        ):
            raise fail("validation.fraction", "a number from 0 to below 1", fraction)
        for key in ("size", "seed"):
            if key in carve and (
                not isinstance(carve[key], int) or isinstance(carve[key], bool) or carve[key] < 0
            ):
                raise fail(f"validation.{key}", "a whole number of at least 0", carve[key])

    @property
    def base_dir(self) -> Path:
        return Path(self.source).parent if self.source else Path.cwd()


HF_KEYS = ("path", "name", "splits")


def _check_hf(where: str, value: Any) -> None:
    """``hf: {path: ..., name: ..., splits: {train: train, test: validation}}``."""
    example = "{path: owner/name or a folder, name: config, splits: {train: train, test: test}}"
    if not isinstance(value, dict):
        raise TaskError(f"{where}: field 'hf' must be a mapping such as {example}")
    unknown = sorted(set(value) - set(HF_KEYS))
    if unknown:
        raise TaskError(f"{where}: unknown hf field(s) {unknown}; known: {list(HF_KEYS)}")
    if not isinstance(value.get("path"), str) or not value["path"].strip():
        raise TaskError(f"{where}: hf needs a path (a hub id or a local folder / file): {example}")
    if value.get("name") is not None and not isinstance(value["name"], str):
        raise TaskError(f"{where}: hf.name must be a configuration name (text)")
    splits = value.get("splits")
    if (
        not isinstance(splits, dict)
        or not splits
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in splits.items())
    ):
        raise TaskError(
            f"{where}: hf.splits must map the task's splits to the dataset's, e.g. "
            "{train: train, test: validation}"
        )


def normalize_label(label: str, how: str) -> str:
    """The label's normal form used for comparison and as training target."""
    label = " ".join(label.split())
    if how == "text":
        label = label.lower().rstrip(".").strip()
    return label


class _TaskLoader(yaml.SafeLoader):
    """YAML 1.2 booleans only: a label set ``[yes, no]`` stays two strings. Aliases
    (``*name``) are refused: a "billion laughs" file of nested aliases is a few hundred
    bytes that expand to gigabytes, and no task needs them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"YAML aliases (*{event.anchor}) are not allowed in task files",
                event.start_mark,
            )
        return super().compose_node(parent, index)


_TaskLoader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_TaskLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str) -> Any:
    """YAML as task files are read (safe, YAML 1.2 booleans, no aliases), for other
    files a user may be handed (price tables)."""
    return yaml.load(text, Loader=_TaskLoader)  # noqa: S506 - a safe loader


def builtin_names() -> list[str]:
    return sorted(path.stem for path in BUILTIN_DIR.glob("*.yaml"))


def load_task(name_or_path: str | Path) -> Task:
    """A built-in task by name, or a custom task from a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise TaskError(f"task file not found: {path}")
    else:
        path = BUILTIN_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise TaskError(
                f"unknown task {str(name_or_path)!r}; choose one of {', '.join(builtin_names())} "
                "or give the path of a task YAML file"
            )
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as error:
        raise TaskError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise TaskError(f"{path}: a task file must be a mapping of fields")
    return task_from_dict(raw, source=str(path.resolve()))


def task_from_dict(raw: dict[str, Any], source: str = "") -> Task:
    raw = dict(raw)
    known = {f.name for f in fields(Task)}
    # Shortcut for custom tasks: input_fields: [question, context] -> a template.
    if "input_fields" in raw:
        input_fields = raw.pop("input_fields")
        if isinstance(input_fields, str):
            input_fields = [input_fields]
        raw.setdefault("input_template", "\n".join(f"{{{name}}}" for name in input_fields))
    if raw.get("labels") == "free text":
        raw["labels"] = None
    unknown = sorted(set(raw) - known)
    if unknown:
        raise TaskError(f"{source or 'task'}: unknown field(s) {unknown}; known: {sorted(known)}")
    if "name" not in raw:
        raise TaskError(f"{source or 'task'}: missing required field 'name'")
    if "files" not in raw and "hf" not in raw:
        raise TaskError(f"{source or 'task'}: missing required field 'files' (or 'hf')")
    raw["source"] = source
    return Task(**raw)
