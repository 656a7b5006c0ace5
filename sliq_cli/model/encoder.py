"""The SLIQUE image encoder F (paper section IV-A) and the quality features the ridge head reads."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from sliq_cli.model.canvas import resize_scale
from sliq_cli.model.config import EncoderConfig


class ResNetTrunk(nn.Sequential):
    """torchvision's ResNet body (stem, layer1..layer4) as a Sequential, so its parameter names (`0.weight`,
    `4.0.conv1.weight`, ...) stay those of every sliq ResNet checkpoint; `forward_stages` exposes the layers."""

    stage_names = ("layer1", "layer2", "layer3", "layer4")
    # The stride-2 layers (model/canvas.py): conv1 7x7, the max pool, the first blocks of layer2..4 (3x3 or 1x1).
    downsampling = ((7, 3), (3, 1), (3, 1), (3, 1), (3, 1))
    _WINDOWED = (0, 3)  # conv1 and the max pool: the stem's spatial windows
    channels_last = True  # on CUDA: tensor-core convolutions want it (bf16)

    def __init__(self, name: str):
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)  # from scratch, as the paper trains it
        super().__init__(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)

    def forward_stages(self, x: torch.Tensor, wanted, region=None) -> dict[str, torch.Tensor]:
        """Feature maps of the `wanted` layers. (B, 3, H, W) normalised -> {name: (B, C, h, w)}; stops early.
        region: for a canvas batch (model/canvas.py), its ValidRegion."""
        out, need = {}, set(wanted)
        for i, module in enumerate(self):
            if region is None:
                x = module(x)
            elif i >= 4:
                for block in module:
                    x = _masked_block(block, x, region)
            else:  # post-ReLU zeros before the max pool equal its -inf padding: windows hold a value >= 0
                x = module(region.zero_outside(x) if i in self._WINDOWED else x)
            name = self.stage_names[i - 4] if i >= 4 else None
            if name in need:
                out[name] = x
                if len(out) == len(need):
                    break
        return out


def _masked_block(block: nn.Module, x: torch.Tensor, region) -> torch.Tensor:
    """torchvision's Bottleneck / BasicBlock forward with the canvas zeroed before each spatial convolution."""
    from torchvision.models.resnet import Bottleneck

    identity = x if block.downsample is None else block.downsample(x)  # 1x1: pointwise, needs no mask
    if isinstance(block, Bottleneck):
        out = block.relu(block.bn1(block.conv1(x)))
        out = block.relu(block.bn2(block.conv2(region.zero_outside(out))))
        out = block.bn3(block.conv3(out))
    else:
        out = block.relu(block.bn1(block.conv1(region.zero_outside(x))))
        out = block.bn2(block.conv2(region.zero_outside(out)))
    return block.relu(out + identity)


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
        self._blocks: dict = {}  # (block widths, device) -> each feature column's block, and as one-hot
        # Set by load_encoder: which saved weights these are. A freshly built encoder has none, so nothing keyed by
        # the fingerprint (feature cache, heads) takes it for a saved checkpoint.
        self.fingerprint: str | None = None
        self.source = ""  # the checkpoint folder
        self.meta: dict = {}  # its config.json

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.pixel_mean.to(x.dtype)) / self.pixel_std.to(x.dtype)

    def trunk_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled trunk feature. (B, 3, H, W) in [0, 1] -> (B, trunk_dim)."""
        return self.pool(self.trunk(self.normalize(x))).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Contrastive embedding (not normalised; the loss normalises). (B, 3, H, W) -> (B, embed_dim)."""
        return self.projector(self.trunk_features(x))

    def fuse_for_inference(self) -> ImageEncoder:
        """A frozen copy (eval mode) with the trunk's BatchNorms folded into its convolutions where the trunk
        supports it (EfficientNet-Lite): the same features, faster; not for training or saving. This encoder is left
        as it was (a fine-tuning run scores its encoder mid-training)."""
        fused = copy.deepcopy(self).eval()
        if hasattr(fused.trunk, "fuse_batchnorm"):
            fused.trunk.fuse_batchnorm()
        return fused

    @torch.no_grad()
    def quality_features(self, x: torch.Tensor, layout=None, scale_features=None) -> torch.Tensor:
        """Features for the ridge head, as the config's FeatureSpec says: per scale, per stage, per pooling one
        block (L2-normalised with normalize="block"), concatenated. (B, 3, H, W) in [0, 1] -> (B, feature_dim), float32.

        layout: for a canvas batch of images of several sizes, their CanvasLayout (model/canvas.py); each image gets
        the features it gets alone. scale_features: what runs each scale (default self.scale_features; a scorer
        passes its compiled copy).
        """
        return self.quality_features_grad(x, layout, scale_features)

    def quality_features_grad(self, x: torch.Tensor, layout=None, scale_features=None) -> torch.Tensor:
        """quality_features with autograd, for fine-tuning (sliq_cli.train.finetune); the same computation."""
        run = scale_features or self.scale_features_grad
        feats = []
        for s in self.config.features.scales:
            if s == 1.0:
                xs, lay = x, layout
            elif layout is None:
                xs, lay = resize_scale(x, s), None
            else:
                xs, lay = layout.rescale(x, s)
            feats.append(run(xs, None if lay is None else lay.region_table(x.device)))
        return torch.cat(feats, dim=1)

    @torch.no_grad()
    def scale_features(self, x: torch.Tensor, region_table: torch.Tensor | None = None) -> torch.Tensor:
        """quality_features of one scale. region_table: a canvas batch's CanvasLayout.region_table(), pooling each
        image over its own region. (B, 3, H, W) in [0, 1] -> (B, feature_dim / scales), float32.

        Written for few PyTorch calls (a GPU batch's CPU launch time is the calls'): stages of one spatial size pool
        as one map, and the blocks normalise together."""
        return self.scale_features_grad(x, region_table)

    def scale_features_grad(self, x: torch.Tensor, region_table: torch.Tensor | None = None) -> torch.Tensor:
        """scale_features with autograd, for fine-tuning."""
        from sliq_cli.model.canvas import ValidRegion

        spec = self.config.features
        region = None if region_table is None else ValidRegion(region_table, x.shape[-2:],
                                                                len(self.trunk.downsampling) + 1)
        maps = self.trunk.forward_stages(self.normalize(x), spec.stages, region)
        by_size: dict[tuple, list[str]] = {}
        for stage in spec.stages:
            by_size.setdefault(tuple(maps[stage].shape[-2:]), []).append(stage)
        pooled = {}  # stage -> {"mean": (B, C), "std": (B, C)}
        for stages in by_size.values():
            m = torch.cat([maps[s] for s in stages], 1) if len(stages) > 1 else maps[stages[0]]  # (B, C, h, w)
            if region is not None:
                mean, std = region.mean_std(m)  # (B, C) each
            elif torch.is_grad_enabled():  # std's gradient at 0 (a channel constant over the map) is NaN: floor it
                var, mean = torch.var_mean(m.float(), (2, 3), correction=0)
                std = var.clamp_min(1e-12).sqrt()
            else:
                std, mean = torch.std_mean(m.float(), (2, 3), correction=0)
            widths = [maps[s].shape[1] for s in stages]
            for s, mu, sd in zip(stages, mean.split(widths, 1), std.split(widths, 1)):
                pooled[s] = {"mean": mu, "std": sd}
        blocks = [pooled[stage][pooling] for stage in spec.stages for pooling in spec.pooling]
        feats = torch.cat(blocks, 1)  # (B, D)
        if spec.normalize != "block":
            return feats
        widths = tuple(b.shape[1] for b in blocks)
        key = (widths, feats.device)
        if key not in self._blocks:  # built once, on the host: no copy per batch
            index = torch.repeat_interleave(torch.arange(len(widths)), torch.tensor(widths))  # (D,)
            self._blocks[key] = index.to(feats.device), F.one_hot(index).float().to(feats.device)  # (D,), (D, n)
        index, one_hot = self._blocks[key]
        # F.normalize of every block at once; the sums of squares as a product and a sum, not a matrix product
        # (autocast would take it to bf16) nor index_add_ (atomic, so not reproducible on a GPU)
        norms = (feats.square()[:, :, None] * one_hot).sum(1).sqrt().clamp_min(1e-12)  # (B, n)
        return feats / norms.index_select(1, index)

