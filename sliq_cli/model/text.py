"""The SLIQUE text encoder G (paper III-A, IV-A): a GPT-2-style causal transformer with CLIP's text-tower shape.

Tokens -> token + learned position embeddings -> `layers` pre-LayerNorm blocks with causal self-attention ->
final LayerNorm -> the hidden state at the end-of-text token -> linear projection to `embed_dim`.
The default (12 layers, width 512, 8 heads, context 77, vocabulary 49,408) has CLIP's 63M parameters.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sliq_cli.model.config import strict_from_dict

PAD_ID = 0


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 49408
    context: int = 77
    width: int = 512
    layers: int = 12
    heads: int = 8
    mlp_ratio: float = 4.0
    embed_dim: int = 512

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"text width {self.width} is not divisible by {self.heads} heads")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TextConfig:
        return strict_from_dict(cls, data, "text config")


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, h, T, c/h)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, h, T, c/h)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TextEncoder(nn.Module):
    """Token ids (B, T) -> text embedding (B, embed_dim), not normalised (the loss normalises).

    Sequences are [SOT, tokens..., EOT, PAD(0)...] (sliq_cli.model.tokenizer); the pooled state is the one at
    EOT, the last non-pad token (CLIP takes the argmax id because its EOT has the largest id; ours need not).
    Causal attention means padding after EOT never reaches the pooled state, so a batch may be cut to its
    longest sequence without changing any output.
    """

    def __init__(self, config: TextConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.positional_embedding = nn.Parameter(torch.empty(config.context, config.width))
        self.blocks = nn.ModuleList(Block(config.width, config.heads, config.mlp_ratio) for _ in range(config.layers))
        self.ln_final = nn.LayerNorm(config.width)
        self.projection = nn.Linear(config.width, config.embed_dim, bias=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # CLIP's text-tower initialisation: small embeddings, residual projections scaled by depth.
        c, n = self.config.width, self.config.layers
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for block in self.blocks:
            nn.init.normal_(block.attn.qkv.weight, std=c**-0.5)
            nn.init.normal_(block.attn.proj.weight, std=c**-0.5 * (2 * n) ** -0.5)
            nn.init.normal_(block.mlp[0].weight, std=(2 * c) ** -0.5)
            nn.init.normal_(block.mlp[2].weight, std=c**-0.5 * (2 * n) ** -0.5)
            for lin in (block.attn.qkv, block.attn.proj, block.mlp[0], block.mlp[2]):
                nn.init.zeros_(lin.bias)
        nn.init.normal_(self.projection.weight, std=c**-0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        if t > self.config.context:
            raise ValueError(f"token sequence of length {t} exceeds the context {self.config.context}")
        x = self.token_embedding(tokens) + self.positional_embedding[:t]  # (B, T, width)
        for block in self.blocks:
            x = block(x)
        x = self.ln_final(x)
        eot = (tokens != PAD_ID).sum(dim=1) - 1  # (B,) position of the end-of-text token
        pooled = x[torch.arange(x.shape[0], device=x.device), eot]  # (B, width)
        return self.projection(pooled)  # (B, embed_dim)


TEXT_FORMAT = "sliq-text"


def save_text_tower(model: TextEncoder, tokenizer, out_dir, dtype: str = "float32") -> None:
    """Write `out_dir/` = model.safetensors (floats stored as `dtype`) + config.json + tokenizer.json (each
    atomically, config last)."""
    from sliq_cli.atomic import atomic_save_safetensors, atomic_write_json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", getattr(torch, dtype) if v.is_floating_point() else v.dtype).contiguous()
             for k, v in model.state_dict().items()}
    atomic_save_safetensors(out / "model.safetensors", state, metadata={"format": "pt"})
    tokenizer.save(out / "tokenizer.json")
    atomic_write_json(out / "config.json", {"format": TEXT_FORMAT, "format_version": 1, "config": model.config.to_dict()})


def load_text_tower(model_dir, device: str = "cpu"):
    """Load what save_text_tower wrote: (TextEncoder in eval mode, Tokenizer)."""
    from safetensors.torch import load_file

    from sliq_cli.errors import InputError
    from sliq_cli.model.tokenizer import Tokenizer

    d = Path(model_dir)
    try:
        meta = json.loads((d / "config.json").read_text())
        if meta.get("format") != TEXT_FORMAT:
            raise ValueError(f"format is {meta.get('format')!r}, not {TEXT_FORMAT!r}")
        config = TextConfig.from_dict(meta["config"])
    except (OSError, KeyError, ValueError) as e:
        raise InputError(d / "config.json", f"not a sliq text tower config ({e})") from None
    model = TextEncoder(config)
    model.load_state_dict({k: v.float() for k, v in load_file(str(d / "model.safetensors")).items()})
    return model.to(device).eval(), Tokenizer.load(d / "tokenizer.json")
