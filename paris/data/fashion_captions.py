"""Fashion-MNIST captions that describe the image instead of naming its class (data.captions: described).

With captions that only name the class, clustering the captions gives the classes and a router that reads the
prompt is a lookup table. Here each image gets one of many captions: one of several names for its class, the attributes
its own pixels show, and one of several sentence templates, chosen by a hash of the image and the seed, so a
caption is a pure function of the two. The attributes, each said only when the image lies in the lower or upper
third of its class (a mid-grey coat is neither dark nor light, and says neither):

    tone     dark / light           mean brightness of the garment's pixels
    size     narrow / wide          share of the 28x28 frame the garment fills
    texture  plain / patterned      mean |pixel - its 3x3 neighbourhood's mean| over the garment: fine detail

Evaluation prompts use HELD_OUT_TEMPLATES, which no training caption uses, and the same measurements score
whether a generated image shows the attributes its prompt asked for (`asked_words`, `attribute_adherence`).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

import torch
import torch.nn.functional as F

NAMES = [
    ["T-shirt", "tee", "top"],
    ["pair of trousers", "pair of pants", "pair of slacks"],
    ["pullover", "sweater", "jumper"],
    ["dress", "frock", "gown"],
    ["coat", "jacket", "overcoat"],
    ["sandal", "summer shoe", "open shoe"],
    ["shirt", "dress shirt", "blouse"],
    ["sneaker", "trainer", "running shoe"],
    ["bag", "handbag", "tote"],
    ["ankle boot", "boot", "bootie"],
]
# Short enough that every caption fits the 16 tokens of the demo's text encoder (data.max_tokens; tested)
TEMPLATES = ["a photo of {}", "{}, product photo", "a picture of {}", "{} on black", "a studio photo of {}"]
HELD_OUT_TEMPLATES = ["an image showing {}", "a catalogue shot of {}"]  # never in a training caption
ATTRIBUTES = {"tone": ("dark", "light"), "size": ("narrow", "wide"), "texture": ("plain", "patterned")}
GARMENT = -0.8  # pixels above this (in [-1, 1]; the background is -1) belong to the garment

# Per class, the lower and upper thirds of each attribute over the 60,000 training images (measured_thirds;
# tests/data/test_fashion_captions.py checks them against the data).
THIRDS = {
    "tone": [(0.0452, 0.4518), (0.2624, 0.503), (0.0535, 0.484), (0.1957, 0.5219), (0.3111, 0.5407),
             (-0.0572, 0.1384), (-0.0755, 0.3772), (0.0689, 0.2671), (0.2523, 0.4589), (0.3155, 0.4767)],
    "size": [(0.5166, 0.5663), (0.3048, 0.3329), (0.5765, 0.6429), (0.3533, 0.426), (0.5434, 0.602),
             (0.2066, 0.2844), (0.5497, 0.6224), (0.2615, 0.3048), (0.4872, 0.5816), (0.3992, 0.4656)],
    "texture": [(0.1383, 0.1695), (0.2445, 0.2777), (0.1615, 0.1913), (0.1814, 0.2201), (0.1626, 0.1898),
                (0.2668, 0.3236), (0.1509, 0.1866), (0.2181, 0.2537), (0.1669, 0.1986), (0.1799, 0.2034)],
}


def measure(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each attribute's value per image of [N, 1, 32, 32] in [-1, 1] (Fashion-MNIST's padded frame)."""
    garment = (images > GARMENT).float()
    pixels = garment.sum((1, 2, 3)).clamp_min(1)
    detail = (images - F.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)).abs()
    return {"tone": (images * garment).sum((1, 2, 3)) / pixels,
            "size": garment.sum((1, 2, 3)) / 28**2,
            "texture": (detail * garment).sum((1, 2, 3)) / pixels}


def attribute_words(values: dict[str, torch.Tensor], labels: torch.Tensor) -> list[list[str]]:
    """Per image, the words its measurements earn, in the order tone, size, texture: those of the attributes outside
    its class's middle third."""
    words = [[] for _ in labels]
    for attribute, (low_word, high_word) in ATTRIBUTES.items():
        thirds = torch.tensor(THIRDS[attribute])[labels]
        for i, (value, (low, high)) in enumerate(zip(values[attribute].tolist(), thirds.tolist())):
            if value < low:
                words[i].append(low_word)
            elif value > high:
                words[i].append(high_word)
    return words


def asked_words(prompt: str) -> list[str]:
    """The attribute words a prompt asks for, in the order tone, size, texture (no name or template holds one)."""
    return [word for pair in ATTRIBUTES.values() for word in pair if re.search(rf"\b{word}\b", prompt)]


def attribute_adherence(asked: list[list[str]], shown: list[list[str]]) -> tuple[float, dict[str, float]]:
    """The share of the attribute words the prompts asked for that their images show (`attribute_words` of the
    generated images), overall and per attribute. Prompts that ask for none do not count."""
    hits, counts = Counter(), Counter()
    for wanted, got in zip(asked, shown):
        for word in wanted:
            attribute = next(a for a, pair in ATTRIBUTES.items() if word in pair)
            counts[attribute] += 1
            hits[attribute] += word in got
    if not counts:
        raise ValueError("no prompt asks for an attribute")
    return sum(hits.values()) / sum(counts.values()), {a: hits[a] / counts[a] for a in ATTRIBUTES if counts[a]}


def describe(image: torch.Tensor, label: int, seed: int, held_out: bool = False) -> str:
    """The caption of one [1, 32, 32] image: a pure function of the image, its label and the seed."""
    choice = int.from_bytes(hashlib.sha256(image.numpy().tobytes() + seed.to_bytes(8, "little", signed=True))
                            .digest()[:8], "little")
    templates = HELD_OUT_TEMPLATES if held_out else TEMPLATES
    name = NAMES[label][choice % len(NAMES[label])]
    words = attribute_words(measure(image[None]), torch.tensor([label]))[0]
    phrase = " ".join(filter(None, [", ".join(words), name]))  # "dark, wide coat"
    return templates[choice // len(NAMES[label]) % len(templates)].format(_with_article(phrase))


def _with_article(phrase: str) -> str:
    return f"{'an' if phrase[0].lower() in 'aeiou' else 'a'} {phrase}"


def measured_thirds(images: torch.Tensor, labels: torch.Tensor) -> dict[str, list[tuple[float, float]]]:
    """THIRDS as these images measure them (THIRDS is this of the training split, to 4 decimals)."""
    values, cut = measure(images), torch.tensor([1 / 3, 2 / 3])
    return {attribute: [tuple(round(q, 4) for q in values[attribute][labels == c].quantile(cut).tolist())
                        for c in range(len(NAMES))] for attribute in ATTRIBUTES}
