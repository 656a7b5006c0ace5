"""The SLIQUE image encoder F (paper section IV-A) and the quality features the ridge head reads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sliq_cli.model.config import EncoderConfig


def _trunk(name: str) -> nn.Module:
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)  # from scratch, as the paper trains it
    net.fc = nn.Identity()
    net.avgpool = nn.Identity()
    return net


class ImageEncoder(nn.Module):
    """ResNet trunk -> adaptive average pool -> 2-layer MLP -> embedding.

    All entry points take RGB images in [0, 1], shape (B, 3, H, W), and normalise them with the config's
    preprocessing, so a caller can never feed the encoder differently from how it was trained.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        trunk = _trunk(config.trunk)
        # Keep the convolutional body only; pooling is ours (adaptive, any input size).
        self.trunk = nn.Sequential(
            trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool, trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.projector = nn.Sequential(
            nn.Linear(config.trunk_dim, config.hidden_dim),
            nn.BatchNorm1d(config.hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden_dim, config.embed_dim),
        )
        pre = config.preprocess
        self.register_buffer("pixel_mean", torch.tensor(pre.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pre.std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.pixel_mean.to(x.dtype)) / self.pixel_std.to(x.dtype)

    def trunk_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled trunk feature. (B, 3, H, W) in [0, 1] -> (B, trunk_dim)."""
        return self.pool(self.trunk(self.normalize(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Contrastive embedding (not normalised; the loss normalises). (B, 3, H, W) -> (B, embed_dim)."""
        return self.projector(self.trunk_features(x))

    @torch.no_grad()
    def quality_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features for the ridge head: L2-normalised pooled trunk features at each configured scale, concatenated.

        (B, 3, H, W) in [0, 1] -> (B, trunk_dim * len(scales)), float32.
        """
        feats = []
        for s in self.config.preprocess.scales:
            xs = x if s == 1.0 else resize_scale(x, s)
            feats.append(F.normalize(self.trunk_features(xs).float(), dim=1))  # (B, trunk_dim)
        return torch.cat(feats, dim=1)


def resize_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Antialiased bilinear resize by `scale` (the 2x-downscaled view of CONTRIQUE/SLIQUE features)."""
    h, w = x.shape[-2:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
