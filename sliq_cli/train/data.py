"""Pretraining data on the training device: a resident image store, a step-addressable sampler, batched views.

Image store. Every working image of the training records is decoded once at start (a process pool over the CPU
cores) and kept as uint8 on the training device, packed back to back in one flat buffer (no padding, any mix of
shapes). The codec distortions (JPEG2000 = KADIS type 9, JPEG = type 10) are CPU encoders, so their 5 levels
are precomputed per pristine image in the same pool and packed alongside; they are deterministic, so this is
exact. Everything else (the other 23 distortions, crops, flips, colour spaces) runs batched on the device, so a
step costs no CPU decoding. Memory: 3 h w bytes per authentic image and 11 x that per pristine image (itself +
10 codec variants): at 512 x 384, 0.59 MB and 6.5 MB. The default `--max-resident-gb 16` holds about 2,400
pristine or 27,000 authentic working images (our photo DB of 622 pristine + 1,000 authentic needs 4.6 GB);
above the limit the run stops before decoding anything (use --data-fraction or raise the limit).

Sampler. A pristine record stands for 126 samples (variant 0 = itself, variants 1..125 = KADIS (type, level)),
an authentic record for one; an epoch is that many samples. Each batch draws round(B * authentic_fraction)
authentic samples and the rest synthetic ones. The synthetic stream is a sequence of cycles; a cycle holds
every (pristine record, variant) once, in groups of up to `group_size` records of one working-image shape
sharing one variant (so one `distort` call serves a group), groups in random order. The authentic stream is a
sequence of random permutations. The authentic share of a batch defaults to the database's (authentic samples
over all samples of an epoch, so every sample is drawn about equally often); `authentic_fraction` fixes it. Both
streams are consumed at a fixed rate per step, so the batch of step s is a pure function of (seed, s): a resumed run
draws exactly what the uninterrupted run would have drawn.

Ladders (with --rank-weight; not in the paper): besides the batch, a few pristine photos each with one distortion at
all five levels, cropped at one place, for RankIQA's ranking loss (LadderMaker).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sliq_cli.background import Background
from sliq_cli.errors import SliqError
from sliq_cli.parallel import process_map
from sliq_cli.tadac.distortions import distort
from sliq_cli.tadac.saliency import centred_window
from sliq_cli.tadac.texts import N_KADIS_TYPES, VARIANTS_PER_PRISTINE, decode_variant, sample_texts
from sliq_cli.tensors import to_uint8
from sliq_cli.train.views import (
    benign_scales,
    crop_flat,
    half_scale_boxes,
    ola_positions,
    random_colour_space,
    random_flip,
    reencode_jpeg,
    to_device_async,
)

CODEC_TYPES = (9, 10)  # JPEG2000, JPEG: precomputed on the CPU
N_LEVELS = 5


def select_records(records: list, data_fraction: float, seed: int) -> list:
    """Training-split records, subsampled to `data_fraction` of each kind by a seeded hash of the id (stable
    under reordering of the manifest)."""
    train = [r for r in records if r.split == "train"]
    keep = []
    for kind in ("pristine", "authentic"):
        of_kind = [r for r in train if r.kind == kind]
        ranked = sorted(of_kind, key=lambda r: hashlib.blake2b(f"{seed}/{r.id}".encode(), digest_size=8).digest())
        keep.extend(ranked[: math.ceil(data_fraction * len(of_kind))])
    order = {id(r): i for i, r in enumerate(train)}
    return sorted(keep, key=lambda r: order[id(r)])


# ------------------------------------------------------------------------------------------------ image store


def _decode_worker(args: tuple) -> tuple[np.ndarray, np.ndarray | None]:
    """Pool worker: the uint8 working image (3, h, w), and for pristine records its codec variants (10, 3, h, w)
    ordered (type 9 levels 1..5, type 10 levels 1..5)."""
    from sliq_cli.tadac.database import load_work_image

    record, with_codecs = args
    x = load_work_image(record)[None]  # (1, 3, h, w) float
    base = to_uint8(x)[0].numpy()
    if not with_codecs:
        return base, None
    codec = [to_uint8(distort(x, t, lvl))[0] for t in CODEC_TYPES for lvl in range(1, N_LEVELS + 1)]
    return base, torch.stack(codec).numpy()


class ImageStore:
    """All working images (+ codec variants of pristine ones) packed in one flat uint8 buffer on the device.

    Image ids: 0..N-1 are the records' working images; `codec_id[r, k]` is the id of record r's codec variant
    k = 5 * (type == 10) + level - 1 (-1 for authentic records). `base[i]` is the offset of image i,
    `size[i]` its (h, w); both are kept on the CPU to plan crops without device synchronisation.
    """

    def __init__(self, flat: torch.Tensor, base: np.ndarray, size: np.ndarray, codec_id: np.ndarray):
        self.flat, self.base, self.size, self.codec_id = flat, base, size, codec_id

    @staticmethod
    def resident_bytes(records: list) -> int:
        return sum(3 * r.work_size[0] * r.work_size[1] * (1 + 2 * N_LEVELS * (r.kind == "pristine")) for r in records)

    @classmethod
    def build(cls, records: list, device: torch.device, workers: int, max_resident_gb: float,
              progress=None) -> ImageStore:
        need = cls.resident_bytes(records)
        if need > max_resident_gb * 1e9:
            raise SliqError(
                f"the image store needs {need / 1e9:.1f} GB for {len(records)} records (limit --max-resident-gb "
                f"{max_resident_gb:g}); use --data-fraction, or raise the limit if the device has the memory"
            )
        n = len(records)
        sizes = [(r.work_size[1], r.work_size[0]) for r in records]  # (h, w)
        pristine = [i for i, r in enumerate(records) if r.kind == "pristine"]
        codec_id = np.full((n, 2 * N_LEVELS), -1, dtype=np.int64)
        codec_id[pristine] = n + np.arange(len(pristine) * 2 * N_LEVELS).reshape(-1, 2 * N_LEVELS)
        size = np.array(sizes + [sizes[i] for i in pristine for _ in range(2 * N_LEVELS)], dtype=np.int64).reshape(-1, 2)
        numel = 3 * size[:, 0] * size[:, 1]
        base = np.concatenate([[0], np.cumsum(numel)[:-1]]).astype(np.int64)
        flat = torch.empty(int(numel.sum()), dtype=torch.uint8, device=device)
        jobs = [(r, r.kind == "pristine") for r in records]
        for i, (img, codec) in enumerate(process_map(_decode_worker, jobs, workers, uses_torch=True)):
            flat[base[i] : base[i] + img.size].copy_(torch.from_numpy(img).reshape(-1))
            if codec is not None:
                k = codec_id[i, 0]
                flat[base[k] : base[k] + codec.size].copy_(torch.from_numpy(codec).reshape(-1))
            if progress is not None:
                progress(i + 1, n)
        return cls(flat, base, size, codec_id)

    def images(self, ids: np.ndarray) -> torch.Tensor:
        """Images of one shape as a float batch (k, 3, h, w) in [0, 1]."""
        h, w = self.size[ids[0]]
        parts = [self.flat[self.base[i] : self.base[i] + 3 * h * w] for i in ids]
        return torch.stack(parts).view(len(ids), 3, h, w).float().div_(255)


# ------------------------------------------------------------------------------------------------ sampler


class Sampler:
    """Which (record, variant) pairs make up each step's batch (module docstring)."""

    def __init__(self, records: list, batch_size: int, authentic_fraction: float | None, group_size: int, seed: int):
        self.pristine = np.array([i for i, r in enumerate(records) if r.kind == "pristine"], dtype=np.int64)
        self.authentic = np.array([i for i, r in enumerate(records) if r.kind == "authentic"], dtype=np.int64)
        if not len(self.pristine) and not len(self.authentic):
            raise SliqError("the database has no training records")
        self.shapes = [tuple(r.work_size) for r in records]
        self.batch_size, self.group_size, self.seed = batch_size, group_size, seed
        if not len(self.authentic):
            self.n_authentic = 0
        elif not len(self.pristine):
            self.n_authentic = batch_size
        else:
            if authentic_fraction is None:  # the database's own share of authentic samples per epoch
                authentic_fraction = len(self.authentic) / self.epoch_samples
            self.n_authentic = min(batch_size - 1, max(1, round(batch_size * authentic_fraction)))
        self.n_synthetic = batch_size - self.n_authentic
        self._cycles: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    @property
    def epoch_samples(self) -> int:
        return VARIANTS_PER_PRISTINE * len(self.pristine) + len(self.authentic)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.epoch_samples / self.batch_size))

    def _synthetic_cycle(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 1, c])
        by_shape: dict[tuple, list[int]] = {}
        for i in self.pristine:
            by_shape.setdefault(self.shapes[i], []).append(int(i))
        groups = []
        for variant in range(VARIANTS_PER_PRISTINE):
            for members in by_shape.values():
                perm = rng.permutation(members)
                groups.extend((perm[k : k + self.group_size], variant) for k in range(0, len(perm), self.group_size))
        order = rng.permutation(len(groups))
        rec = np.concatenate([groups[g][0] for g in order])
        var = np.concatenate([np.full(len(groups[g][0]), groups[g][1]) for g in order])
        return rec, var

    def _authentic_cycle(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        perm = np.random.default_rng([self.seed, 2, c]).permutation(self.authentic)
        return perm, np.zeros(len(perm), dtype=np.int64)

    def _take(self, stream: str, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        make, length = (
            (self._synthetic_cycle, VARIANTS_PER_PRISTINE * len(self.pristine))
            if stream == "synthetic" else (self._authentic_cycle, len(self.authentic))
        )
        recs, vars_ = [], []
        pos = start
        while pos < start + n:
            c, off = divmod(pos, length)
            if (stream, c) not in self._cycles:
                self._cycles = {k: v for k, v in self._cycles.items() if k[0] != stream or k[1] >= c - 1}
                self._cycles[(stream, c)] = make(c)
            rec, var = self._cycles[(stream, c)]
            k = min(length - off, start + n - pos)
            recs.append(rec[off : off + k])
            vars_.append(var[off : off + k])
            pos += k
        return np.concatenate(recs), np.concatenate(vars_)

    def local_batch(self, step: int, rank: int = 0, world_size: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(record indices, variants) of this process's share of step `step`'s global batch: the rank-th
        contiguous chunk of the synthetic part and of the authentic part."""
        parts = []
        for stream, n in (("synthetic", self.n_synthetic), ("authentic", self.n_authentic)):
            if n == 0:
                continue
            rec, var = self._take(stream, step * n, n)
            lo, hi = rank * n // world_size, (rank + 1) * n // world_size
            parts.append((rec[lo:hi], var[lo:hi]))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ------------------------------------------------------------------------------------------------ views


@dataclass
class Batch:
    images: torch.Tensor  # (3b, 3, P, P) float [0, 1]: b saliency crops, then b first views, then b second views
    tokens: torch.Tensor | None  # (b, T) int64, T = the longest text of the batch; None without image-text
    text_ids: torch.Tensor | None  # (b,) int64, equal iff the texts are equal
    text_mask: torch.Tensor | None  # (b,) bool, False where the sample has no true text (a --texts subset)
    ladders: torch.Tensor | None = None  # (K, L, 3, P, P) float [0, 1]: K photos, one distortion at levels 1..L


class BackgroundSteps(Background):
    """produce(step) for each step, in a daemon thread, at most `depth` results ahead of the consumer; get(step)
    returns them in order (background.py: errors, close())."""

    def __init__(self, produce: Callable[[int], object], steps: range, depth: int, name: str):
        super().__init__(((step, produce(step)) for step in steps), depth, name)

    def get(self, step: int):
        got, item = next(self)
        assert got == step, f"prefetched step {got}, expected {step}"
        return item


class Prefetcher:
    """Builds the batches of the coming steps in a background thread, on its own CUDA stream, while the current
    step trains: view building is host-bound Python (per-group distortion calls, text sampling), and overlapping
    it with the GPU step is what keeps the GPU busy. A batch depends only on its step number (every random draw
    is seeded from it), so prefetched batches equal inline ones and resume stays exact. On the CPU it builds inline.
    close() (the training loop's `finally`) stops the thread and frees the batches it holds.
    """

    def __init__(self, make, steps: range, device: torch.device, depth: int = 4):
        self.make, self.device = make, device
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.stream = torch.cuda.Stream(device)
            self.background = BackgroundSteps(self._make_on_stream, steps, depth, "sliq-prefetch")

    def _make_on_stream(self, step: int) -> tuple[Batch, torch.cuda.Event]:
        with torch.cuda.stream(self.stream):
            batch = self.make(step)
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return batch, ready

    def get(self, step: int) -> Batch:
        if not self.cuda:
            return self.make(step)
        batch, ready = self.background.get(step)
        current = torch.cuda.current_stream(self.device)
        current.wait_event(ready)
        for t in (batch.images, batch.tokens, batch.text_ids, batch.text_mask, batch.ladders):
            if t is not None:
                t.record_stream(current)  # allocated on the side stream, used on this one
        return batch

    def close(self) -> None:
        if self.cuda:
            self.background.close(timeout=60.0)  # a step in progress finishes first


def _to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return to_device_async(torch.from_numpy(np.ascontiguousarray(a)), device)


def text_id(text: str) -> int:
    """A process-independent int64 id of a text (Python's hash() is salted per process, this is not)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


class TextPicker:
    """One true text per sample (drawn among `sample_texts`), tokenised, with its global id; cached per text."""

    def __init__(self, tokenizer, components: tuple[str, ...], context: int, appearance_on_pristine: bool = False):
        self.tokenizer, self.components, self.context = tokenizer, components, context
        self.appearance_on_pristine = appearance_on_pristine
        self._cache: dict[str, tuple[list[int], int]] = {}

    def _encoded(self, text: str) -> tuple[list[int], int]:
        if text not in self._cache:
            self._cache[text] = (self.tokenizer.encode_ids(text, self.context), text_id(text))
        return self._cache[text]

    def __call__(self, records: list, variants: np.ndarray, rng: np.random.Generator, device: torch.device):
        py = random.Random(int(rng.integers(2**62)))
        texts = []
        for r, v in zip(records, variants):
            options = sample_texts(r, int(v), py, self.components, self.appearance_on_pristine)
            texts.append(py.choice(options) if options else "")
        encoded = [self._encoded(t) for t in texts]
        longest = max(len(e[0]) for e in encoded)
        # Padded to a multiple of 8 (at most the context): few distinct shapes for torch.compile, aligned matmuls.
        tokens = np.zeros((len(texts), min(self.context, -(-longest // 8) * 8)), dtype=np.int64)
        for i, (ids, _) in enumerate(encoded):
            tokens[i, : len(ids)] = ids
        ids = np.array([e[1] for e in encoded], dtype=np.int64)
        mask = np.array([t != "" for t in texts])
        return _to_device(tokens, device), _to_device(ids, device), _to_device(mask, device)


class ViewMaker:
    """Builds a step's views on the device from (record, variant) pairs.

    Per sample: the (distorted) working image; its saliency crop (the database's 224 x 224 box, or a
    crop_size window centred on it) for the image-text branch, and two OLA crops for the image-image branch.
    A synthetic sample's distortion is applied once to the whole working image before cropping, so its text is
    true for all three crops. Distorted images are quantised to 8 bits, as stored KADIS images are.
    CONTRIQUE's augmentation: a flip on every crop; a colour space drawn from CONTRIQUE's five per view, on every
    view (`colour_views="all"`, the paper's "as CONTRIQUE") or on the two image-image views only ("image-image":
    the image-text crop's texts may speak of colour and brightness, which a grey or HSV view contradicts); and,
    with probability `half_scale_prob`, the second image-image view taken at about half scale (half_scale_boxes).
    With probability `benign_prob` (not in the paper; views.benign_scales), a second image-image view is stored again
    in a way viewers cannot see (JPEG quality 85-95, half of them mildly downsampled first), so that the positive pair
    teaches features to ignore how a file was stored while TADAC's 25 distortions stay negatives of each other.
    The saliency crop is made even without the image-text branch, so both ablations see the same images.
    """

    def __init__(self, store: ImageStore, records: list, crop_size: int, texts: TextPicker | None,
                 device: torch.device, colour_views: str = "all", half_scale_prob: float = 0.0,
                 benign_prob: float = 0.0):
        self.store, self.records, self.patch, self.texts, self.device = store, records, crop_size, texts, device
        self.colour_views, self.half_scale_prob, self.benign_prob = colour_views, half_scale_prob, benign_prob
        for r in records:
            w, h = r.work_size
            if min(w, h) < crop_size:
                raise SliqError(f"{r.path}: working image {w}x{h} is smaller than the {crop_size}px crops")
        self.sal_xy = np.array(
            [centred_window((r.saliency_box[0] + r.saliency_box[2] / 2, r.saliency_box[1] + r.saliency_box[2] / 2),
                            (crop_size, crop_size), r.work_size[0], r.work_size[1])
             for r in records],
            dtype=np.int64,
        ).reshape(-1, 2)
        self.generator = torch.Generator(device=device)

    def __call__(self, rec: np.ndarray, var: np.ndarray, rng: np.random.Generator) -> Batch:
        store, p, b = self.store, self.patch, len(rec)
        sizes = store.size[rec]  # (b, 2) (h, w)
        xy = np.stack([self.sal_xy[rec], *ola_positions(sizes, p, rng)])  # (3, b, 2): saliency, view 1, view 2
        half = rng.random(b) < self.half_scale_prob
        # Benign re-encodings draw from a stream of their own (spawning does not advance rng), so every other view
        # is the one a run without them would make.
        quality, scale = (benign_scales(b, self.benign_prob, p, rng.spawn(1)[0]) if self.benign_prob
                          else (None, np.zeros(b)))
        scale[half] = 2.0
        half_xy, half_side = half_scale_boxes(xy[2], sizes, p, scale)  # (b, 2), (b,)
        half_side[scale == 0] = 0  # 0: view 2 stays a P x P crop
        tl = np.array([(0, 0) if v == 0 else decode_variant(int(v)) for v in var], dtype=np.int64)  # (b, 2)
        types, levels = tl[:, 0], tl[:, 1]
        codec = np.isin(types, CODEC_TYPES)
        src = rec.copy()  # the stored image each undistorted or codec sample is cropped from
        src[codec] = store.codec_id[rec[codec], N_LEVELS * (types[codec] == 10) + levels[codec] - 1]

        order, chunks = [], []  # output order of the samples; (3, k, 3, P, P) uint8 crops per chunk
        direct = np.flatnonzero((types == 0) | codec)
        if len(direct):
            chunks.append(self._crops(store.flat, store.base[src[direct]], sizes[direct], xy[:, direct],
                                      half_xy[direct], half_side[direct]))
            order.append(direct)
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i in np.flatnonzero((types != 0) & ~codec):
            groups.setdefault((int(var[i]), *map(int, sizes[i])), []).append(int(i))
        for (v, h, w), members in groups.items():
            members = np.array(members)
            self.generator.manual_seed(int(rng.integers(2**62)))
            out = to_uint8(distort(store.images(rec[members]), *decode_variant(v), self.generator))  # (k, 3, h, w)
            local_base = np.arange(len(members), dtype=np.int64) * 3 * h * w
            chunks.append(self._crops(out.reshape(-1), local_base, sizes[members], xy[:, members],
                                      half_xy[members], half_side[members]))
            order.append(members)
        order = np.concatenate(order)
        crops = torch.cat(chunks, dim=1)  # (3, b, 3, P, P) uint8
        if quality is not None:
            crops[2] = reencode_jpeg(crops[2], quality[order])
        crops = crops.reshape(3 * b, 3, p, p)

        x = random_flip(crops.float().div_(255), torch.from_numpy(rng.random(3 * b) < 0.5))
        first = 0 if self.colour_views == "all" else b
        x[first:] = random_colour_space(x[first:], torch.from_numpy(rng.integers(0, 5, 3 * b - first)))
        if self.texts is None:
            return Batch(x, None, None, None)
        tokens, ids, mask = self.texts([self.records[i] for i in rec[order]], var[order], rng, x.device)
        return Batch(x, tokens, ids, mask)

    def _crops(self, flat: torch.Tensor, base: np.ndarray, sizes: np.ndarray, xy: np.ndarray, half_xy: np.ndarray,
               half_side: np.ndarray) -> torch.Tensor:
        """The three crops of k images in `flat`. base (k,), sizes (k, 2), xy (3, k, 2) -> (3, k, 3, P, P) uint8.
        Where half_side[i] > 0, view 2 of image i is the square (half_xy[i], half_side[i]) resized to P x P."""
        k, p = len(base), self.patch
        plan = np.concatenate([np.tile(base, 3)[:, None], np.tile(sizes, (3, 1)), xy.reshape(3 * k, 2)], axis=1)
        plan = _to_device(plan, flat.device)  # (3k, 5)
        crops = crop_flat(flat, plan[:, 0], plan[:, 1:3], plan[:, 3:5], p).view(3, k, 3, p, p)
        for side in np.unique(half_side[half_side > 0]):  # one gather and one resize per square size
            members = np.flatnonzero(half_side == side)
            hplan = _to_device(np.concatenate([base[members, None], sizes[members], half_xy[members]], axis=1),
                               flat.device)  # (m, 5)
            square = crop_flat(flat, hplan[:, 0], hplan[:, 1:3], hplan[:, 3:5], int(side)).float()  # (m, 3, s, s)
            small = F.interpolate(square, size=(p, p), mode="bilinear", antialias=True, align_corners=False)
            crops[2, _to_device(members, flat.device)] = to_uint8(small, scale=1)
        return crops


class LadderMaker:
    """Distortion ladders for the ranking loss (RankIQA, Liu et al. 2017; train/loss.py LadderRankLoss).

    A ladder is one pristine photo, one KADIS distortion type drawn uniformly, all N_LEVELS levels, each cropped at
    the same P x P window: the ladder differs only in how strongly it is distorted, so its order is known without
    any rating. Ladders come in groups of up to `group_size` photos of one working-image shape sharing one type (a
    shape drawn in proportion to its photos), so a group costs one `distort` call per level, as the batch's
    synthetic groups do; the codec types come from the store's precomputed variants. No flips or colour spaces:
    the ranking is about the distortion alone.
    """

    def __init__(self, store: ImageStore, records: list, crop_size: int, group_size: int, device: torch.device):
        by_shape: dict[tuple, list[int]] = {}
        for i, r in enumerate(records):
            if r.kind == "pristine":
                by_shape.setdefault(tuple(r.work_size), []).append(i)
        if not by_shape:
            raise SliqError("--rank-weight needs pristine records (ladders are distortions of pristine photos)")
        self.store, self.patch, self.group_size = store, crop_size, group_size
        self.shapes = [np.array(v, dtype=np.int64) for v in by_shape.values()]
        counts = np.array([len(v) for v in self.shapes], dtype=np.float64)
        self.shape_p = counts / counts.sum()
        self.generator = torch.Generator(device=device)

    def __call__(self, n: int, rng: np.random.Generator) -> torch.Tensor:
        """n ladders -> (n, N_LEVELS, 3, P, P) float [0, 1], levels 1..N_LEVELS in order (mildest first)."""
        store, p, groups, left = self.store, self.patch, [], n
        while left > 0:
            pool = self.shapes[rng.choice(len(self.shapes), p=self.shape_p)]
            rec = rng.choice(pool, size=min(self.group_size, left, len(pool)), replace=False)  # (k,)
            kadis_type = int(rng.integers(1, N_KADIS_TYPES + 1))
            k, (h, w) = len(rec), store.size[rec[0]]
            xy = np.stack([rng.integers(0, w - p + 1, k), rng.integers(0, h - p + 1, k)], axis=1)  # (k, 2) (x, y)
            sizes = _to_device(np.tile([h, w], (k, 1)), store.flat.device)
            xy = _to_device(xy, store.flat.device)
            levels = []
            for level in range(1, N_LEVELS + 1):
                if kadis_type in CODEC_TYPES:
                    src = store.codec_id[rec, N_LEVELS * (kadis_type == 10) + level - 1]
                    flat, base = store.flat, store.base[src]
                else:
                    self.generator.manual_seed(int(rng.integers(2**62)))
                    flat = to_uint8(distort(store.images(rec), kadis_type, level, self.generator)).reshape(-1)
                    base = np.arange(k, dtype=np.int64) * 3 * h * w
                levels.append(crop_flat(flat, _to_device(base, flat.device), sizes, xy, p))  # (k, 3, P, P) uint8
            groups.append(torch.stack(levels, dim=1))  # (k, L, 3, P, P)
            left -= k
        return torch.cat(groups).float().div_(255)
