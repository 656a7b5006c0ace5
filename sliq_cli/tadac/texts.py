"""The TADAC annotation texts (paper III-C): content, distortion and appearance phrases, and which are true for a sample.

Content: "a photo of a(n) {label}" (article chosen by sound, see `indefinite_article`), lower-cased because the text
tower's BPE is lower-cased and identical texts must stay identical; captions are used verbatim.

Distortion: the 25 KADIS types are merged into 19 text types (the paper's Appendix A is not public, so the merges
are ours; each joins types whose results look alike and that a viewer would name with the same words):
  - Gaussian blur (1) + lens blur (2) -> "blur": both are isotropic defocus-like softening (the paper's own example).
  - colour diffusion (4) + colour shift (5) -> "colour bleeding": chroma smeared or displaced across edges; both
    read as colours leaking past object boundaries.
  - colour quantisation (6) + quantisation (22) -> "banding": both reduce the number of levels and give flat
    posterised regions with false contours.
  - white noise (11) + white noise in a colour component (12) + multiplicative noise (14) -> "noise": dense
    fine-grained random grain; which channel, or whether it scales with intensity, is not something people name.
  - non-eccentricity patch (20) + colour block (23) -> "patch artifacts": both paste foreign square patches into
    the image (displaced image content or flat colour).
  Motion blur, impulse noise, JPEG and JPEG2000, denoising, brighten, darken, mean shift, jitter, pixelate,
  sharpening, contrast change and the two saturation changes (HSV lowers it, LAB raises it: opposite looks) keep
  their own texts.
Each text type has 10 phrases with one slot for a degree word: {adj} before a mass or plural noun ("slight blur"),
{adv} before a participle or adjective ("heavily blurred"), {quant} before a mass noun ("some blurring"). {a} is an
indefinite article agreeing with the word after it. Each of the 5 degrees has words of all three kinds.
A distortion text is a random phrase of the type with a random degree word of the level.

Pristine images get one of 20 phrases of high quality. Appearance: brightness, contrast, sharpness and colourfulness
are binned low/medium/high over the database; each (attribute, bin) has 20 phrases.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sliq_cli.tadac.appearance import ATTRIBUTES, BINS

COMPONENTS = ("content", "distortion", "appearance")
N_KADIS_TYPES = 25
N_LEVELS = 5
VARIANTS_PER_PRISTINE = 1 + N_KADIS_TYPES * N_LEVELS  # variant 0 = pristine, 1..125 = (type, level)
CONTENT_TEMPLATE = "a photo of {a} {label}"


@dataclass(frozen=True)
class TextType:
    id: int
    name: str
    kadis: tuple[int, ...]
    phrases: tuple[str, ...]


TEXT_TYPES: tuple[TextType, ...] = (
    TextType(1, "blur", (1, 2), (
        "{adj} blur", "{quant} blurring", "{adv} blurred", "{a} {adv} blurred photo", "{adj} blurriness",
        "an image with {adj} blur", "{adv} defocused", "{adj} defocus blur", "{a} {adv} soft, blurry picture",
        "{quant} blur across the image")),
    TextType(2, "motion blur", (3,), (
        "{adj} motion blur", "{quant} motion blur", "{adv} blurred by motion", "{a} {adv} motion-blurred photo",
        "{adj} camera shake", "{quant} camera shake", "an image with {adj} motion blur",
        "{adj} streaking from movement", "{adv} smeared by camera movement", "{adj} directional blur")),
    TextType(3, "colour bleeding", (4, 5), (
        "{adj} colour bleeding", "{quant} colour bleeding", "colours {adv} bleeding across edges",
        "{adj} colour fringing", "{quant} colour fringing", "colour {adv} misaligned with edges",
        "{adj} chromatic smearing", "an image with {adj} colour bleeding", "{adj} colour misregistration",
        "{a} {adv} colour-smeared photo")),
    TextType(4, "banding", (6, 22), (
        "{adj} colour banding", "{quant} banding", "{adj} posterisation", "{adv} posterised",
        "{a} {adv} posterised photo", "{adj} quantisation artifacts", "{quant} false contouring",
        "an image with {adj} banding", "colours {adv} quantised", "{quant} posterisation")),
    TextType(5, "desaturation", (7,), (
        "{adj} desaturation", "{adv} desaturated", "{a} {adv} desaturated photo", "{adv} faded colours",
        "colours {adv} washed out", "{quant} colour loss", "{adj} loss of saturation",
        "an image with {adj} colour fading", "{adv} dull colours", "{quant} desaturation")),
    TextType(6, "oversaturation", (8,), (
        "{adj} oversaturation", "{adv} oversaturated", "{a} {adv} oversaturated photo",
        "colours {adv} oversaturated", "{quant} oversaturation", "{adv} exaggerated colours",
        "{adj} colour exaggeration", "an image with {adj} oversaturation", "{adv} garish colours",
        "{adj} saturation boost")),
    TextType(7, "jpeg2000 compression", (9,), (
        "{adj} jpeg2000 artifacts", "{adj} jpeg2000 compression", "{adv} compressed with jpeg2000",
        "{quant} wavelet compression ringing", "{adj} ringing around edges", "{quant} ringing",
        "{adv} smeared by wavelet compression", "an image with {adj} jpeg2000 artifacts",
        "{a} {adv} compressed jpeg2000 image", "{adj} wavelet compression blur")),
    TextType(8, "jpeg compression", (10,), (
        "{adj} jpeg artifacts", "{adj} jpeg compression", "{adv} compressed with jpeg", "{quant} blocking",
        "{adj} blockiness", "{quant} jpeg blockiness", "{a} {adv} compressed jpeg",
        "an image with {adj} compression artifacts", "{adj} 8x8 block artifacts", "{adv} blocky")),
    TextType(9, "noise", (11, 12, 14), (
        "{adj} noise", "{quant} noise", "{adv} noisy", "{a} {adv} noisy photo", "{adj} grain",
        "{quant} graininess", "{adv} grainy", "an image with {adj} noise", "{adj} colour noise", "{quant} speckle")),
    TextType(10, "impulse noise", (13,), (
        "{adj} impulse noise", "{adj} salt-and-pepper noise", "{quant} salt-and-pepper noise",
        "{quant} impulse noise", "{adv} speckled with white and black dots", "{adv} corrupted by impulse noise",
        "an image with {adj} salt-and-pepper noise", "{a} {adv} speckled photo", "{adj} pixel dropouts",
        "{adv} peppered with stray pixels")),
    TextType(11, "over-smoothing", (15,), (
        "{adj} over-smoothing", "{adv} over-smoothed", "{quant} smoothing", "{adj} denoising artifacts",
        "{adv} denoised", "{a} {adv} over-smoothed photo", "{adj} loss of fine texture", "{quant} texture loss",
        "an image with {adj} denoising smear", "{adv} waxy textures")),
    TextType(12, "overexposure", (16,), (
        "{adj} overexposure", "{adv} overexposed", "{a} {adv} overexposed photo", "{adv} brightened",
        "{quant} overexposure", "{adj} brightening", "an image with {adj} overexposure",
        "{adj} washed-out highlights", "{quant} excess brightness", "{adv} blown-out highlights")),
    TextType(13, "underexposure", (17,), (
        "{adj} underexposure", "{adv} underexposed", "{a} {adv} underexposed photo", "{adv} darkened",
        "{quant} underexposure", "{adj} darkening", "an image with {adj} underexposure", "{adj} crushed shadows",
        "{quant} darkening", "{adv} murky shadows")),
    TextType(14, "brightness shift", (18,), (
        "{adj} brightness shift", "{quant} brightness shift", "{adv} shifted brightness", "{adj} exposure error",
        "{adv} misexposed", "{a} {adv} misexposed photo", "{adj} intensity shift",
        "an image with {adj} brightness shift", "{quant} tonal shift", "{adv} shifted tones")),
    TextType(15, "jitter", (19,), (
        "{adj} jitter", "{quant} jitter", "{adv} jittered", "{a} {adv} jittered photo", "{adj} pixel jitter",
        "{adv} displaced pixels", "{quant} pixel displacement", "an image with {adj} jitter", "{adj} ragged edges",
        "edges {adv} jagged")),
    TextType(16, "patch artifacts", (20, 23), (
        "{adj} patch artifacts", "{adj} block artifacts", "{adv} patchy", "{a} {adv} patchy photo",
        "{adj} misplaced patches", "{adj} pasted blocks", "{adv} corrupted by blocks",
        "an image with {adj} patch artifacts", "{quant} patch corruption", "{quant} block damage")),
    TextType(17, "pixelation", (21,), (
        "{adj} pixelation", "{quant} pixelation", "{adv} pixelated", "{a} {adv} pixelated photo",
        "{adj} mosaic effect", "{adv} mosaicked", "an image with {adj} pixelation", "{adj} loss of resolution",
        "{adv} low-resolution", "{quant} pixel blockiness")),
    TextType(18, "oversharpening", (24,), (
        "{adj} oversharpening", "{adv} oversharpened", "{a} {adv} oversharpened photo", "{quant} oversharpening",
        "{adj} sharpening halos", "{quant} haloing", "{adv} harsh edges", "an image with {adj} oversharpening",
        "{adj} edge halos", "{adv} exaggerated edges")),
    TextType(19, "contrast change", (25,), (
        "{adj} contrast change", "{adj} contrast distortion", "{adv} altered contrast", "{quant} contrast distortion",
        "{adv} unnatural contrast", "a photo with {adj} contrast distortion", "{adj} tonal distortion",
        "{quant} contrast alteration", "an image with {adj} contrast change", "contrast {adv} changed")),
)

# Degree words by level (1 = slightest, 5 = most severe) and slot kind.
DEGREE_WORDS: dict[int, dict[str, tuple[str, ...]]] = {
    1: {"adj": ("slight", "faint", "barely visible", "very mild", "minimal"),
        "adv": ("slightly", "faintly", "barely", "very slightly", "marginally"),
        "quant": ("a trace of", "a hint of", "a touch of", "barely any", "a tiny amount of")},
    2: {"adj": ("mild", "light", "minor", "weak", "low-level"),
        "adv": ("mildly", "lightly", "somewhat", "modestly", "weakly"),
        "quant": ("a little", "a bit of", "a small amount of", "a low level of")},
    3: {"adj": ("moderate", "noticeable", "medium", "visible", "evident"),
        "adv": ("moderately", "noticeably", "visibly", "fairly", "evidently"),
        "quant": ("some", "a moderate amount of", "a fair amount of", "a noticeable amount of", "a medium level of")},
    4: {"adj": ("strong", "heavy", "significant", "considerable", "pronounced"),
        "adv": ("strongly", "heavily", "considerably", "significantly", "highly"),
        "quant": ("a lot of", "plenty of", "lots of", "a large amount of", "a high level of")},
    5: {"adj": ("severe", "extreme", "intense", "overwhelming", "very heavy"),
        "adv": ("severely", "extremely", "badly", "terribly", "intensely"),
        "quant": ("an extreme amount of", "a huge amount of", "an enormous amount of", "massive amounts of",
                  "an overwhelming amount of")},
}

PRISTINE_PHRASES: tuple[str, ...] = (
    "a high quality photo", "a pristine image", "a clean, sharp photo", "no visible distortion",
    "an undistorted image", "a perfectly clear photo", "excellent image quality", "a flawless photo",
    "a crisp and clean image", "free of artifacts", "a professional quality photo", "a sharp, noise-free image",
    "pristine quality", "a clear photo without defects", "an artifact-free image",
    "a photo with natural colours and fine detail", "a well exposed, sharp photo",
    "an uncompressed, high fidelity image", "a reference quality photo", "no noise, blur or compression artifacts",
)

APPEARANCE_PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "brightness": {
        "low": ("a dark photo", "a dim image", "low brightness", "a dimly lit scene", "a dark image", "poorly lit",
                "a gloomy, dark photo", "low light", "a dark scene", "a photo taken in dim light", "underlit",
                "a shadowy image", "dark overall", "a low-key photo", "dim lighting", "not very bright",
                "a murky, dark image", "a photo with low brightness", "a night-like dark scene",
                "dark tones dominate"),
        "medium": ("medium brightness", "moderately bright", "a normally lit photo", "average brightness",
                   "balanced lighting", "neither dark nor bright", "a moderately lit scene", "normal exposure",
                   "a photo of medium brightness", "evenly lit", "typical brightness", "mid-level brightness",
                   "a reasonably bright image", "standard lighting", "a fairly bright photo", "average lighting",
                   "moderate light levels", "an image of average brightness", "a photo with medium brightness",
                   "normal lighting"),
        "high": ("a bright photo", "a brightly lit scene", "high brightness", "a light image", "a very bright image",
                 "bright lighting", "a sunny, bright photo", "a luminous image", "a high-key photo",
                 "light tones dominate", "well lit and bright", "a brilliant, bright scene",
                 "a photo with high brightness", "strong lighting", "a bright, airy image", "brightly illuminated",
                 "a radiant image", "lots of light", "a glowing, bright photo", "bright overall"),
    },
    "contrast": {
        "low": ("low contrast", "a flat, low-contrast photo", "a hazy image", "muted tones", "a washed-out image",
                "little contrast", "a dull, flat image", "soft contrast", "a foggy-looking photo", "weak contrast",
                "a photo with low contrast", "a low-contrast scene", "flat lighting", "a misty, flat image",
                "grey and flat", "lacking contrast", "a compressed tonal range", "not much contrast",
                "a faded-looking photo", "subtle tonal differences"),
        "medium": ("medium contrast", "moderate contrast", "normal contrast", "average contrast",
                   "a photo with medium contrast", "balanced contrast", "a moderately contrasted image",
                   "natural contrast", "typical contrast", "a reasonable tonal range", "neither flat nor harsh",
                   "standard contrast", "mid-level contrast", "an image of average contrast", "decent contrast",
                   "some contrast", "modest contrast", "a balanced tonal range", "regular contrast",
                   "a photo with normal contrast"),
        "high": ("high contrast", "a high-contrast photo", "strong contrast", "a punchy image",
                 "deep shadows and bright highlights", "vivid contrast", "a contrasty image", "bold contrast",
                 "a photo with high contrast", "harsh contrast", "a dramatic, high-contrast scene",
                 "striking contrast", "a wide tonal range", "intense contrast", "crisp contrast",
                 "dark darks and bright brights", "heavy contrast", "a strongly contrasted image",
                 "a high-contrast scene", "rich contrast"),
    },
    "sharpness": {
        "low": ("a soft image", "low sharpness", "not very sharp", "a soft-focus photo", "lacking sharpness",
                "blurry details", "a slightly soft photo", "smooth, soft details", "low detail",
                "a photo with low sharpness", "fuzzy", "unsharp", "soft edges", "not crisp", "details are soft",
                "a hazy, soft image", "low acutance", "limited fine detail", "a soft-looking scene", "weak edges"),
        "medium": ("medium sharpness", "moderately sharp", "reasonably sharp", "average sharpness",
                   "a fairly sharp photo", "decent detail", "a photo with medium sharpness", "acceptable sharpness",
                   "moderate detail", "normal sharpness", "typical sharpness", "adequately sharp", "sharp enough",
                   "moderately detailed", "an image of average sharpness", "mid-level sharpness", "fair detail",
                   "some fine detail", "reasonable clarity", "moderate clarity"),
        "high": ("a sharp photo", "high sharpness", "crisp details", "a very sharp image", "razor-sharp",
                 "fine detail", "a highly detailed photo", "tack sharp", "crisp edges", "a photo with high sharpness",
                 "excellent sharpness", "clear fine textures", "a crisp image", "lots of fine detail",
                 "sharp and detailed", "high acutance", "well-defined edges", "a richly detailed scene",
                 "great clarity", "sharp throughout"),
    },
    "colourfulness": {
        "low": ("a colourless image", "low colourfulness", "muted colours", "a nearly monochrome photo",
                "dull colours", "pale colours", "a greyish image", "little colour", "desaturated tones",
                "a photo with low colourfulness", "subdued colours", "drab colours",
                "a black and white looking photo", "faint colours", "pastel, washed colours", "not colourful",
                "an almost grey scene", "weak colours", "a monochromatic image", "colours are muted"),
        "medium": ("moderately colourful", "medium colourfulness", "average colourfulness", "natural colours",
                   "moderate colours", "a moderately colourful photo", "balanced colours", "some colour",
                   "reasonably colourful", "normal colour saturation", "typical colours",
                   "an image of average colourfulness", "a photo with medium colourfulness", "fairly colourful",
                   "mild colours", "modest colour", "regular colours", "quite natural colouring",
                   "mid-level colourfulness", "neither dull nor vivid colours"),
        "high": ("a colourful photo", "vivid colours", "highly colourful", "rich colours", "a very colourful image",
                 "bright colours", "saturated colours", "vibrant colours", "a photo full of colour",
                 "high colourfulness", "bold colours", "intense colours", "a vivid, colourful scene",
                 "lots of colour", "strong colours", "a rainbow of colours", "colour-rich",
                 "a photo with high colourfulness", "lively colours", "extremely colourful"),
    },
}

KADIS_TO_TEXT_TYPE: dict[int, TextType] = {k: t for t in TEXT_TYPES for k in t.kadis}

# Letters whose spoken name starts with a vowel sound: "an MRI scanner", "an X-ray", but "a CD player".
_VOWEL_SOUND_LETTERS = set("AEFHILMNORSX")
_SILENT_H = ("hour", "honest", "honor", "honour", "heir")
_YOU_SOUND_U = re.compile(r"^u([bfklrstvz][aeiouy]|ni)")  # unicycle, user, ukulele, urinal, utensil
_UN_PREFIX = ("unim", "unin", "unid")  # unimportant, uninhabited, unidentified: "un-" + vowel sound
_SLOT = re.compile(r"\{(adj|adv|quant)\}")


def indefinite_article(phrase: str) -> str:
    """'a' or 'an' for the phrase by the sound of its first word (common English cases, not a dictionary)."""
    word = re.split(r"[\s/]+", phrase.strip().lstrip("\"'(["), maxsplit=1)[0]
    if not word:
        return "a"
    if word[0].isdigit():
        digits = re.match(r"[\d,]+", word).group(0).replace(",", "")
        eleven = len(digits) % 3 == 2 and digits[:2] in ("11", "18")  # eleven, eighteen (thousand, ...)
        return "an" if digits[0] == "8" or eleven else "a"
    head = re.split(r"[-.]", word)[0]
    if len(head) == 1 and head.isupper() or len(head) > 1 and head.isupper() and head.isalpha():
        # An initialism ("SUV", "CD") or a letter ("X-ray", "T-shirt") is spelled out.
        return "an" if head[0] in _VOWEL_SOUND_LETTERS else "a"
    low = word.lower()
    if low.startswith(_SILENT_H):
        return "an"
    if low == "u" or low.startswith(("eu", "ewe", "one", "once")):
        return "a"
    if _YOU_SOUND_U.match(low) and not low.startswith(_UN_PREFIX):
        return "a"
    return "an" if low[0] in "aeiou" else "a"


def content_text(label: str) -> str:
    """'a photo of an umbrella' for label 'umbrella' (article from the label as written, then lower-cased)."""
    label = " ".join(label.split())
    return CONTENT_TEMPLATE.format(a=indefinite_article(label), label=label).lower()


def fill(phrase: str, word: str) -> str:
    """Put a degree word in the phrase's slot and make an {a} before it agree with it."""
    text = _SLOT.sub(word, phrase)
    return re.sub(r"\{a\} (\S+)", lambda m: f"{indefinite_article(m.group(1))} {m.group(1)}", text)


