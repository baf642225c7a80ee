"""Training modes as one table: what each example contributes, where its label and
rationale come from, what the student writes after ``[label]``, and what evaluating it
needs. Adding a mode is one entry in ``MODES`` (plus its tests); no other module
compares mode names.

A mode's *layout* says how the ``[label]`` target is written and read back:

  plain                 <label>                         the label is the whole output
  rationale-then-label  <rationale>\\nAnswer: <label>    (single-task) the label ends the output
  label-then-rationale  <label>\\nBecause: <rationale>   (label-first) the label ends at the marker,
                                                        so inference stops there and costs what
                                                        standard fine-tuning costs
"""

from __future__ import annotations

from dataclasses import dataclass

LABEL_PREFIX = "[label] "
RATIONALE_PREFIX = "[rationale] "

LABEL, RATIONALE = 0, 1
"""Target kinds: which term of the multi-task loss a target's tokens belong to."""

LABEL_TARGET_TOKENS = 64
"""Label targets are cut at this many tokens (candidate scoring cuts the same way)."""

RATIONALE_INPUT_MARKER = "\nRationale: "
"""rationale-input mode appends the rationale to the input after this marker."""


@dataclass(frozen=True)
class Target:
    """One training row of an example: prompt prefix, target text, loss term, length cap."""

    prefix: str
    text: str
    kind: int
    max_tokens: int
    label_part: str | None = None
    """The leading part of ``text`` whose tokens feed L_label; the rest feeds L_rationale
    (a mode with ``split_loss``). None: all of it feeds ``kind``'s term."""


class Layout:
    """How the ``[label]`` target holds the label (and maybe the rationale)."""

    name = "plain"
    marker = ""
    holds_rationale = False
    """The target carries the rationale too (one output holds both)."""
    stop_strings: tuple[str, ...] = ()
    """Generation of a label stops at any of these (besides the end token)."""

    def target(self, label: str, rationale: str | None) -> str:
        return label

    def label_of(self, text: str) -> str | None:
        return text

    def rationale_of(self, text: str) -> str | None:
        return None

    def extra_tokens(self, max_rationale_tokens: int) -> int:
        """Target tokens beyond a label's (the rationale's share)."""
        return 0


class RationaleThenLabel(Layout):
    """single-task: ``<rationale>\\nAnswer: <label>``; the label is read after the last marker."""

    name = "rationale-then-label"
    marker = "\nAnswer: "
    holds_rationale = True

    def target(self, label: str, rationale: str | None) -> str:
        return f"{rationale}{self.marker}{label}" if rationale else f"{self.marker.strip()} {label}"

    def label_of(self, text: str) -> str | None:
        marker = self.marker.strip()
        return text.rsplit(marker, 1)[1].strip() or None if marker in text else None

    def rationale_of(self, text: str) -> str | None:
        marker = self.marker.strip()
        return text.rsplit(marker, 1)[0].strip() if marker in text else text.strip()

    def extra_tokens(self, max_rationale_tokens: int) -> int:
        return max_rationale_tokens


class LabelThenRationale(Layout):
    """label-first: ``<label>\\nBecause: <rationale>``; the label is what comes before the
    marker, so generation stops at the marker's first token."""

    name = "label-then-rationale"
    marker = "\nBecause: "
    holds_rationale = True
    # A label never holds a newline; a tokenizer that drops newlines (T5's) stops at the word.
    stop_strings = ("\n", "Because:")

    def target(self, label: str, rationale: str | None) -> str:
        return f"{label}{self.marker}{rationale}" if rationale else label

    def label_of(self, text: str) -> str | None:
        return text.split(self.marker.strip(), 1)[0].strip() or None

    def rationale_of(self, text: str) -> str | None:
        marker = self.marker.strip()
        return text.split(marker, 1)[1].strip() or None if marker in text else None

    def extra_tokens(self, max_rationale_tokens: int) -> int:
        return max_rationale_tokens


PLAIN, SINGLE, LABEL_FIRST = Layout(), RationaleThenLabel(), LabelThenRationale()


