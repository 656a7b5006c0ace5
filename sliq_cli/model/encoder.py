"""The SLIQUE image encoder F (paper section IV-A) and the quality features the ridge head reads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sliq_cli.model.config import EncoderConfig


class ResNetTrunk(nn.Sequential):
    """torchvision's ResNet body (stem, layer1..layer4) as a Sequential, so its parameter names (`0.weight`,
    `4.0.conv1.weight`, ...) stay those of every sliq ResNet checkpoint; `forward_stages` exposes the layers."""

    stage_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, name: str):
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)  # from scratch, as the paper trains it
        super().__init__(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)

    def forward_stages(self, x: torch.Tensor, wanted) -> dict[str, torch.Tensor]:
        """Feature maps of the `wanted` layers. (B, 3, H, W) normalised -> {name: (B, C, h, w)}; stops early."""
        out, need = {}, set(wanted)
        for i, module in enumerate(self):
            x = module(x)
            name = self.stage_names[i - 4] if i >= 4 else None
            if name in need:
                out[name] = x
                if len(out) == len(need):
                    break
        return out


def _trunk(name: str) -> nn.Module:
    if name.startswith("efficientnet-lite"):
        from sliq_cli.model.efficientnet import EfficientNetLite

        return EfficientNetLite(name)
    return ResNetTrunk(name)


class ImageEncoder(nn.Module):
    """Trunk -> adaptive average pool -> 2-layer MLP -> embedding.

    All entry points take RGB images in [0, 1], shape (B, 3, H, W), and normalise them with the config's
    preprocessing, so a caller can never feed the encoder differently from how it was trained.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.trunk = _trunk(config.trunk)  # convolutional body only; pooling is ours (adaptive, any input size)
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

    def fuse_for_inference(self) -> ImageEncoder:
        """A frozen encoder (eval mode) with the trunk's BatchNorms folded into its convolutions where the trunk
        supports it (EfficientNet-Lite): the same features, faster. In place; not for training or saving."""
        if not self.training and hasattr(self.trunk, "fuse_batchnorm"):
            self.trunk.fuse_batchnorm()
        return self

    @torch.no_grad()
    def quality_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features for the ridge head, as the config's FeatureSpec says: per scale, per stage, per pooling one
        block (L2-normalised with normalize="block"), concatenated. (B, 3, H, W) in [0, 1] -> (B, feature_dim), float32.
        """
        spec = self.config.features
        feats = []
        for s in spec.scales:
            xs = x if s == 1.0 else resize_scale(x, s)
            maps = self.trunk.forward_stages(self.normalize(xs), spec.stages)
            for stage in spec.stages:
                m = maps[stage].float()  # (B, C, h, w)
                for pooling in spec.pooling:
                    v = m.mean((2, 3)) if pooling == "mean" else m.std((2, 3), correction=0)  # (B, C)
                    feats.append(F.normalize(v, dim=1) if spec.normalize == "block" else v)
        return torch.cat(feats, dim=1)


def resize_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Antialiased bilinear resize by `scale` (the 2x-downscaled view of CONTRIQUE/SLIQUE features)."""
    h, w = x.shape[-2:]
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