def slot_kind(phrase: str) -> str:
    return _SLOT.search(phrase).group(1)


def decode_variant(variant: int) -> tuple[int, int] | None:
    """Variant 0 -> None (the pristine image); 1..125 -> (KADIS type 1..25, level 1..5), type-major."""
    if not 0 <= variant < VARIANTS_PER_PRISTINE:
        raise ValueError(f"variant must be in 0..{VARIANTS_PER_PRISTINE - 1}, got {variant}")
    if variant == 0:
        return None
    return (variant - 1) // N_LEVELS + 1, (variant - 1) % N_LEVELS + 1


def distortion_text(kadis_type: int, level: int, rng: random.Random) -> str:
    """A random phrase of the type's text type with a random degree word of the level."""
    if level not in DEGREE_WORDS:
        raise ValueError(f"level must be in 1..{N_LEVELS}, got {level}")
    phrase = rng.choice(KADIS_TO_TEXT_TYPE[kadis_type].phrases)
    return fill(phrase, rng.choice(DEGREE_WORDS[level][slot_kind(phrase)]))


def _field(record, key: str):
    return record[key] if isinstance(record, Mapping) else getattr(record, key)


def content_texts(record) -> list[str]:
    """All content texts of a record: its label's template text and its caption, where present."""
    texts = []
    if _field(record, "label"):
        texts.append(content_text(_field(record, "label")))
    if _field(record, "caption"):
        texts.append(_field(record, "caption"))
    return texts


