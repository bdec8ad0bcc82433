"""Prompt adherence: does a generated image show the class its prompt asked for?

A small CNN trained on the real Fashion-MNIST train split (its accuracy on the test split is reported
beside it, so the reader knows how much to trust it) classifies each generated image; adherence is the
share whose predicted class is the prompt's class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from paris.randomness import EpochBatches, step_generator


class FashionClassifier(nn.Sequential):
    """1x32x32 -> 10 logits: two conv blocks and an MLP head (about 0.55M parameters)."""

    def __init__(self, num_classes: int = 10):
        super().__init__(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, num_classes),
        )


def train_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: float = 2.0, batch_size: int = 128,
                     lr: float = 1e-3, seed: int = 0) -> FashionClassifier:
    torch.manual_seed(seed)
    model = FashionClassifier(int(labels.max()) + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    batches = EpochBatches(len(images), batch_size, seed)
    steps = int(epochs * len(images) / batch_size)
    for step in range(steps):
        index = batches(step)
        # Random shifts of up to 2 pixels: generated images are rarely centred exactly like the originals.
        dx, dy = torch.randint(-2, 3, (2,), generator=step_generator(seed, step)).tolist()
        x = torch.roll(images[index], shifts=(dy, dx), dims=(2, 3))
        loss = F.cross_entropy(model(x), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    predicted = torch.cat([model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])
    return (predicted == labels).float().mean().item()