@dataclass(frozen=True)
class Mode:
    """One training mode (a row of ``MODES``)."""

    name: str
    summary: str
    labels: str
    """``gold``, ``teacher``, or ``config``: the config's ``label_source`` decides."""
    reads_rationale: bool = False
    """Each example needs a rationale (the teacher's, or a human one)."""
    rationale_task: bool = False
    """A ``[rationale] x -> rationale`` row is trained too (the paper's multi-task loss),
    so the student can also be asked for a rationale with that prefix."""
    rationale_in_input: bool = False
    """The rationale is appended to the input, in training and at test time (so
    evaluation needs the teacher's rationales for the test inputs)."""
    layout: Layout = PLAIN
    split_loss: bool = False
    """One target holds label and rationale, but its label tokens (and the newline that
    ends the label) feed L_label and the rationale's tokens λ·L_rationale: the paper's
    loss inside one sequence, rather than one mean over all of it."""

    def teacher_labels(self, label_source: str) -> bool:
        """Whether the label target is the teacher's label rather than gold."""
        return self.labels == "teacher" or (self.labels == "config" and label_source == "teacher")

    @property
    def writes_rationale(self) -> bool:
        """The student can give a rationale (after ``[rationale]``, or in its label output)."""
        return self.rationale_task or self.layout.holds_rationale

    def targets(
        self,
        label: str,
        rationale: str | None,
        max_rationale_tokens: int,
        more_rationales: tuple[str, ...] = (),
    ) -> list[Target]:
        """The rows one example contributes to a step: the label row once, and (a mode
        with a rationale task) one ``[rationale]`` row per rationale it has."""
        extra = self.layout.extra_tokens(max_rationale_tokens)
        target = self.layout.target(label, rationale)
        label_part = f"{label}\n" if self.split_loss and rationale else None
        rows = [Target(LABEL_PREFIX, target, LABEL, LABEL_TARGET_TOKENS + extra, label_part)]
        if self.rationale_task:
            for text in (rationale, *more_rationales) if rationale else more_rationales:
                rows.append(Target(RATIONALE_PREFIX, text, RATIONALE, max_rationale_tokens))
        return rows

    def label_budget(self, max_label_tokens: int, max_rationale_tokens: int) -> int:
        """New tokens to generate after ``[label]`` to read a label."""
        if self.layout is SINGLE:  # the label comes after the rationale
            return max_rationale_tokens + max_label_tokens + 8
        return max_label_tokens


MODES: dict[str, Mode] = {
    mode.name: mode
    for mode in (
        Mode("standard", "[label] x -> gold label; loss = L_label", labels="gold"),
        Mode("distill", "[label] x -> teacher label; loss = L_label", labels="teacher"),
        Mode(
            "dss",
            "[label] x -> label and [rationale] x -> rationale; loss = L_label + λ·L_rationale",
            labels="config",
            reads_rationale=True,
            rationale_task=True,
        ),
        Mode(
            "single",
            '[label] x -> "rationale\\nAnswer: label" (one target); loss = L_label',
            labels="config",
            reads_rationale=True,
            layout=SINGLE,
        ),
        Mode(
            "rationale-input",
            "[label] x + rationale -> label; needs the teacher's rationales at test time",
            labels="config",
            reads_rationale=True,
            rationale_in_input=True,
        ),
        Mode(
            "label-first",
            '[label] x -> "label\\nBecause: rationale" (one target); inference stops at the label',
            labels="config",
            reads_rationale=True,
            layout=LABEL_FIRST,
        ),
        Mode(
            "label-first-split",
            "label-first, with loss = L_label (the label's tokens) + λ·L_rationale (the rest)",
            labels="config",
            reads_rationale=True,
            layout=LABEL_FIRST,
            split_loss=True,
        ),
    )
}


class ModeError(ValueError):
    """An unknown mode."""


def get_mode(name: str) -> Mode:
    try:
        return MODES[name]
    except KeyError:
        raise ModeError(f"unknown mode {name!r}; choose one of {', '.join(MODES)}") from None


def variant(mode: str, label_source: str, rationale_filter: bool = False) -> str:
    """What a results table calls a run: the mode's name, with the label source where the
    mode lets the config choose it and it is not gold (``dss-teacher``), and ``-filtered``
    when only rationales whose teacher label is right were trained on."""
    name = mode
    if MODES[mode].labels == "config" and label_source != "gold":
        name += f"-{label_source}"
    if rationale_filter and MODES[mode].reads_rationale:
        name += "-filtered"
    return name


TITLES = {
    "standard": "standard fine-tuning (gold)",
    "distill": "standard distillation (teacher labels)",
    "dss": "distilling step-by-step",
    "dss-teacher": "distilling step-by-step (teacher labels)",
    "single": "single-task (rationale + label)",
    "single-teacher": "single-task (teacher labels)",
    "label-first": "label-first (label, then rationale)",
    "label-first-split": "label-first, L_label + λ·L_rationale in one sequence",
    "dss-filtered": "DSS, rationales only where the teacher is right",
    "dss-llama3": "DSS on Llama-3's rationales (a weaker teacher)",
    "dss-two-teachers": "DSS on PaLM's and Llama-3's rationales (two rows)",
    "dss-human": "DSS on human rationales",
}
"""What the report calls each variant (a mode, or a mode with its label source, filter or
rationale source: ``variant``), in the order its tables list them."""

COMPARISONS = (
    ("dss", "standard"),
    ("dss", "single"),
    ("dss-teacher", "distill"),
    ("distill", "standard"),
    ("dss-teacher", "dss"),
    ("label-first", "standard"),
    ("dss-filtered", "standard"),
    ("label-first", "dss"),
    ("label-first-split", "standard"),
    ("label-first-split", "label-first"),
    ("dss-filtered", "dss"),
    ("dss-llama3", "standard"),
    ("dss-llama3", "dss"),
    ("dss-two-teachers", "standard"),
    ("dss-two-teachers", "dss"),
    ("dss-human", "dss"),
)
"""The paper's claims as pairs: DSS against standard fine-tuning, against single-task
training, and (teacher labels only) against standard distillation; then what training on
the teacher's labels instead of gold ones costs standard training and DSS."""


def with_rationale_input(text: str, rationale: str | None) -> str:
    """The input of a rationale-input example: x, then the rationale (the paper's Eq. 2)."""
    return f"{text}{RATIONALE_INPUT_MARKER}{rationale}" if rationale else text
