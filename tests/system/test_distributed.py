"""Several ranks of one job: a real torch.distributed (gloo) job, launcher variables, stragglers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import stepwire
from conftest import CollectorProcess
from stepwire.ranks import agree_run_id, detect_ranks

TRAIN = textwrap.dedent("""
    import json, os, sys, numpy as np, torch, torch.distributed as dist, stepwire
    address, out = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)  # the same initial model on every rank ...
    model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(100 + rank)  # ... and each rank its own data
    run = stepwire.init(project="ddp", name="gloo", address=address, config={"ranks": dist.get_world_size()})
    run.watch(model, log="gradients")
    grads = {}
    for it in range(5):
        x, y = torch.randn(32, 6, generator=gen), torch.randn(32, 1, generator=gen)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        for n, p in model.named_parameters():
            grads[f"{n}@{run.step}"] = p.grad.numpy().copy()
        opt.step()
        run.log({"loss": loss.detach(), "it": it})
    np.savez(os.path.join(out, f"rank{rank}.npz"), **grads)
    run.finish()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"id": run.id, "rank": run.rank, "world": run.world_size}, f)
    dist.destroy_process_group()
""")


def test_four_rank_gloo_job_is_one_run_with_exact_merges(collector: CollectorProcess, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "STEPWIRE_RUN_ID"))}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4",
                           str(script), collector.address, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    assert len({i["id"] for i in infos}) == 1 and {i["world"] for i in infos} == {4}
    api = stepwire.Api(address=collector.address)
    (view,) = api.runs(project="ddp")  # exactly one run for the job
    assert view.id == infos[0]["id"] and view.status == "finished" and view.meta["world_size"] == 4
    assert view.config == {"ranks": 4}
    grads = [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(4)]
    loss = view.scalars("loss")
    assert len(loss["step"]) == 20
    for r in range(4):
        assert (loss["rank"] == r).sum() == 5  # per-rank counts exact
    # aggregation across ranks equals numpy's
    per_rank = np.stack([loss["value"][loss["rank"] == r] for r in range(4)])
    np.testing.assert_allclose(view.scalars("loss", agg="mean")["value"], per_rank.mean(axis=0), rtol=1e-12)
    lo = view.scalars("loss", agg="min")
    np.testing.assert_array_equal(lo["value"], per_rank.min(axis=0))
    np.testing.assert_array_equal(lo["rank"], per_rank.argmin(axis=0))
    np.testing.assert_array_equal(view.scalars("loss", agg="max")["value"], per_rank.max(axis=0))
    # the merged histogram of every parameter is the histogram of all ranks' values together
    for key in grads[0]:
        name, step = key.split("@")
        (merged,) = [h for h in view.histograms(f"gradients/{name}") if h.step == int(step)]
        whole = stepwire.Histogram.from_values(np.concatenate([g[key].ravel() for g in grads]))
        assert merged.rank is None and merged.count == whole.count
        assert merged.indices.tolist() == whole.indices.tolist() and merged.counts.tolist() == whole.counts.tolist()
        assert (merged.min, merged.max) == (whole.min, whole.max)
        # merging then downscaling equals downscaling then merging
        per = [h.downscale(1) for h in view.histograms(f"gradients/{name}", merge_ranks=False) if h.step == int(step)]
        assert stepwire.Histogram.merge(per).counts.tolist() == merged.downscale(1).counts.tolist()


@pytest.mark.parametrize(("env", "expected"), [
    ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}, (3, 8, 1, "torchrun")),
    ({"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1"}, (5, 16, 1, "slurm")),
    ({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "2"},
     (2, 4, 2, "openmpi")),
    ({"PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALRANKID": "1"}, (1, 2, 1, "mpich")),
    ({"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "7", "SLURM_NTASKS": "9"}, (1, 2, 0, "torchrun")),
    ({}, (0, 1, 0, "default")),
])
def test_launcher_variables_are_detected(env: dict[str, str], expected: tuple[int, int, int, str]) -> None:
    info = detect_ranks(env=env)
    assert (info.rank, info.world_size, info.local_rank, info.source) == expected
    assert detect_ranks(rank=0, world_size=3, env=env).world_size == 3


def test_run_ids_agree_from_the_job_id_and_fail_loudly_without_one() -> None:
    a = agree_run_id(detect_ranks(env={"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}),
                     env={"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0"})
    b = agree_run_id(detect_ranks(env={"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}),
                     env={"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0"})
    assert a == b
    assert agree_run_id(detect_ranks(env={"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}),
                        env={"SLURM_JOB_ID": "4243", "SLURM_STEP_ID": "0"}) != a
    assert agree_run_id(detect_ranks(env={}), env={"STEPWIRE_RUN_ID": "mine"}) == "mine"
    with pytest.raises(RuntimeError, match="cannot agree on a run id"):
        agree_run_id(detect_ranks(env={"PMI_RANK": "1", "PMI_SIZE": "2"}), env={})
    with pytest.raises(ValueError, match="not within a world"):
        detect_ranks(env={"RANK": "4", "WORLD_SIZE": "4"})


STRAGGLER = textwrap.dedent("""
    import sys, time, stepwire
    run = stepwire.init(project="skew", address=sys.argv[1], log_on_ranks=[0, 1, 2, 3])
    slow = 0.06 if run.rank == 2 else 0.0
    for step in range(25):
        time.sleep(0.01 + slow)
        run.log({"loss": 1.0 / (step + 1)}, step=step)
    run.finish()
""")


def test_a_slow_rank_is_reported_as_the_straggler(collector: CollectorProcess, tmp_path: Path) -> None:
    procs = []
    for rank in range(5):  # rank 4 is left out by log_on_ranks: it logs nothing
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "5", "STEPWIRE_RUN_ID": "straggler-job"}
        procs.append(subprocess.Popen([sys.executable, "-c", STRAGGLER, collector.address], env=env))
    assert all(p.wait(timeout=120) == 0 for p in procs)
    view = stepwire.Api(address=collector.address).run("straggler-job")
    assert view.meta["world_size"] == 4
    assert {s.name: s.ranks for s in view.series()} == {"loss": [0, 1, 2, 3]}
    skew = view.step_skew()
    assert skew["series"] == "loss" and skew["slowest"] == 2
    assert skew["lag"] > 0.5 and skew["step_time_ratio"] > 2
    assert [r["rank"] for r in skew["ranks"]] == [0, 1, 2, 3]
    out = subprocess.run([sys.executable, "-m", "stepwire", "show", "straggler-job", "--address", collector.address],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=60)
    assert out.returncode == 0 and "slowest rank 2" in " ".join(out.stdout.split())
    assert view.status == "finished"  # every rank that logs has finished (rank 4 does not log)
