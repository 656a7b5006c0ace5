"""The library function behind `sliq explain`: why an image scored as it did, in words.

Per image:
- score: the quality score from the scoring engine itself (`sliq_cli.iqa.score.Scorer`: full resolution, the
  encoder's quality features, the ridge head), so `sliq explain` and `sliq score` always agree; its encoder also
  gives the embeddings below.
- descriptions: the image's contrastive embedding `encoder(crop)` compared (cosine) with text embeddings of the
  TADAC distortion descriptions: every text type (19) at every degree (5), and the pristine phrases as one more
  candidate, so a clean photo can come out as "no visible distortion". The crop is the 224 x 224 window of maximum
  spectral-residual saliency of the image's TADAC working image (fitted inside 512x384, `tadac.database`): exactly
  the view the image-text branch was pretrained on, at the size it was trained at. (A centre crop would often miss
  the subject, whose sharpness and exposure are what the training texts were paired with.)
  Each candidate's text embedding is a prompt ensemble, as CLIP zero-shot classification does: the normalised mean of
  the embeddings of all 10 phrases of the type, each filled with a degree word of that level (all 20 phrases for
  pristine). It is shown as one canonical text (the type's first phrase with the level's first degree word:
  "moderate blur"). The K returned are K different text types (pristine counts as one), each at its most similar
  degree, sorted by similarity; so the top K never repeat one problem at five degrees.
  Each description carries two numbers: "cosine", the cosine similarity of the crop's and the text's embeddings
  (in [-1, 1]), and "similarity", what the ranking sorts by: the cosine, plus for "no visible distortion" the
  model's calibrated pristine offset (load_pristine_offset), so that one can exceed 1.
  The descriptions and the score can disagree: the score is the head's reading of the whole image's multi-scale
  quality features on its MOS scale (content and composition weigh in, as they did for the raters), the
  descriptions the nearest of a fixed set of distortion texts to one 224 px crop. A photo whose nearest text is
  "no visible distortion" can still score mid-scale, and the default model, trained on 0.2 % of the paper's data,
  confuses some distortions (a strongly darkened photo is often nearest "oversaturation"; its brightness bin says
  "a dark photo").
- appearance: brightness, contrast, FISH sharpness and colourfulness (`tadac.appearance`) of the working image,
  the same measurement the database binned, each binned low/medium/high and worded with a phrase of that bin.

Bin thresholds travel with the model: MODEL/text/appearance.json, {"thresholds": {attribute: [t1, t2]}, ...}, the
tertiles of the database the text tower was trained on (its appearance texts were binned by exactly these). Where
a model lacks that file (exports before it existed), DEFAULT_THRESHOLDS are used: the shipped default model's
(weights/text/appearance.json: the TADAC database of all 3,453 photos of the kit, 50 held out).

Text embeddings of the fixed description set are computed once per (text tower, device) and kept in memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np

from sliq_cli.errors import InputError, SliqError, UsageError
from sliq_cli.model.interpolate import text_aligned_encoder
from sliq_cli.tadac.appearance import ATTRIBUTES, appearance, bin_value
from sliq_cli.tadac.texts import DEGREE_WORDS, PRISTINE_PHRASES, TEXT_TYPES, fill, slot_kind

TEXT_DIR = "text"
APPEARANCE_FILE = "appearance.json"
CALIBRATION_FILE = "explain.json"
CROP = 224  # the pretraining crop size of the image-text view (saliency.CROP)
MAX_TOP = len(TEXT_TYPES) + 1  # 19 text types + pristine
PRISTINE = "pristine"
PRISTINE_TEXT = "no visible distortion"
# Tertiles of the shipped default model's TADAC database (weights/text/appearance.json, rounded).
DEFAULT_THRESHOLDS: dict[str, list[float]] = {
    "brightness": [0.4270, 0.5182],
    "contrast": [0.1835, 0.2419],
    "sharpness": [10.48, 14.54],
    "colourfulness": [27.52, 47.81],
}
DEFAULT_THRESHOLDS_SOURCE = "default tertiles (the shipped default model's TADAC database, 3,453 photos)"
# One wording per (attribute, bin), taken from the phrase bank.
APPEARANCE_WORDING: dict[str, dict[str, str]] = {
    "brightness": {"low": "a dark photo", "medium": "medium brightness", "high": "a bright photo"},
    "contrast": {"low": "low contrast", "medium": "medium contrast", "high": "high contrast"},
    "sharpness": {"low": "a soft image", "medium": "medium sharpness", "high": "a sharp photo"},
    "colourfulness": {"low": "muted colours", "medium": "moderately colourful", "high": "a colourful photo"},
}


@dataclass(frozen=True)
class Candidate:
    """One description: a text type at a degree (1..5), or pristine (type_id 0, level 0)."""

    type_id: int
    type: str
    level: int
    text: str  # the canonical wording shown to the user
    ensemble: tuple[str, ...]  # the texts whose mean embedding stands for it


def candidates() -> list[Candidate]:
    """Pristine first, then text type 1..19 x level 1..5, type-major: index 1 + 5 (type_id - 1) + (level - 1)."""
    out = [Candidate(0, PRISTINE, 0, PRISTINE_TEXT, PRISTINE_PHRASES)]
    for t in TEXT_TYPES:
        for level, words in sorted(DEGREE_WORDS.items()):
            ensemble = tuple(fill(p, words[slot_kind(p)][i % len(words[slot_kind(p)])]) for i, p in enumerate(t.phrases))
            out.append(Candidate(t.id, t.name, level, fill(t.phrases[0], words[slot_kind(t.phrases[0])][0]), ensemble))
    return out


CANDIDATES = candidates()
N_LEVELS = len(DEGREE_WORDS)


class NoTextTowerError(SliqError):
    """The model has no text tower (MODEL/text/), which `sliq explain` needs."""


NoTextTower = NoTextTowerError  # the name before #29, still imported by code written against it


def text_dir(model_dir) -> Path:
    """MODEL/text/, or a NoTextTowerError that says how to get a model with one."""
    d = Path(model_dir) / TEXT_DIR
    if not (d / "config.json").is_file():
        raise NoTextTowerError(
            f"{model_dir}: this model has no text tower ({d} is missing), so it cannot put its judgement into words. "
            "`sliq explain` needs a model exported by `sliq pretrain` (RUN/export holds text/ with the text tower "
            "and tokenizer): give --model RUN/export. The shipped default model may come without one."
        )
    return d


def load_thresholds(model_dir) -> tuple[dict[str, list[float]], str]:
    """(thresholds, where they came from): MODEL/text/appearance.json when present, else DEFAULT_THRESHOLDS."""
    path = Path(model_dir) / TEXT_DIR / APPEARANCE_FILE
    if not path.is_file():
        return DEFAULT_THRESHOLDS, DEFAULT_THRESHOLDS_SOURCE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))["thresholds"]
        thresholds = {a: [float(v) for v in raw[a]] for a in ATTRIBUTES}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(path, f"not an appearance thresholds file ({type(e).__name__}: {e})") from None
    bad = [a for a, t in thresholds.items() if len(t) != 2 or not t[0] <= t[1]]
    if bad:
        raise InputError(path, f"thresholds of {', '.join(bad)} are not two ascending numbers [t1, t2]")
    return thresholds, str(path)


def load_pristine_offset(model_dir) -> float:
    """MODEL/text/explain.json's "pristine_offset" (0 when absent): added to the pristine description's similarity.

    The pristine phrases are the true text of 1 in 126 synthetic training samples, and each distortion type enters the
    ranking with the best of its 5 degrees, so an undistorted photo's nearest description is almost never the
    pristine one. `bench/explain_check.py --calibrate` sets the offset on photos the model never trained on (its own
    training photos' pristine texts are memorised) to the value that best separates them from their visibly
    distorted versions (levels 2..5); test on other photos.
    """
    path = Path(model_dir) / TEXT_DIR / CALIBRATION_FILE
    if not path.is_file():
        return 0.0
    try:
        return float(json.loads(path.read_text(encoding="utf-8"))["pristine_offset"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(path, f"not an explain calibration file ({type(e).__name__}: {e})") from None


def describe_appearance(rgb: np.ndarray, thresholds: dict[str, list[float]]) -> dict[str, dict]:
    """The four attributes of an (H, W, 3) [0, 1] working image: {attr: {"value", "bin", "phrase"}}."""
    out = {}
    for attr, value in appearance(rgb).items():
        b = bin_value(value, thresholds[attr])
        out[attr] = {"value": round(value, 4), "bin": b, "phrase": APPEARANCE_WORDING[attr][b]}
    return out


@lru_cache(maxsize=4)
def _text_embeddings(folder: str, stamp: int, device: str):
    """(len(CANDIDATES), D) unit-norm ensemble embeddings; `stamp` (weights' mtime) invalidates an edited tower."""
    import torch
    import torch.nn.functional as F

    from sliq_cli.model.text import load_text_tower

    model, tokenizer = load_text_tower(folder, device=device)
    texts = sorted({t for c in CANDIDATES for t in c.ensemble})
    index = {t: i for i, t in enumerate(texts)}
    chunks = []
    with torch.inference_mode():
        for k in range(0, len(texts), 256):
            tokens = tokenizer.encode_batch(texts[k : k + 256], model.config.context).to(device)  # (b, T)
            chunks.append(F.normalize(model(tokens).float(), dim=1))  # (b, D)
    emb = torch.cat(chunks)  # (n_texts, D)
    rows = [emb[[index[t] for t in c.ensemble]].mean(dim=0) for c in CANDIDATES]  # each (D,)
    return F.normalize(torch.stack(rows), dim=1)  # (n_candidates, D)


class Explainer:
    """An image encoder, the text embeddings of the description set, and the appearance bins of one model."""

    def __init__(self, encoder, model_dir, device: str = "cpu"):
        """encoder: the model's, when the caller has it loaded (a scorer's), else None. An interpolated model
        describes with the encoder its texts were trained with instead (model/interpolate.py)."""
        self.model_dir = Path(model_dir)
        folder = text_dir(self.model_dir)
        self.thresholds, self.thresholds_source = load_thresholds(self.model_dir)
        self.pristine_offset = load_pristine_offset(self.model_dir)
        encoder = text_aligned_encoder(self.model_dir, device, loaded=encoder)
        self.encoder, self.device = encoder, device
        weights = folder / "model.safetensors"
        stamp = weights.stat().st_mtime_ns if weights.is_file() else 0
        self.text_emb = _text_embeddings(str(folder.resolve()), stamp, device)  # (96, D)
        if self.text_emb.shape[1] != encoder.config.embed_dim:
            raise SliqError(f"{folder}: the text tower embeds in {self.text_emb.shape[1]} dimensions, the image "
                            f"encoder in {encoder.config.embed_dim}; they were not trained together")

    @classmethod
    def load(cls, model: str | None = None, device: str = "auto") -> Explainer:
        """Without a head (no scores): `model` as `--model`; loads its encoder."""
        from sliq_cli.iqa.features import resolve_device
        from sliq_cli.loading import find_model

        return cls(None, find_model(model), resolve_device(device))  # the missing-tower error before weights load

    @staticmethod
    def crop(rgb: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """The most salient CROP x CROP window of an (H, W, 3) working image: ((h, w, 3) crop, [x, y, w, h])."""
        from sliq_cli.tadac.saliency import saliency_box

        x, y, w, h = saliency_box(rgb, CROP)
        return rgb[y : y + h, x : x + w], [x, y, w, h]

    def similarities(self, crops: np.ndarray):
        """(B, h, w, 3) [0, 1] crops -> (B, len(CANDIDATES)) cosine similarities (the pristine one with the model's
        calibrated offset), a float32 CPU tensor."""
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32)).permute(0, 3, 1, 2).to(self.device)
        with torch.inference_mode():
            emb = F.normalize(self.encoder(x).float(), dim=1)  # (B, D)
            with torch.autocast(x.device.type, enabled=False):  # cosines in float32 under a caller's bf16 autocast
                sims = (emb @ self.text_emb.T).cpu()  # (B, n_candidates)
                sims[:, 0] += self.pristine_offset  # the calibrated pristine candidate (load_pristine_offset)
                return sims

    @staticmethod
    def by_type(sims):
        """(B, 96) -> ((B, 20) best similarity per type, (B, 20) its level); column 0 = pristine, t = type id t."""
        import torch

        per_level = sims[:, 1:].reshape(len(sims), len(TEXT_TYPES), N_LEVELS)  # (B, 19, 5)
        best, arg = per_level.max(dim=2)  # (B, 19)
        scores = torch.cat([sims[:, :1], best], dim=1)  # (B, 20)
        levels = torch.cat([torch.zeros_like(arg[:, :1]), arg + 1], dim=1)  # (B, 20)
        return scores, levels

    def rank(self, sims_row, top: int) -> list[dict]:
        """The `top` most similar descriptions of one image's (96,) similarities, one per type, best first."""
        scores, levels = self.by_type(sims_row[None])
        order = scores[0].argsort(descending=True)[:top].tolist()
        out = []
        for col in order:
            level = int(levels[0, col])
            c = CANDIDATES[0 if col == 0 else 1 + (col - 1) * N_LEVELS + level - 1]
            similarity = float(scores[0, col])
            cosine = similarity - (self.pristine_offset if col == 0 else 0.0)
            out.append({"text": c.text, "type": c.type, "level": c.level, "similarity": round(similarity, 4),
                        "cosine": round(cosine, 4)})
        return out

    def describe(self, rgb: np.ndarray, top: int) -> dict:
        """Descriptions, appearance and crop box of one (H, W, 3) [0, 1] working image."""
        crop, box = self.crop(rgb)
        sims = self.similarities(crop[None])  # (1, 96)
        return {"descriptions": self.rank(sims[0], top), "appearance": describe_appearance(rgb, self.thresholds),
                "crop": box}


@dataclass
class ExplainRun:
    """What explains with what; `records` streams one JSON-ready dict per image in completion order."""

    scorer: object  # sliq_cli.iqa.score.Scorer: the scores' encoder, head and device
    thresholds_source: str  # MODEL/text/appearance.json, or DEFAULT_THRESHOLDS_SOURCE
    records: Iterator[dict]


def check_top(top: int) -> None:
    if not 1 <= top <= MAX_TOP:
        raise UsageError(f"--top must be in 1..{MAX_TOP} (19 distortion types + pristine), not {top}")


def explain_images(paths: list, model: str | None = None, head: str | None = None, top: int = 5,
                   device: str = "auto", **options) -> ExplainRun:
    """Resolve model, text tower and head (errors raise before any image is read), then stream explanations.
    `options`: the scorer's (batch_size, workers, compile, max_side), as `sliq score --explain` passes them.

    Record: the scorer's record ({"path", "score"} (+ "out_of_range")) + "descriptions": [{"text", "type",
    "level", "similarity", "cosine"}] (`top` of them, best first; the module docstring says what the numbers are), "appearance": {attr: {"value", "bin", "phrase"}},
    "crop": [x, y, w, h] in working-image pixels; a file that cannot be read gives {"path", "score": None, "error"}.
    """
    from sliq_cli.images import ImageLoadError
    from sliq_cli.iqa.score import Scorer
    from sliq_cli.loading import find_model
    from sliq_cli.tadac.database import load_work_pil

    check_top(top)
    model_dir = find_model(model)
    text_dir(model_dir)  # the missing-tower error before any weights load
    scorer = Scorer.load(str(model_dir), head, device, **options)
    explainer = Explainer(scorer.encoder, model_dir, scorer.device)  # the scorer's, unless the texts know another

    def records() -> Iterator[dict]:
        for rec in scorer.records(paths):
            if rec.get("error"):
                yield rec
                continue
            try:
                rgb = np.asarray(load_work_pil(rec["path"]), dtype=np.float32) / 255.0  # (h, w, 3)
            except ImageLoadError as e:
                yield {"path": rec["path"], "score": None, "error": e.reason}
                continue
            yield {**rec, **explainer.describe(rgb, top)}

    return ExplainRun(scorer, explainer.thresholds_source, records())


def explain(paths, model: str | None = None, head: str | None = None, top: int = 5, device: str = "auto") -> list[dict]:
    """Explanations of image files (or folders of them) as JSON-ready records (see `explain_images`)."""
    from sliq_cli.images import list_images

    files = list_images([str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)])
    if not files:
        raise UsageError("no images found in the given paths")
    return list(explain_images(files, model=model, head=head, top=top, device=device).records)
