"""TADAC annotation texts: the phrase banks are complete and grammatical, and sample_texts tells the truth."""

from __future__ import annotations

import json
import random
import re

import pytest

from sliq_cli.tadac.appearance import ATTRIBUTES, BINS
from sliq_cli.tadac.texts import (
    APPEARANCE_PHRASES,
    DEGREE_WORDS,
    KADIS_TO_TEXT_TYPE,
    PRISTINE_PHRASES,
    TEXT_TYPES,
    VARIANTS_PER_PRISTINE,
    all_texts,
    content_text,
    decode_variant,
    fill,
    indefinite_article,
    phrase_bank,
    sample_texts,
    slot_kind,
)


def _record(kind="pristine", label="umbrella", caption=None):
    return {"id": "x", "kind": kind, "label": label, "caption": caption,
            "bins": {"brightness": "low", "contrast": "medium", "sharpness": "high", "colourfulness": "low"}}


def _fills(text_type, level):
    return {fill(p, w) for p in text_type.phrases for w in DEGREE_WORDS[level][slot_kind(p)]}


def test_banks_have_the_papers_shape():
    assert len(TEXT_TYPES) == 19
    assert sorted(k for t in TEXT_TYPES for k in t.kadis) == list(range(1, 26))
    assert KADIS_TO_TEXT_TYPE[1] is KADIS_TO_TEXT_TYPE[2]  # Gaussian and lens blur share texts (paper III-C)
    for t in TEXT_TYPES:
        assert len(set(t.phrases)) == 10
        for p in t.phrases:
            assert len(re.findall(r"\{(?:adj|adv|quant)\}", p)) == 1, p
            assert not re.search(r"\ban? \{", p), f"article before a slot must be {{a}}: {p}"
    assert len(set(PRISTINE_PHRASES)) == 20
    assert {a: {b: len(set(APPEARANCE_PHRASES[a][b])) for b in BINS} for a in ATTRIBUTES} == {
        a: {b: 20 for b in BINS} for a in ATTRIBUTES}


def test_degree_words_are_distinct_across_levels():
    for kind in ("adj", "adv", "quant"):
        words = [w for level in range(1, 6) for w in DEGREE_WORDS[level][kind]]
        assert len(words) == len(set(words)), kind
    # So a filled phrase names exactly one level.
    for t in TEXT_TYPES:
        sets = [_fills(t, level) for level in range(1, 6)]
        assert all(not (sets[i] & sets[j]) for i in range(5) for j in range(i + 1, 5))


def test_articles_follow_sound():
    cases = {"hour": "an", "university": "a", "umbrella": "an", "unicycle": "a", "ewe": "a", "European robin": "a",
             "one-piece": "a", "honest broker": "an", "MRI scanner": "an", "CD player": "a", "X-ray": "an",
             "8-ball": "an", "11-year-old": "an", "hen": "a", "orangutan": "an", "ukulele": "a", "urban scene": "an",
             "unimportant thing": "an", "SUV": "an", "UFO": "a", "yak": "a"}
    assert {w: indefinite_article(w) for w in cases} == cases
    assert content_text("Egyptian  cat") == "a photo of an egyptian cat"
    assert fill("{a} {adv} noisy photo", "extremely") == "an extremely noisy photo"
    assert fill("{a} {adv} noisy photo", "severely") == "a severely noisy photo"


def test_level5_blur_sample_names_blur_with_a_level5_degree_word():
    blur = KADIS_TO_TEXT_TYPE[1]
    rng = random.Random(0)
    for _ in range(50):
        (text,) = sample_texts(_record(), 5, rng, ["distortion"])  # variant 5 = Gaussian blur, level 5
        assert text in _fills(blur, 5)
        assert any(w in text for kind in ("adj", "adv", "quant") for w in DEGREE_WORDS[5][kind])
        assert "blur" in text or "defocus" in text


def test_every_variant_texts_its_type_and_level():
    rng = random.Random(1)
    for variant in range(1, VARIANTS_PER_PRISTINE):
        kadis, level = decode_variant(variant)
        text_type = KADIS_TO_TEXT_TYPE[kadis]
        texts = sample_texts(_record(), variant, rng, ["content", "distortion", "appearance"])
        assert texts[0] == "a photo of an umbrella"
        assert len(texts) == 2 and texts[1] in _fills(text_type, level)  # no appearance for distorted variants


def test_pristine_and_authentic_samples():
    rng = random.Random(2)
    all_three = ("content", "distortion", "appearance")
    pristine = sample_texts(_record(caption="Two dogs on a beach."), 0, rng, all_three)
    assert pristine[:2] == ["a photo of an umbrella", "Two dogs on a beach."]
    assert len(pristine) == 3 and pristine[2] in PRISTINE_PHRASES  # the paper: appearance texts on authentic only
    pristine = sample_texts(_record(caption="Two dogs on a beach."), 0, rng, all_three, appearance_on_pristine=True)
    assert pristine[2] in PRISTINE_PHRASES
    assert [t in APPEARANCE_PHRASES[a][b] for t, (a, b) in zip(pristine[3:], _record()["bins"].items())] == [True] * 4

    authentic = sample_texts(_record("authentic", label=None), 0, rng, ("content", "distortion", "appearance"))
    assert len(authentic) == 4  # no label, no caption, no known distortion: the four appearance texts
    assert authentic[0] in APPEARANCE_PHRASES["brightness"]["low"]
    assert authentic[2] in APPEARANCE_PHRASES["sharpness"]["high"]
    assert sample_texts(_record("authentic"), 0, rng, ["content"]) == ["a photo of an umbrella"]
    with pytest.raises(ValueError):
        sample_texts(_record("authentic"), 3, rng, ["content"])
    with pytest.raises(ValueError):
        sample_texts(_record(), 0, rng, ["colour"])
    with pytest.raises(ValueError):
        decode_variant(126)


def test_phrase_bank_and_corpus():
    bank = json.loads(json.dumps(phrase_bank()))
    assert len(bank["distortion_types"]) == 19 and set(bank["degree_words"]) == {"1", "2", "3", "4", "5"}

    class Db:
        records = [_record(label="hourglass"), _record(label=None, caption="A red kite.")]

    corpus = all_texts(Db())
    assert len(corpus) == len(set(corpus))
    assert {"a photo of an hourglass", "A red kite.", "some blurring", "a pristine image"} <= set(corpus)
    assert set(APPEARANCE_PHRASES["contrast"]["high"]) <= set(corpus)
