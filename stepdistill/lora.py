"""LoRA adapters for training (``lora_rank`` > 0; needs ``pip install 'stepdistill[lora]'``)."""

from __future__ import annotations

from typing import Any

from .config import TrainConfig
from .encode import is_seq2seq


def apply_lora(model: Any, config: TrainConfig) -> Any:
    """LoRA adapters (``config.lora_rank`` > 0): the base weights freeze and only the
    adapters train. The adapters are injected into ``model`` in place, so training goes
    on with ``model`` itself (the loss reads its LM head directly); the returned peft
    wrapper is kept to merge the adapters back before saving."""
    try:
        from peft import LoraConfig, TaskType, get_peft_model
    except ImportError:
        raise ValueError("lora_rank > 0 needs peft: pip install 'stepdistill[lora]'") from None

    targets = config.lora_target_modules.strip()
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules=targets
        if targets == "all-linear"
        else [name.strip() for name in targets.split(",") if name.strip()],
        task_type=TaskType.SEQ_2_SEQ_LM if is_seq2seq(model.config) else TaskType.CAUSAL_LM,
    )
    wrapper = get_peft_model(model, lora)
    assert wrapper.get_base_model() is model
    return wrapper
