"""Prompt adherence on Fashion-MNIST: does a generated image show the class its prompt asked for?

A small CNN trained on the real train split classifies each generated image; its accuracy on the real test
images is reported beside the adherence, so the reader knows how much to trust it.
"""

from __future__ import annotations

import hashlib
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from paris import progress
from paris.cache import machine_cache
from paris.data import fashion_mnist
from paris.randomness import EpochBatches, step_generator
from paris.run import RunDir

CLASSIFIER_RECIPE = "bn-dropout-4ep-cosine-2e-3"  # part of the cache key: change it when the recipe changes


class FashionClassifier(nn.Sequential):
    """1x32x32 -> 10 logits: two batch-normed conv blocks and an MLP head with dropout (about 0.55M parameters)."""

    def __init__(self, num_classes: int = 10):
        super().__init__(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, num_classes),
        )


EPOCHS, BATCH_SIZE = 4.0, 128


def classifier_steps(num_images: int, epochs: float = EPOCHS, batch_size: int = BATCH_SIZE) -> int:
    return int(epochs * num_images / batch_size)


def train_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: float = EPOCHS,
                     batch_size: int = BATCH_SIZE, lr: float = 2e-3, seed: int = 0, on_step=None) -> FashionClassifier:
    """The classifier trained on (images, labels); `on_step(step)` follows the progress."""
    torch.manual_seed(seed)
    model = FashionClassifier(int(labels.max()) + 1).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    batches = EpochBatches(len(images), batch_size, seed)
    steps = classifier_steps(len(images), epochs, batch_size)
    for step in range(steps):
        index = batches(step)
        # Random shifts of up to 2 pixels: generated images are rarely centred exactly like the originals.
        dx, dy = torch.randint(-2, 3, (2,), generator=step_generator(seed, step)).tolist()
        x = torch.roll(images[index], shifts=(dy, dx), dims=(2, 3))
        loss = F.cross_entropy(model(x), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in optimizer.param_groups:  # cosine decay: the last epochs settle instead of jittering
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        optimizer.step()
        if on_step is not None:
            on_step(step)
    return model.eval()


def fashion_classifier(data_path: str, limit: int | None = None, seed: int = 0) -> FashionClassifier:
    """The adherence classifier, trained on the real train split once per machine and then read from a cache
    ($PARIS_CACHE, else ~/.cache/paris): training it takes minutes on a CPU, and every evaluation needs it."""
    key = hashlib.sha256(f"{os.path.abspath(data_path)}|{limit or 0}|{seed}|{CLASSIFIER_RECIPE}".encode()).hexdigest()[:16]
    cache, name = RunDir(machine_cache()), f"fashion-classifier-{key}.safetensors"
    if cache.exists(name):
        model = FashionClassifier()
        model.load_state_dict(cache.load_tensors(name))
        return model.eval()
    images, labels = fashion_mnist.load(data_path, "train", limit)
    with progress.bar("adherence classifier (once per machine)", classifier_steps(len(images))) as bar:
        model = train_classifier(images, labels, seed=seed, on_step=lambda step: bar.update(advance=1))
    cache.save_tensors(name, model.state_dict())  # written whole, even with two evaluations writing it at once
    return model


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The class the classifier sees in each image."""
    return torch.cat([model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    return (predict(model, images, batch_size) == labels).float().mean().item()


def accuracy_by_class(predicted: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Per Fashion-MNIST class present in `labels`, the share of its images predicted as it: an overall figure
    hides whether the misses gather in a few classes (those one expert holds, those the classifier confuses)."""
    hits = torch.bincount(labels[predicted == labels], minlength=len(fashion_mnist.CLASSES))
    counts = torch.bincount(labels, minlength=len(fashion_mnist.CLASSES))
    return {name: hits[c].item() / counts[c].item() for c, name in enumerate(fashion_mnist.CLASSES) if counts[c]}


def scores(predicted: torch.Tensor, labels: torch.Tensor) -> tuple[float, dict[str, float]]:
    """(share of all images predicted as their label, the same per class)."""
    return (predicted == labels).float().mean().item(), accuracy_by_class(predicted, labels)
