"""``wandb.watch`` on real torch models trained a few steps, W&B's PyTorch MNIST example (synthetic data) run with
only the import changed, and ``sync_tensorboard`` (stepwire.compat.wandb against the embedded collector)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import stepwire
import stepwire.compat.wandb as wandb
import torch
from torch import nn

pytestmark = pytest.mark.usefixtures("wandb_state")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def same(h: stepwire.Histogram, values: np.ndarray) -> bool:
    exact = stepwire.Histogram.from_values(values)
    return bool(np.array_equal(h.indices, exact.indices) and np.array_equal(h.counts, exact.counts)
                and h.count == exact.count)


def test_watch_logs_wandb_names_every_log_freq_steps() -> None:
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    run = wandb.init(project="wbt", config={"lr": 0.1})
    wandb.watch(model, nn.CrossEntropyLoss(), log="all", log_freq=2)
    params: dict[int, dict[str, np.ndarray]] = {}
    grads: dict[int, dict[str, np.ndarray]] = {}
    for i in range(7):
        if i == 5:
            wandb.unwatch(model)
        if i % 2 == 0:
            params[i] = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if i % 2 == 0:
            grads[i] = {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}
        opt.step()
        wandb.log({"loss": loss.item()})
    with pytest.warns(wandb.UnsupportedWarning) as caught:
        wandb.watch(model, log=None, log_graph=True)   # a second watch: W&B would name it graph_1
    assert sorted(str(w.message).split(" is not")[0] for w in caught) == [
        "stepwire.compat.wandb: watch of several models", "stepwire.compat.wandb: watch(log_graph=True)"]
    run_id = run.id
    wandb.finish()
    view = stepwire.Api().run(run_id)
    names = {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    hists = {s.name for s in view.series() if s.kind == "histogram"}
    assert hists == {f"{kind}/{n}" for kind in ("gradients", "parameters") for n in names}
    for n in names:
        logged_grads = view.histograms(f"gradients/{n}")
        assert [h.step for h in logged_grads] == [0, 2, 4]  # unwatched before step 5's backward
        assert all(same(h, grads[h.step][n]) for h in logged_grads)
        logged_params = view.histograms(f"parameters/{n}")
        assert [h.step for h in logged_params] == [0, 2, 4]
        assert all(same(h, params[h.step][n]) for h in logged_params)
        norms = view.scalars(f"gradients/{n}/norm")
        assert norms["step"].tolist() == [0, 2, 4]
        assert norms["value"] == pytest.approx([float(np.linalg.norm(grads[s][n])) for s in (0, 2, 4)], rel=1e-5)
    assert view.scalars("loss")["step"].tolist() == list(range(7))


EXAMPLE = '''
import argparse
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import stepwire.compat.wandb as wandb


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, kernel_size=5)
        self.fc1 = nn.Linear(4 * 12 * 12, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        return F.log_softmax(self.fc1(x.flatten(1)), dim=1)


def batches(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    return [((torch.rand(size, 1, 28, 28, generator=g) - 0.1307) / 0.3081, torch.randint(0, 10, (size,), generator=g))
            for _ in range(n)]


def train(args, model, loader, optimizer, epoch):
    model.train()
    for batch_idx, (data, target) in enumerate(loader):
        optimizer.zero_grad()
        loss = F.nll_loss(model(data), target)
        loss.backward()
        optimizer.step()


def test(args, model, loader):
    model.eval()
    test_loss, correct, example_images = 0.0, 0, []
    with torch.no_grad():
        for data, target in loader:
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            pred = output.max(1, keepdim=True)[1]
            correct += pred.eq(target.view_as(pred)).sum().item()
            example_images.append(wandb.Image(data[0], caption="Pred: {} Truth: {}".format(pred[0].item(), target[0])))
    n = sum(len(t) for _, t in loader)
    wandb.log({"Examples": example_images, "Test Accuracy": 100.0 * correct / n, "Test Loss": test_loss / n})


def main():
    wandb.init(project="mnist-example", id="wandb-mnist-example")
    parser = argparse.ArgumentParser(description="PyTorch MNIST Example")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    wandb.config.update(args)
    torch.manual_seed(args.seed)
    model = Net()
    optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    wandb.watch(model)
    train_loader, test_loader = batches(4, args.batch_size, 1), batches(2, 16, 2)
    for epoch in range(1, args.epochs + 1):
        train(args, model, train_loader, optimizer, epoch)
        test(args, model, test_loader)


if __name__ == "__main__":
    main()
'''


def test_wandb_pytorch_mnist_example(tmp_path: Path, wandb_state: Path) -> None:
    script = tmp_path / "main.py"
    script.write_text(EXAMPLE)
    out = subprocess.run([sys.executable, str(script), "--epochs", "2", "--batch-size", "8"], capture_output=True,
                         text=True, timeout=180, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # what a collector slowed by a loaded machine did not take in time waits in the spool: deliver it
    sync = subprocess.run([sys.executable, "-m", "stepwire", "sync", str(wandb_state), "--quiet"],
                          capture_output=True, text=True, timeout=120)
    assert sync.returncode == 0, sync.stderr
    view = stepwire.Api().run("wandb-mnist-example")
    assert view.status == "finished" and view.project == "mnist-example"
    assert view.config == {"batch_size": 8, "epochs": 2, "lr": 0.01, "momentum": 0.5, "seed": 1}
    scalars = {s.name for s in view.series() if s.kind == "scalar"}
    assert {"Test Accuracy", "Test Loss"} <= scalars
    assert view.scalars("Test Loss")["step"].tolist() == [0, 1]
    assert set(view.scalars("Test Accuracy")["value"].tolist()) <= {100.0 * k / 32 for k in range(33)}
    hists = {s.name: [h.step for h in view.histograms(s.name)] for s in view.series() if s.kind == "histogram"}
    # log_freq=1000: the first backward pass only, at the step the first log() then used
    assert hists == {f"gradients/{n}": [0] for n in ("conv1.weight", "conv1.bias", "fc1.weight", "fc1.bias")}
    examples = view.media()
    assert sorted({(m.name, m.step) for m in examples}) == [(f"Examples/{i}", s) for i in (0, 1) for s in (0, 1)]
    assert all(m.kind == "image" and (m.width, m.height) == (28, 28) and m.caption.startswith("Pred: ")
               for m in examples)
    assert set(view.meta["summary"]) == {"Test Accuracy", "Test Loss"}


@pytest.mark.skipif(importlib.util.find_spec("stepwire.compat.tensorboard") is None,
                    reason="stepwire.compat.tensorboard is not there yet")
def test_sync_tensorboard_captures_summary_writers(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    run = wandb.init(project="wbt", sync_tensorboard=True)
    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    writer.add_scalar("train/loss", 0.5, 3)
    writer.add_scalar("train/loss", 0.25, 4)
    writer.close()
    wandb.log({"acc": 0.9})
    run_id = run.id
    wandb.finish()
    view = stepwire.Api().run(run_id)
    loss = view.scalars("train/loss")
    assert loss["step"].tolist() == [3, 4] and loss["value"].tolist() == [0.5, 0.25]
    # finish undid the patch: a writer now writes event files only (patched, it would start a run of its own)
    again = SummaryWriter(log_dir=str(tmp_path / "tb2"))
    again.add_scalar("after", 1.0, 0)
    again.close()
    assert [r.project for r in stepwire.Api().runs() if r.project == "tensorboard"] == []


def test_finish_leaves_a_later_capture_for_another_run_alone() -> None:
    from stepwire.compat import tensorboard

    wandb.init(project="wbt", sync_tensorboard=True)
    other = stepwire.init(project="other", quiet=True)
    try:
        tensorboard.patch(run=other)  # someone captures for another run after init
        wandb.finish()
        assert tensorboard.patched_run() is other
    finally:
        tensorboard.unpatch()
        other.finish()
    assert not tensorboard.is_patched()
