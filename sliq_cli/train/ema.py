"""An exponential moving average (EMA) of the image encoder's weights, exported beside the trained ones.

Not in the paper: one of the recipes measured for robustness (issue #24). Every floating entry of the encoder's
state (weights and BatchNorm statistics) moves towards the live one after each optimiser step,
ema = d * ema + (1 - d) * live, with timm's warm-up d = min(decay, (1 + n) / (10 + n)) after n updates, so that a
short run is not dominated by its start. Integer entries (BatchNorm's step counter) are copied.
"""

from __future__ import annotations

import torch
from torch import nn


class EncoderEma:
    """EMA weights of `module` (the image encoder, or its SyncBatchNorm twin under DDP: the same state names)."""

    def __init__(self, module: nn.Module, decay: float, updates: int = 0):
        self.decay, self.updates = decay, updates
        live = module.state_dict()  # detached views of the parameters and buffers, updated in place by training
        self.names = list(live)
        self.state = {k: v.detach().clone() for k, v in live.items()}
        floats = [k for k in self.names if live[k].is_floating_point()]
        self._live_f, self._ema_f = [live[k] for k in floats], [self.state[k] for k in floats]
        self._live_i = [(live[k], self.state[k]) for k in self.names if not live[k].is_floating_point()]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self._ema_f, self._live_f, 1.0 - self.current_decay())
        for live, ema in self._live_i:
            ema.copy_(live)
        self.updates += 1

    def load(self, state: dict[str, torch.Tensor], updates: int) -> None:
        """Continue from saved EMA weights (a resumed run)."""
        with torch.no_grad():
            for k in self.names:
                self.state[k].copy_(state[k])
        self.updates = updates
