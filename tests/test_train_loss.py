"""SliqueLoss against a direct (loop) computation of the paper's InfoNCE terms, text tower and tokenizer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sliq_cli.model.text import TextConfig, TextEncoder, load_text_tower, save_text_tower
from sliq_cli.model.tokenizer import Tokenizer
from sliq_cli.train.data import text_id
from sliq_cli.train.loss import SliqueLoss


def _reference_infonce(q, k, positives, tau):
    """Mean over anchors i of -sum_j t_ij log softmax_j(q_i . k_j / tau), t uniform over positives[i]."""
    total = 0.0
    for i in range(len(q)):
        logits = [float(q[i] @ k[j]) / tau for j in range(len(k))]
        lse = math.log(sum(math.exp(v) for v in logits))
        total += -sum(logits[j] - lse for j in positives[i]) / len(positives[i])
    return total / len(q)


def _reference(img, txt, v1, v2, texts, alpha, tau):
    img, txt, v1, v2 = (F.normalize(x.double(), dim=1) for x in (img, txt, v1, v2))
    n = len(texts)
    same = [[j for j in range(n) if texts[j] == texts[i]] for i in range(n)]
    diag = [[i] for i in range(n)]
    l_it = 0.5 * (_reference_infonce(img, txt, same, tau) + _reference_infonce(txt, img, same, tau))
    l_ii = 0.5 * (_reference_infonce(v1, v2, diag, tau) + _reference_infonce(v2, v1, diag, tau))
    return (1 - alpha) * l_it + alpha * l_ii, l_it, l_ii


def test_loss_matches_direct_computation_with_repeated_texts():
    g = torch.Generator().manual_seed(0)
    img, txt, v1, v2 = (torch.randn(6, 16, generator=g) for _ in range(4))
    texts = ["a photo of a dog", "heavy blur", "a photo of a dog", "bright", "heavy blur", "a photo of a dog"]
    ids = torch.tensor([text_id(t) for t in texts])
    out = SliqueLoss(alpha=0.7, temperature=0.1)(img, txt, v1, v2, ids)
    want, want_it, want_ii = _reference(img, txt, v1, v2, texts, 0.7, 0.1)
    assert out["loss"].item() == pytest.approx(want, rel=1e-5)
    assert out["loss_it"].item() == pytest.approx(want_it, rel=1e-5)
    assert out["loss_ii"].item() == pytest.approx(want_ii, rel=1e-5)
    # Treating repeated texts as negatives (single positive) gives a different, larger value.
    distinct = torch.arange(6)
    assert SliqueLoss()(img, txt, v1, v2, distinct)["loss_it"].item() != pytest.approx(want_it, rel=1e-3)


def test_single_branch_and_text_mask():
    g = torch.Generator().manual_seed(1)
    img, txt, v1, v2 = (torch.randn(5, 8, generator=g) for _ in range(4))
    texts = ["a", "b", "c", "d", "e"]
    ids = torch.tensor([text_id(t) for t in texts])
    _, want_it, want_ii = _reference(img, txt, v1, v2, texts, 0.7, 0.1)
    assert SliqueLoss(image_image=False)(img, txt, None, None, ids)["loss"].item() == pytest.approx(want_it, rel=1e-5)
    assert SliqueLoss(image_text=False)(None, None, v1, v2, ids)["loss"].item() == pytest.approx(want_ii, rel=1e-5)
    # Samples without a text drop out of the image-text term entirely.
    mask = torch.tensor([True, False, True, True, False])
    keep = mask.nonzero().squeeze(1)
    masked = SliqueLoss(image_image=False)(img, txt, None, None, ids, mask)["loss"].item()
    _, sub_it, _ = _reference(img[keep], txt[keep], v1[keep], v2[keep], [texts[i] for i in keep], 0.7, 0.1)
    assert masked == pytest.approx(sub_it, rel=1e-5)
    with pytest.raises(ValueError):
        SliqueLoss(image_text=False, image_image=False)


def test_text_ids_are_stable_and_distinct():
    assert text_id("a photo of a cat") == text_id("a photo of a cat")
    assert text_id("a photo of a cat") != text_id("a photo of a cat ")


def test_tokenizer_and_text_tower_roundtrip(tmp_path):
    texts = ["A photo of a Dog", "a photo of a cat", "slightly blurred", "heavily compressed with blocking"] * 20
    tok = Tokenizer.train(texts, vocab_size=400)
    assert tok.vocab_size <= 400
    batch = tok.encode_batch(["A PHOTO of a dog", "blurred"], context=77)
    assert batch.shape[0] == 2 and batch[0, 0] == tok.sot_id
    assert batch[1].tolist().count(0) > 0 and tok.eot_id in batch[1].tolist()
    assert batch[0].tolist() == tok.encode_ids("a photo of a dog")  # lower-cased (and the longest row: no padding)
    assert tok.encode_batch(["word " * 200], context=16).shape == (1, 16)

    model = TextEncoder(TextConfig(vocab_size=tok.vocab_size, width=32, layers=2, heads=4, embed_dim=24)).eval()
    with torch.no_grad():
        emb = model(batch)  # (2, 24)
        # Padding after the end-of-text token never changes the embedding (causal attention).
        padded = torch.cat([batch, torch.zeros(2, 5, dtype=torch.long)], dim=1)
        assert torch.allclose(model(padded), emb, atol=1e-5)
        assert torch.allclose(model(batch[1:, : int((batch[1] != 0).sum())]), emb[1:], atol=1e-5)
    save_text_tower(model, tok, tmp_path / "text")
    loaded, tok2 = load_text_tower(tmp_path / "text")
    with torch.no_grad():
        assert torch.equal(loaded(batch), emb)
    assert tok2.encode_batch(["a photo of a dog"]).tolist() == tok.encode_batch(["a photo of a dog"]).tolist()


def test_default_text_tower_has_clip_shape():
    n = sum(p.numel() for p in TextEncoder(TextConfig()).parameters())
    assert 62e6 < n < 64e6  # the paper's 63M
