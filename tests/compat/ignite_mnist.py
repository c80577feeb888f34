"""The model and data of Ignite's MNIST logger examples, shrunk for tests: the same layers on 12x12 synthetic
images (the three ``test_ignite_*`` modules run those examples with only the import changed)."""

from __future__ import annotations

import torch.nn.functional as F

import torch
from torch import nn


class Net(nn.Module):
    """The layers of Ignite's MNIST example, sized for 12x12 images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, kernel_size=3)
        self.conv2 = nn.Conv2d(4, 8, kernel_size=3)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.view(-1, 8)
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=-1)


def batches(n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` batches of 8 random 12x12 images with random labels."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 1, 12, 12, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(n)]
