"""Lower-cased byte-level BPE for the text encoder (paper III-A), trained on the TADAC database's own texts.

CLIP's tokenizer is a lower-cased byte-level BPE with 49,408 entries learned on web text; the paper uses that
scheme. We learn the merges from our database's texts with the `tokenizers` library instead of shipping CLIP's
vocabulary file; the templated texts need far fewer than 49,408 entries, so the learned vocabulary is usually
smaller (`vocab_size` is an upper bound). Saved as `tokenizer.json` next to the text tower.

Ids: 0 = padding, 1 = start of text, 2 = end of text; every encoded sequence is [SOT, ..., EOT] followed by
padding up to the longest sequence of the batch (at most `context` tokens; longer texts are cut, keeping EOT).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from sliq_cli.atomic import atomic_write_text
from sliq_cli.errors import InputError

PAD, SOT, EOT = "<|pad|>", "<|startoftext|>", "<|endoftext|>"
MAX_VOCAB = 49408


class Tokenizer:
    def __init__(self, backend):
        self._tok = backend
        self.pad_id = backend.token_to_id(PAD)
        self.sot_id = backend.token_to_id(SOT)
        self.eot_id = backend.token_to_id(EOT)
        if (self.pad_id, self.sot_id, self.eot_id) != (0, 1, 2):
            raise ValueError("tokenizer lacks the pad/start/end-of-text tokens at ids 0, 1, 2")

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = MAX_VOCAB) -> Tokenizer:
        from tokenizers import Tokenizer as Backend
        from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

        if not 259 <= vocab_size <= MAX_VOCAB:
            raise ValueError(f"vocab_size must be in 259..{MAX_VOCAB} (256 bytes + 3 special tokens), not {vocab_size}")
        tok = Backend(models.BPE())
        tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[PAD, SOT, EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer)
        return cls(tok)

    def encode_ids(self, text: str, context: int = 77) -> list[int]:
        """[SOT, ...tokens, EOT], cut to `context` tokens (EOT kept)."""
        ids = self._tok.encode(text, add_special_tokens=False).ids[: context - 2]
        return [self.sot_id, *ids, self.eot_id]

    def encode_batch(self, texts: list[str], context: int = 77):
        """Texts -> LongTensor (B, T), T = the batch's longest sequence (<= context), padded with 0."""
        import torch

        rows = [self.encode_ids(t, context) for t in texts]
        out = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out

    def save(self, path) -> None:
        atomic_write_text(path, self._tok.to_str())

    @classmethod
    def load(cls, path) -> Tokenizer:
        from tokenizers import Tokenizer as Backend

        path = Path(path)
        try:
            return cls(Backend.from_str(path.read_text(encoding="utf-8")))
        except Exception as e:  # OSError, or the tokenizers library's own error type on bad JSON
            raise InputError(path, f"not a readable tokenizer ({e})") from None
