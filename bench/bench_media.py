"""Cost of ``log_image`` on the training thread, and bytes stored per image.

Cases: a 512x512x3 uint8 array and a 1024x1024 float32 array (grayscale, values in [0, 1]), as numpy arrays and,
where torch is installed, as CPU tensors. Each figure is printed with its ratio to references measured in the
same run: encoding the same image as PNG on the calling thread with Pillow (what a logger that encodes at the
call costs: zlib level 1, as stepwire's media thread uses, and Pillow's default 6), and W&B's ``wandb.Image`` and
ClearML's ``report_image`` (offline) where they are installed. Calls are timed one by one, in groups of 10 with
a ``flush`` between groups (not timed), so that the media thread's queue never fills: the figure is the call's
own cost, not waiting for the encoder.

    python bench/bench_media.py [--dir DIR] [--calls N]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

import stepwire
from report import emit


def timed(fn: Callable[[int], object], calls: int, between: Callable[[], object] | None = None) -> dict[str, float]:
    """Median and p99 of ``calls`` single calls in µs (``between`` runs untimed after every 10)."""
    samples = []
    for i in range(calls):
        t = time.perf_counter_ns()
        fn(i)
        samples.append((time.perf_counter_ns() - t) / 1e3)
        if between is not None and i % 10 == 9:
            between()
    arr = np.array(samples)
    return {"median": float(np.median(arr)), "p99": float(np.percentile(arr, 99))}


def png_inline(arr: np.ndarray, level: int) -> bytes:
    pixels = arr if arr.dtype == np.uint8 else np.rint(np.clip(arr, 0, 1) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def peers(arr: np.ndarray, calls: int, directory: str) -> list[tuple[str, dict[str, float] | None]]:
    out: list[tuple[str, dict[str, float] | None]] = []
    try:
        import wandb

        wandb.init(project="bench", mode="offline", dir=directory)
        out.append(("wandb.Image + wandb.log", timed(lambda i: wandb.log({"img": wandb.Image(arr)}, step=i), calls)))
        wandb.finish()
    except ImportError:
        out.append(("wandb.Image (not installed)", None))
    try:
        from clearml import Task

        Task.set_offline(True)
        task = Task.init(project_name="bench", task_name="media")
        logger = task.get_logger()
        out.append(("ClearML report_image (offline)",
                    timed(lambda i: logger.report_image("img", "s", iteration=i, image=arr), calls)))
        task.close()
    except ImportError:
        out.append(("ClearML report_image (not installed)", None))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    directory = args.dir or tempfile.mkdtemp(prefix="stepwire-bench-")
    rng = np.random.default_rng(0)
    images: dict[str, Any] = {
        "512x512x3 uint8": rng.integers(0, 256, (512, 512, 3), dtype=np.uint8),
        "1024x1024 float32": rng.random((1024, 1024), dtype=np.float32),
    }
    try:
        import torch

        images["512x512x3 uint8 tensor"] = torch.from_numpy(images["512x512x3 uint8"].copy())
        images["1024x1024 float32 tensor"] = torch.from_numpy(images["1024x1024 float32"].copy())
    except ImportError:
        pass
    rows: list[dict[str, Any]] = []
    run = stepwire.init(project="bench", name="media", dir=directory, quiet=True)
    for case, image in images.items():
        name = case.replace(" ", "_")
        ours = timed(lambda i, image=image, name=name: run.log_image(name, image, step=i), args.calls, run.flush)
        arr = image if isinstance(image, np.ndarray) else image.numpy()
        refs: list[tuple[str, dict[str, float] | None]] = [
            ("PNG on the caller (zlib 1)", timed(lambda i, a=arr: png_inline(a, 1), args.calls)),
            ("PNG on the caller (Pillow default 6)", timed(lambda i, a=arr: png_inline(a, 6), args.calls)),
        ]
        if isinstance(image, np.ndarray):
            refs += peers(arr, args.calls, directory)
        for ref_name, ref in refs:
            rows.append({"case": f"log_image {case}", "median us": ours["median"], "p99 us": ours["p99"],
                         "reference": ref_name, "ref median us": ref["median"] if ref else float("nan"),
                         "ratio": ref["median"] / ours["median"] if ref else float("nan")})
    run.flush()
    run_id = run.id
    run.finish()
    view = stepwire.Api(dir=directory).run(run_id)
    stored = {}
    for case, image in images.items():
        items = view.media(case.replace(" ", "_"))
        arr = image if isinstance(image, np.ndarray) else image.numpy()
        stored[case] = {"bytes per image": int(np.median([m.size for m in items])), "raw bytes": int(arr.nbytes),
                        "PNG zlib 6 bytes": len(png_inline(arr, 6))}
    emit("media", "log_image: cost on the calling thread (ratio: reference / stepwire)", rows,
         {"stored": stored, "calls": args.calls})
    for case, s in stored.items():
        print(f"{case}: {s['bytes per image']:,} bytes stored per image (PNG zlib 1; zlib 6 would be "
              f"{s['PNG zlib 6 bytes']:,}; raw {s['raw bytes']:,})")


if __name__ == "__main__":
    main()
