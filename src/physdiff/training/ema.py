"""Exponential moving average of model weights (used for sampling)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """θ_ema ← β θ_ema + (1 − β) θ after every optimiser step, with warm-up β_k = min(β, (1+k)/(10+k))."""

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        beta = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for e, p in zip(self.model.parameters(), model.parameters(), strict=True):
            e.lerp_(p.detach(), 1.0 - beta)
        for e, b in zip(self.model.buffers(), model.buffers(), strict=True):
            e.copy_(b)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
