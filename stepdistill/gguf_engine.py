"""llama.cpp as the engine of a trained run: the GGUF file ``export --format gguf`` wrote
answers the run's label prompts through llama-cpp-python (``pip install
'stepdistill[deploy]'``).

The prompt is the student's own: the run's tokenizer builds the token ids exactly as
training and ``Student.predict`` do (``encode.encode_prompt``: ``[label] ``, the input
and the newline tokenized one by one, the input's last tokens kept), and llama.cpp is
handed those ids, so only the forward pass differs. Decoding is greedy, stops at the
end token, at the mode's stop strings or at the label budget, and the label is read
back as ``inference.predict`` reads it.

    engine = GGUFStudent.load("runs/svamp", "svamp-gguf/svamp-q8_0.gguf")
    engine.predict(["Luke scored 84 points in 2 rounds. Points per round?"])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .encode import encode_prompt
from .inference import normal_label
from .models import load_tokenizer
from .modes import LABEL_PREFIX, Mode, get_mode
from .run_folder import load_run
from .student import Prediction, TaskInput, format_item
from .tasks import Task


def import_llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise ValueError(
            "the llama.cpp engine needs llama-cpp-python: pip install 'stepdistill[deploy]'"
        ) from None
    return llama_cpp


@dataclass
class GGUFStudent:
    """A run's task, mode and tokenizer around a llama.cpp model loaded from a GGUF file."""

    llama: Any
    tokenizer: Any
    task: Task
    mode: Mode
    max_input_tokens: int
    budget: int
    """New tokens for a label (the mode's label budget, as ``inference.predict``)."""

    @classmethod
    def load(
        cls, run_dir: str | Path, gguf_file: str | Path, threads: int | None = None
    ) -> GGUFStudent:
        """The run folder ``run_dir`` (its task, mode and tokenizer) with the weights of
        ``gguf_file``; ``threads``: llama.cpp's CPU threads (default: its own choice)."""
        llama_cpp = import_llama_cpp()
        run = load_run(run_dir)
        config = run.config
        if config.label_scoring != "generate":
            raise ValueError(
                f"{run_dir} reads its labels as {config.label_scoring}; the llama.cpp engine "
                "generates them (use the default engine)"
            )
        if not Path(gguf_file).is_file():
            raise FileNotFoundError(f"{gguf_file}: no such GGUF file")
        mode = get_mode(config.mode)
        budget = mode.label_budget(run.task.max_label_tokens, config.max_rationale_tokens)
        options: dict[str, Any] = (
            {"n_threads": threads, "n_threads_batch": threads} if threads else {}
        )
        llama = llama_cpp.Llama(
            model_path=str(gguf_file),
            n_ctx=config.max_input_tokens + budget + 8,
            n_batch=512,
            verbose=False,
            **options,
        )
        return cls(
            llama,
            load_tokenizer(str(Path(run_dir) / "model")),
            run.task,
            mode,
            config.max_input_tokens,
            budget,
        )

    def prompt(self, text: str) -> list[int]:
        """The token ids of the ``[label]`` prompt for a formatted input (training's)."""
        return encode_prompt(self.tokenizer, LABEL_PREFIX, text, self.max_input_tokens, False)

    def complete(self, ids: list[int]) -> str:
        """Greedy continuation of ``ids`` up to the end token, a stop string or the budget."""
        eos = self.tokenizer.eos_token_id
        stops = self.mode.layout.stop_strings
        new: list[int] = []
        tokens = self.llama.generate(
            ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True
        )
        for token in tokens:
            if token == eos:
                break
            new.append(token)
            if len(new) >= self.budget or (stops and any(s in self.text(new) for s in stops)):
                break
        return self.text(new).strip()

    def text(self, ids: list[int]) -> str:
        """llama.cpp's own detokenizer (control tokens dropped, as ``skip_special_tokens``)."""
        return bytes(self.llama.detokenize(ids, special=False)).decode("utf-8", errors="replace")

    def close(self) -> None:
        """Free llama.cpp's model now (rather than at interpreter exit, where
        llama-cpp-python's finaliser can fail)."""
        self.llama.close()

    def format(self, item: TaskInput, where: str = "input") -> str:
        """The model input for a record or a formatted text (as ``Student.format``)."""
        return format_item(self.task, self.mode, item, where)

    def check_rationale(self) -> None:
        raise ValueError("the llama.cpp engine writes labels only: drop --rationale")

    def predict(self, inputs: list[TaskInput], rationale: bool = False) -> list[Prediction]:
        """Labels for records or formatted inputs, one at a time (batch 1), as
        ``Student.predict`` gives them (labels only)."""
        if rationale:
            self.check_rationale()
        texts = [self.format(item, f"input {index}") for index, item in enumerate(inputs)]
        predictions = []
        for text in texts:
            raw = self.complete(self.prompt(text))
            label = normal_label(self.task, self.mode.layout.label_of(raw))
            predictions.append(Prediction(label=label, raw=raw))
        return predictions
