"""The model and data of Ignite's MNIST logger examples, shrunk for tests: the same layers on 12x12 synthetic
images (the three ``test_ignite_*`` modules run those examples with only the import changed)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from ignite.engine import Engine, Events, create_supervised_evaluator, create_supervised_trainer
from ignite.metrics import Accuracy, Loss
from torch.optim import SGD

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


@dataclass
class Example:
    """The engines of Ignite's MNIST logger examples, with the evaluators run at every epoch's end as there."""

    train_loader: list[tuple[torch.Tensor, torch.Tensor]]
    val_loader: list[tuple[torch.Tensor, torch.Tensor]]
    model: Net
    optimizer: SGD
    trainer: Engine
    train_evaluator: Engine
    validation_evaluator: Engine


def example() -> Example:
    """The examples' set-up: SGD(lr=0.01, momentum=0.5), cross-entropy, accuracy and loss metrics, seed 0."""
    torch.manual_seed(0)
    model = Net()
    optimizer = SGD(model.parameters(), lr=0.01, momentum=0.5)
    criterion = nn.CrossEntropyLoss()
    metrics = {"accuracy": Accuracy(), "loss": Loss(criterion)}
    ex = Example(batches(4, 1), batches(2, 2), model, optimizer, create_supervised_trainer(model, optimizer, criterion),
                 create_supervised_evaluator(model, metrics=metrics),
                 create_supervised_evaluator(model, metrics=metrics))

    @ex.trainer.on(Events.EPOCH_COMPLETED)
    def compute_metrics(engine: Engine) -> None:
        ex.train_evaluator.run(ex.train_loader)
        ex.validation_evaluator.run(ex.val_loader)

    return ex