def sample_texts(record, variant: int, rng: random.Random, components=COMPONENTS,
                 appearance_on_pristine: bool = False) -> list[str]:
    """The texts true for one sample: `record` (a database Record or its manifest dict) seen as `variant`.

    content: the label text and the caption (all records). distortion: a pristine phrase for variant 0 of a
    pristine record, a distortion text of the variant's (type, level) otherwise; none for authentic records, whose
    distortions are unknown. appearance: one phrase per attribute from its bin, for authentic records, as in the
    paper; `appearance_on_pristine` adds them to variant 0 of pristine records too (its measured appearance is the
    sample's). Distorted variants never get them: the distortion changes the attributes measured on the pristine.
    `rng` (random.Random) picks among the equivalent phrases.
    """
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown text components {sorted(unknown)}; choose from {list(COMPONENTS)}")
    kind = _field(record, "kind")
    distortion = decode_variant(variant)
    if kind == "authentic" and distortion is not None:
        raise ValueError(f"authentic record {_field(record, 'id')!r} has only variant 0, got {variant}")
    texts = []
    if "content" in components:
        texts.extend(content_texts(record))
    if "distortion" in components and kind == "pristine":
        texts.append(rng.choice(PRISTINE_PHRASES) if distortion is None else distortion_text(*distortion, rng))
    if "appearance" in components and (kind == "authentic" or (appearance_on_pristine and distortion is None)):
        bins = _field(record, "bins")
        texts.extend(rng.choice(APPEARANCE_PHRASES[attr][bins[attr]]) for attr in ATTRIBUTES)
    return texts


