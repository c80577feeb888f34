"""``stepwire demo``: a small MLP on scikit-learn's bundled digits, logged through the embedded default.

With torch and pytorch-ignite installed the model trains in an Ignite engine with stepwire's Ignite handlers
(loss, learning rate, per-iteration gradient histograms, weight norms, validation accuracy, checkpoints as
artifacts); otherwise a numpy MLP logs loss, accuracy and gradient histograms directly.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from rich.console import Console

import stepwire
from stepwire.collector.embedded import dashboard_url


def run_demo(dir: str | os.PathLike[str] | None = None, epochs: int = 20, backend: str = "auto") -> int:
    """Train with ``backend`` ("ignite", "numpy", or "auto": ignite when installed), then print what was stored."""
    try:
        from sklearn.datasets import load_digits  # noqa: F401
    except ImportError:
        Console().print("stepwire demo needs scikit-learn for its bundled data: pip install 'stepwire[demo]'")
        return 1
    if backend == "auto":
        try:
            import ignite  # noqa: F401

            import torch  # noqa: F401

            backend = "ignite"
        except ImportError:
            backend = "numpy"
    run_id, directory = (ignite_demo if backend == "ignite" else numpy_demo)(dir, epochs)
    report(run_id, directory, backend, epochs)
    return 0


def report(run_id: str, directory: os.PathLike[str] | str, backend: str, epochs: int) -> None:
    """Print what the demo stored, read back through ``Api``."""
    console = Console()
    view = stepwire.Api(dir=directory).run(run_id)
    series = view.series()
    console.print(f"[bold]stepwire demo[/] ({backend}): trained {epochs} epochs; run [cyan]{run_id}[/] stored in "
                  f"[cyan]{directory}[/]")
    for name, stats in view.summary().items():
        if not name.startswith(("weights_norm", "grads_norm")):
            console.print(f"  {name:<24} last={stats['last']:.4f} min={stats['min']:.4f} max={stats['max']:.4f}")
    hists = [s for s in series if s.kind == "histogram"]
    for s in hists[:4]:
        last = view.histograms(s.name)[-1]
        console.print(f"  {s.name:<24} {s.items} histograms; last step {last.step}: {last.count} values, "
                      f"{len(last.indices)} occupied buckets")
    if len(hists) > 4:
        console.print(f"  ... and {len(hists) - 4} more histogram series")
    for a in view.artifacts():
        console.print(f"  artifact {a.name} ({a.size:,} bytes, step {a.step})")
    console.print(f"Look again with: stepwire show {run_id} --dir {directory}")
    url = dashboard_url(Path(directory))
    if url:
        console.print(f"Dashboard: {url}#run={run_id} (served while the local collector runs; it stops when idle)")
    console.print(f"Open the dashboard any time with: stepwire ui --dir {directory}")


def _digits(seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target
    order = rng.permutation(len(x))
    return x[order], y[order], int(0.8 * len(x))


def ignite_demo(dir: str | os.PathLike[str] | None, epochs: int, batch: int = 64) -> tuple[str, os.PathLike[str]]:
    """An Ignite trainer and evaluator with stepwire's handlers; returns (run id, data directory)."""
    from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer
    from ignite.handlers import Checkpoint, global_step_from_engine
    from ignite.metrics import Accuracy, Loss

    import torch
    from stepwire.ignite import GradsHistHandler, StepwireLogger, StepwireSaver, WeightsScalarHandler

    x, y, split = _digits(0)
    torch.manual_seed(0)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y).long()
    train = [(tx[i:i + batch], ty[i:i + batch]) for i in range(0, split, batch)]
    val = [(tx[split:], ty[split:])]
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = torch.nn.functional.cross_entropy
    trainer = create_supervised_trainer(model, opt, loss_fn)
    evaluator = create_supervised_evaluator(model, metrics={"accuracy": Accuracy(), "loss": Loss(loss_fn)})
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: evaluator.run(val))
    with StepwireLogger(project="demo", name="digits-mlp-ignite", dir=dir,
                        config={"lr": 0.1, "hidden": 64, "batch": batch, "epochs": epochs}) as logger:
        logger.attach_output_handler(trainer, Events.ITERATION_COMPLETED, tag="train",
                                     output_transform=lambda loss: {"loss": loss})
        logger.attach_opt_params_handler(trainer, Events.ITERATION_STARTED, optimizer=opt)
        logger.attach_output_handler(evaluator, Events.EPOCH_COMPLETED, tag="val", metric_names="all",
                                     global_step_transform=global_step_from_engine(trainer))
        logger.attach(trainer, GradsHistHandler(model), Events.ITERATION_COMPLETED)
        logger.attach(trainer, WeightsScalarHandler(model), Events.ITERATION_COMPLETED)
        checkpoint = Checkpoint({"model": model}, StepwireSaver(logger), n_saved=2,
                                score_function=lambda e: e.state.metrics["accuracy"], score_name="accuracy",
                                global_step_transform=global_step_from_engine(trainer))
        evaluator.add_event_handler(Events.COMPLETED, checkpoint)
        trainer.run(train, max_epochs=epochs)
        run = logger.run
    assert run.dir is not None
    return run.id, run.dir


def numpy_demo(dir: str | os.PathLike[str] | None, epochs: int, batch: int = 64) -> tuple[str, os.PathLike[str]]:
    """A numpy MLP logging loss, accuracy and gradient histograms directly; returns (run id, data directory)."""
    x, y, split = _digits(0)
    rng = np.random.default_rng(0)
    params = {
        "w1": (rng.standard_normal((64, 64)) * 0.1).astype(np.float32), "b1": np.zeros(64, np.float32),
        "w2": (rng.standard_normal((64, 10)) * 0.1).astype(np.float32), "b2": np.zeros(10, np.float32),
    }
    lr = 0.1
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
        assert run.dir is not None
        return run.id, run.dir
