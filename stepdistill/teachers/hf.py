"""Backend ``hf``: a local Hugging Face causal or seq2seq model as the teacher.

Prompts are generated in batches (longest first, so padding is small), greedy at
temperature 0 and sampled above it. bf16 on a GPU that supports it; fp32 on CPU,
where bf16 matmuls are slow on most machines. Token counts are exact (the model's own
tokenizer), so the cost account is too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..device import bf16_supported, resolve_device
from ..tasks import Task
from . import Completion, Request, Teacher


class HFTeacher(Teacher):
    """A local model folder or hub id (offline: it must be in the local cache)."""

    def __init__(
        self,
        task: Task,
        model: str | Path,
        batch_size: int = 8,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        device: str | None = None,
        dtype: str = "auto",
        seed: int = 0,
    ):
        self.name = "hf"
        self.task = task
        self.model_name = str(model)
        self.batch_size = int(batch_size)
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.device = device
        self.dtype = dtype
        self.seed = int(seed)
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "backend": "hf",
            "model": self.model_name,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }

    def tokenizer(self) -> Any:
        """The model's tokenizer (exact token counts for estimates), without the model."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_name)
        return self._tokenizer

    def load(self) -> tuple[Any, Any]:
        if self._model is None:
            import torch
            from transformers import (
                AutoConfig,
                AutoModelForCausalLM,
                AutoModelForSeq2SeqLM,
                AutoTokenizer,
            )

            device = resolve_device(self.device)
            if self.dtype == "auto":
                dtype = (
                    torch.bfloat16
                    if device.startswith("cuda") and bf16_supported(device)
                    else torch.float32
                )
            else:
                dtype = getattr(torch, self.dtype)
            config = AutoConfig.from_pretrained(self.model_name)
            cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
            model = cls.from_pretrained(self.model_name, dtype=dtype)
            self._model = model.to(device).eval()  # type: ignore[arg-type]  # transformers typing
            self._tokenizer = self._tokenizer or AutoTokenizer.from_pretrained(self.model_name)
            if self._tokenizer.pad_token is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
            # Decoder-only batches are padded on the left so every prompt ends where
            # generation starts.
            self._tokenizer.padding_side = "right" if config.is_encoder_decoder else "left"
        return self._model, self._tokenizer

    def complete(self, requests: Sequence[Request]) -> Iterator[Completion]:
        import torch

        model, tokenizer = self.load()
        ordered = sorted(requests, key=lambda request: -len(request.prompt))
        for start in range(0, len(ordered), self.batch_size):
            batch = ordered[start : start + self.batch_size]
            encoded = tokenizer(
                [request.prompt for request in batch], return_tensors="pt", padding=True
            ).to(model.device)
            sampling = self.temperature > 0
            options: dict[str, Any] = {
                "max_new_tokens": self.max_tokens,
                "do_sample": sampling,
                "pad_token_id": tokenizer.pad_token_id,
            }
            if self.task.parser.cut_at:
                # Stop each row at the task's cut markers (an invented next example)
                # instead of generating it to max_tokens and cutting it off afterwards.
                options.update(stop_strings=list(self.task.parser.cut_at), tokenizer=tokenizer)
            if sampling:
                options.update(temperature=self.temperature, top_p=self.top_p)
                # Seeded by the batch's first request so a rerun of the same batch draws
                # the same samples, and sample k differs from sample k + 1.
                torch.manual_seed(self.seed * 1_000_003 + batch[0].sample * 7919 + start)
            with torch.inference_mode():
                output = model.generate(**encoded, **options)
            new_tokens = (
                output
                if model.config.is_encoder_decoder
                else output[:, encoded["input_ids"].shape[1] :]
            )
            for index, request in enumerate(batch):
                tokens = [t for t in new_tokens[index].tolist() if t != tokenizer.pad_token_id]
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                usage = {
                    "prompt_tokens": int(encoded["attention_mask"][index].sum()),
                    "completion_tokens": len(tokens),
                }
                yield Completion(request, text, usage=usage)