def phrase_bank() -> dict:
    """Every phrase list as plain JSON (DB/phrases.json), enough to regenerate the texts without sliq."""
    return {
        "content_template": CONTENT_TEMPLATE,
        "slots": {"{adj}": "adjective degree word", "{adv}": "adverb degree word",
                  "{quant}": "quantifier degree word", "{a}": "a/an agreeing with the next word"},
        "distortion_types": [
            {"id": t.id, "name": t.name, "kadis_types": list(t.kadis), "phrases": list(t.phrases)} for t in TEXT_TYPES
        ],
        "degree_words": {str(level): {k: list(v) for k, v in words.items()} for level, words in DEGREE_WORDS.items()},
        "pristine": list(PRISTINE_PHRASES),
        "appearance": {attr: {b: list(APPEARANCE_PHRASES[attr][b]) for b in BINS} for attr in ATTRIBUTES},
    }


def all_texts(db) -> list[str]:
    """Every text the database can produce (content of its records, every filled distortion phrase, pristine and
    appearance phrases), deduplicated in a stable order: the corpus for training the tokenizer."""
    texts: dict[str, None] = {}
    for record in db.records:
        texts.update(dict.fromkeys(content_texts(record)))
    for text_type in TEXT_TYPES:
        for phrase in text_type.phrases:
            for level in sorted(DEGREE_WORDS):
                texts.update(dict.fromkeys(fill(phrase, w) for w in DEGREE_WORDS[level][slot_kind(phrase)]))
    texts.update(dict.fromkeys(PRISTINE_PHRASES))
    for attr in ATTRIBUTES:
        for b in BINS:
            texts.update(dict.fromkeys(APPEARANCE_PHRASES[attr][b]))
    return list(texts)
