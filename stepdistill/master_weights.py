"""bf16 training with fp32 master weights (see ``MasterWeights``)."""

from __future__ import annotations

from typing import Any

from .inference import cast_parameters


class MasterWeights:
    """bf16 compute with fp32 master weights: the model runs in bf16 (faster on CPU than
    bf16 autocast over fp32 weights, which re-casts every weight in every pass), while
    the optimizer updates fp32 copies so small updates are not lost to bf16 rounding.
    With ``enabled=False`` the model's own fp32 parameters are the master weights."""

    def __init__(self, model: Any, enabled: bool):
        import torch

        self.enabled = enabled
        self.named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.frozen: dict[str, Any] = {}
        if enabled:
            self.master = [p.detach().float().clone() for _, p in self.named]
            # Frozen weights (LoRA's base model) keep an fp32 copy too: the saved model must
            # not carry them rounded to bf16.
            self.frozen = {
                name: p.detach().float().clone()
                for name, p in model.named_parameters()
                if not p.requires_grad
            }
            # Parameters only (not the rotary buffers), as inference does.
            cast_parameters(model, torch.bfloat16)
        else:
            self.master = [p for _, p in self.named]

    def gradients_to_master(self) -> None:
        if self.enabled:
            for (_, p), master in zip(self.named, self.master, strict=True):
                master.grad = None if p.grad is None else p.grad.float()
                p.grad = None

    def master_to_model(self) -> None:
        import torch

        if self.enabled:
            with torch.no_grad():
                for (_, p), master in zip(self.named, self.master, strict=True):
                    p.copy_(master)

    def snapshot(self) -> dict[str, Any]:
        return {
            name: master.detach().clone()
            for (name, _), master in zip(self.named, self.master, strict=True)
        }

    def restore(self, model: Any, snapshot: dict[str, Any]) -> None:
        """Put fp32 weights from a snapshot into the model (in fp32, for saving)."""
        import torch

        model.float()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in snapshot:
                    p.copy_(snapshot[name])
                elif name in self.frozen:
                    p.copy_(self.frozen[name])
