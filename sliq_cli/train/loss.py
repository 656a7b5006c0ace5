"""The SLIQUE joint contrastive loss (paper III-A, Eq. 1-4): L = (1 - alpha) * L_image-text + alpha * L_image-image,
and, beside it (not in the paper; issue #24), RankIQA's margin ranking between the levels of one distortion.

Both terms are InfoNCE with a fixed temperature on L2-normalised embeddings, symmetric in their two directions
(image->text and text->image; view1->view2 and view2->view1) as CLIP/open_clip compute it.

Deviation from the paper's single-positive Eq. (1): TADAC texts are templated, so two images of one batch often
carry the identical text (say, two photos of "a photo with heavy gaussian blur"). Treating one as the other's
negative would push an image away from a text that is true for it. Every pair with the same text id is
therefore a positive: the target of each row is uniform over its positives (a multi-positive InfoNCE, as in
SupCon/UniCL); with all texts distinct it is exactly Eq. (1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sliq_cli.train.distributed import gather_constant, gather_keep_local


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean over rows of the cross-entropy between soft targets and softmax(logits)."""
    per_row = -(targets * logits.log_softmax(dim=1)).sum(dim=1)  # (N,)
    return (weights * per_row).sum() / weights.sum().clamp(min=1)


def image_text_infonce(img: torch.Tensor, txt: torch.Tensor, ids: torch.Tensor, temperature: float,
                       valid: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric multi-positive InfoNCE. img, txt (N, D) normalised; ids (N,) equal iff the texts are identical.

    valid (N,) bool: samples that have a text (a `--texts` subset can leave some without one); the others take no
    part (neither as anchors nor as negatives). None: all valid.
    """
    logits = img @ txt.T / temperature  # (N, N), rows images, columns texts
    logits_t = logits.T  # rows texts, columns images
    pos = (ids[:, None] == ids[None, :]).to(logits.dtype)  # (N, N), symmetric, diagonal set
    weights = torch.ones_like(ids, dtype=logits.dtype)
    if valid is not None:
        weights = valid.to(logits.dtype)
        pos = pos * weights[:, None] * weights[None, :]
        # A large finite negative, not -inf: the zero targets of masked columns must give 0, not 0 * inf.
        logits = logits.masked_fill(~valid[None, :], -1e4)
        logits_t = logits_t.masked_fill(~valid[None, :], -1e4)
    targets = pos / pos.sum(dim=1, keepdim=True).clamp(min=1)
    return 0.5 * (_soft_cross_entropy(logits, targets, weights) + _soft_cross_entropy(logits_t, targets, weights))


def image_image_infonce(v1: torch.Tensor, v2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between two views; the positive of row i is column i. v1, v2 (N, D) normalised."""
    logits = v1 @ v2.T / temperature  # (N, N)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


class SliqueLoss(nn.Module):
    """forward(img_t, txt, view1, view2, text_ids) -> {"loss", "loss_it", "loss_ii"}.

    img_t: (B, D) embedding of the saliency crop; txt: (B, D) embedding of its text; view1, view2: (B, D)
    embeddings of the two OLA crops; text_ids: (B,) int64 from `sliq_cli.train.data.text_id`; text_mask: optional
    (B,) bool, False for samples without a text (see image_text_infonce). Embeddings unnormalised, any float dtype
    (computed in float32). With world_size > 1 every process gathers all processes' embeddings (negatives
    across the global batch) and returns the global-batch loss; see sliq_cli.train.distributed.
    With one branch disabled the loss is that branch alone (paper's ablation, Table IV); the disabled
    branch's inputs may be None and its entry in the result is NaN.
    """

    def __init__(self, alpha: float = 0.7, temperature: float = 0.1, rank: int = 0, world_size: int = 1,
                 image_text: bool = True, image_image: bool = True):
        super().__init__()
        if not (image_text or image_image):
            raise ValueError("at least one of the image-text and image-image branches must be on")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], not {alpha}")
        self.alpha, self.temperature = alpha, temperature
        self.rank, self.world_size = rank, world_size
        self.image_text, self.image_image = image_text, image_image

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        return gather_keep_local(F.normalize(x.float(), dim=1), self.rank, self.world_size)

    def forward(self, img_t, txt, view1, view2, text_ids, text_mask=None) -> dict[str, torch.Tensor]:
        nan = torch.tensor(float("nan"))
        loss_it = loss_ii = nan
        if self.image_text:
            ids = gather_constant(text_ids, self.world_size)  # (N,)
            valid = None if text_mask is None else gather_constant(text_mask, self.world_size)  # (N,)
            loss_it = image_text_infonce(self._gather(img_t), self._gather(txt), ids, self.temperature, valid)
        if self.image_image:
            loss_ii = image_image_infonce(self._gather(view1), self._gather(view2), self.temperature)
        if self.image_text and self.image_image:
            loss = (1 - self.alpha) * loss_it + self.alpha * loss_ii
        else:
            loss = loss_it if self.image_text else loss_ii
        return {"loss": loss, "loss_it": loss_it, "loss_ii": loss_ii}


class LadderRankLoss(nn.Module):
    """RankIQA's pairwise hinge (Liu et al., ICCV 2017) on distortion ladders: one photo with one distortion at
    levels 1..L (train/data.py LadderMaker), scored by a linear probe of the quality features. Level i is known to
    look better than level j > i, so its score must exceed j's by `margin`:

        L_rank = mean over ladders and pairs i < j of max(0, margin - (s_i - s_j))

    Local to each process (a ladder never spans processes), so it needs no gather; DDP averages its gradients.
    forward(scores (K, L), levels in order) -> scalar.
    """

    def __init__(self, margin: float = 1.0):
        super().__init__()
        if margin <= 0:
            raise ValueError(f"the ranking margin must be positive, not {margin}")
        self.margin = margin

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        s = scores.float()
        levels = s.shape[1]
        i, j = torch.triu_indices(levels, levels, offset=1, device=s.device)  # all pairs i < j
        return F.relu(self.margin - (s[:, i] - s[:, j])).mean()  # (K, L(L-1)/2) -> ()
