"""Who am I in a distributed job: rank, local rank and world size, and the run id every rank agrees on."""

from __future__ import annotations

import hashlib
import os
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from stepwire.names import check_id

# (rank, world size, local rank) variables of each launcher, most specific first: torchrun inside an
# srun allocation sets both its own and SLURM's, and its own are the ones that describe the training processes.
LAUNCHERS: list[tuple[str, str, str, str]] = [
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("mpich", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
]

# Variables shared by every process of one job, from which all ranks derive the same run id.
JOB_IDS: list[tuple[str, tuple[str, ...]]] = [
    ("torchrun", ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT")),
    ("openmpi", ("PMIX_NAMESPACE",)),
    ("openmpi", ("OMPI_MCA_orte_ess_jobid",)),
    ("slurm", ("SLURM_JOB_ID", "SLURM_STEP_ID")),
]


@dataclass(frozen=True)
class RankInfo:
    """This process's place in the job; ``source`` says where it came from."""

    rank: int
    world_size: int
    local_rank: int
    source: str
    logging_ranks: int = 0  # how many ranks log to the run (``log_on_ranks``); 0 until init decides


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name} must be an integer, got {value!r}") from None


def _torch_dist() -> object | None:
    """torch.distributed if it is imported and initialized (never imports torch)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def detect_ranks(rank: int | None = None, world_size: int | None = None, env: Mapping[str, str] | None = None
                 ) -> RankInfo:
    """Rank, world size and local rank: explicit arguments win, then an initialized ``torch.distributed``,
    then the launcher's variables (torchrun, Open MPI, MPICH, SLURM); a lone process is rank 0 of 1."""
    env = os.environ if env is None else env
    found = RankInfo(0, 1, 0, "default")
    dist = _torch_dist()
    if dist is not None:
        r, w = dist.get_rank(), dist.get_world_size()  # type: ignore[attr-defined]
        found = RankInfo(r, w, _int(env, "LOCAL_RANK") or 0, "torch.distributed")
    else:
        for source, r_var, w_var, l_var in LAUNCHERS:
            r, w = _int(env, r_var), _int(env, w_var)
            if r is not None:
                found = RankInfo(r, w if w is not None else r + 1, _int(env, l_var) or 0, source)
                break
    if rank is not None or world_size is not None:
        r = found.rank if rank is None else rank
        w = found.world_size if world_size is None else world_size
        found = RankInfo(r, max(w, r + 1), found.local_rank, "explicit")
    if found.rank < 0 or found.world_size < 1 or found.rank >= found.world_size:
        raise ValueError(f"rank {found.rank} is not within a world of size {found.world_size} ({found.source})")
    return found


def agree_run_id(info: RankInfo, run_id: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The run id of this job, the same on every rank: ``run_id``, else ``$STEPWIRE_RUN_ID``, else rank 0's id
    broadcast through an initialized ``torch.distributed``, else one derived from the launcher's job id; a
    single process gets a fresh one. A multi-rank job with none of these raises ``RuntimeError`` rather
    than create one run per rank."""
    env = os.environ if env is None else env
    chosen = run_id or env.get("STEPWIRE_RUN_ID")
    if chosen:
        return check_id("run id", chosen)
    fresh = uuid.uuid4().hex[:16]
    if info.world_size == 1:
        return fresh
    dist = _torch_dist()
    if dist is not None:
        box = [fresh]
        dist.broadcast_object_list(box, src=0)  # type: ignore[attr-defined]
        return str(box[0])
    for source, names in JOB_IDS:
        values = [env.get(n, "") for n in names]
        if values[0] and values[0] != "none":
            return hashlib.sha256("|".join([source, *values]).encode()).hexdigest()[:16]
    raise RuntimeError(
        f"rank {info.rank} of {info.world_size} ({info.source}): cannot agree on a run id with the other ranks; "
        "set $STEPWIRE_RUN_ID, pass run_id=, or initialize torch.distributed before stepwire.init")
