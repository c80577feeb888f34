"""Load: 8 client processes push concurrently for 30 seconds; every point is stored and the collector's memory
stays bounded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import psutil

import stepwire
from conftest import CollectorProcess

RSS_BOUND = 1536 << 20
"""Collector RSS bound under this load (DuckDB memory_limit 1 GB + in-flight batches), bytes."""

CLIENT = textwrap.dedent("""
    import json, sys, time, stepwire
    run = stepwire.init(project="load", address=sys.argv[1])
    data = {f"m{i}": float(i) for i in range(200)}
    end, step = time.monotonic() + float(sys.argv[2]), 0
    while time.monotonic() < end:  # a steady 100 k points/s per client
        run.log(data, step=step)
        step += 1
        time.sleep(0.002)
    run.finish()
    print(json.dumps({"id": run.id, "stats": run.stats()}))
""")


def test_eight_clients_for_thirty_seconds(collector: CollectorProcess) -> None:
    proc = psutil.Process(collector.proc.pid)
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            peak[0] = max(peak[0], proc.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    clients = [subprocess.Popen([sys.executable, "-c", CLIENT, collector.address, "30"], stdout=subprocess.PIPE)
               for _ in range(8)]
    outs = [json.loads(c.communicate(timeout=600)[0]) for c in clients]
    stop.set()
    sampler.join()
    api = stepwire.Api(address=collector.address)
    assert len(api.runs(project="load")) == 8
    total = 0
    for out in outs:
        s = out["stats"]
        assert s["acknowledged"] == s["logged"] > 0 and s["spooled"] == 0 and s["dropped"] == 0
        view = api.run(out["id"])
        assert sum(x.items for x in view.series()) == s["logged"]
        assert len(view.scalars("m7")["step"]) == s["logged"] // 200
        total += s["logged"]
    print(f"8 clients stored {total} points in 30 s; collector peak RSS {peak[0] >> 20} MiB")
    assert 0 < peak[0] < RSS_BOUND
