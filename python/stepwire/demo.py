"""``stepwire demo``: a small numpy MLP on scikit-learn's bundled digits, logged through the embedded default."""

from __future__ import annotations

import os

import numpy as np
from rich.console import Console

import stepwire


def run_demo(dir: str | os.PathLike[str] | None = None, epochs: int = 20, batch: int = 64, seed: int = 0) -> int:
    """Train, log loss/accuracy every step and gradient histograms of every layer, then print what was stored."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        Console().print("stepwire demo needs scikit-learn for its bundled data: pip install 'stepwire[demo]'")
        return 1
    rng = np.random.default_rng(seed)
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    split = int(0.8 * len(x))
    params = {
        "w1": (rng.standard_normal((64, 64)) * 0.1).astype(np.float32), "b1": np.zeros(64, np.float32),
        "w2": (rng.standard_normal((64, 10)) * 0.1).astype(np.float32), "b2": np.zeros(10, np.float32),
    }
    lr = 0.1
    console = Console()
    with stepwire.init(project="demo", name="digits-mlp", dir=dir,
                       config={"lr": lr, "hidden": 64, "batch": batch, "epochs": epochs}) as run:
        step = 0
        for _epoch in range(epochs):
            for i in range(0, split, batch):
                xb, yb = x[i:i + batch], y[i:i + batch]
                h = np.maximum(xb @ params["w1"] + params["b1"], 0)
                logits = h @ params["w2"] + params["b2"]
                p = np.exp(logits - logits.max(1, keepdims=True))
                p /= p.sum(1, keepdims=True)
                loss = float(-np.log(p[np.arange(len(yb)), yb] + 1e-9).mean())
                g = p.copy()
                g[np.arange(len(yb)), yb] -= 1
                g /= len(yb)
                grads = {"w2": h.T @ g, "b2": g.sum(0)}
                dh = (g @ params["w2"].T) * (h > 0)
                grads.update({"w1": xb.T @ dh, "b1": dh.sum(0)})
                for k, gr in grads.items():
                    params[k] -= lr * gr
                run.log({"train/loss": loss, "train/accuracy": float((p.argmax(1) == yb).mean()),
                         **{f"grads/{k}": gr for k, gr in grads.items()}}, step=step)
                step += 1
            val = np.maximum(x[split:] @ params["w1"] + params["b1"], 0) @ params["w2"] + params["b2"]
            run.log_scalar("val/accuracy", float((val.argmax(1) == y[split:]).mean()), step=step)
        run_id, directory = run.id, run.dir
    view = stepwire.Api(dir=directory).run(run_id)
    console.print(f"[bold]stepwire demo[/]: trained {epochs} epochs, {step} steps; run [cyan]{run_id}[/] stored in "
                  f"[cyan]{directory}[/]")
    for name, s in view.summary().items():
        console.print(f"  {name:<16} last={s['last']:.4f} min={s['min']:.4f} max={s['max']:.4f}")
    for series in view.series():
        if series.kind == "histogram":
            last = view.histograms(series.name)[-1]
            console.print(f"  {series.name:<16} {series.items} histograms; last step {last.step}: {last.count} values, "
                          f"{len(last.indices)} occupied buckets")
    console.print(f"Look again with: stepwire show {run_id} --dir {directory}")
    return 0
