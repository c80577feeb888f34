"""Console capture (stepwire.console) through the public API against a real collector: lines of a process that is
SIGKILLed (delivered, or spooled and synced), stderr and tracebacks, limits, the off switch, ``stepwire logs``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import stepwire
from conftest import CollectorProcess
from stepwire import console as console_module

CHILD = textwrap.dedent("""
    import os, sys, time, stepwire
    address, ready = sys.argv[1], sys.argv[2]
    run = stepwire.init(project="con", address=address or None, quiet=True)
    for i in range(3):
        run.log({"loss": float(i)})
    print("hello from the child")
    print("a warning", file=sys.stderr)
    sys.stdout.write("no newline yet")  # an open line: shipped only at finish or after PARTIAL_LINE_S
    sys.stdout.flush()
    deadline = time.monotonic() + 60  # wait until the console thread handed both lines to the sender ...
    while run.stats()["console_lines"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    run._sender.wait(0, 60, delivered=False)  # ... and it delivered or spooled them
    with open(ready, "w") as f:
        f.write(run.id)
    time.sleep(120)  # killed here
""")


def _child(tmp_path: Path, address: str, **env: str) -> tuple[subprocess.Popen[bytes], Path]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    ready = tmp_path / "ready"
    full_env = {**os.environ, "STEPWIRE_CONSOLE": "1", "STEPWIRE_DIR": str(tmp_path / "client"), **env}
    proc = subprocess.Popen([sys.executable, str(script), address, str(ready)], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), proc.communicate(timeout=10)[1].decode()[-3000:]
    return proc, ready


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_lines_printed_before_a_sigkill_are_kept(collector: CollectorProcess, tmp_path: Path, mode: str) -> None:
    proc, ready = _child(tmp_path, collector.address if mode == "online" else "", STEPWIRE_MODE=mode)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert b"hello from the child" in out and b"a warning" in err  # still printed as before
    run_id = ready.read_text()
    if mode == "offline":  # the lines wait in the spool
        sync = subprocess.run([sys.executable, "-m", "stepwire", "sync", str(tmp_path / "client"), "--address",
                               collector.address, "--quiet"], capture_output=True, text=True, timeout=120)
        assert sync.returncode == 0, sync.stderr
    lines = stepwire.Api(address=collector.address).run(run_id).console()
    assert [(line.stream, line.text) for line in lines] == [("stdout", "hello from the child"),
                                                           ("stderr", "a warning")]
    assert all(line.rank == 0 and line.step == 3 and line.wall_time > 0 for line in lines)
    assert lines[0].wall_time <= lines[1].wall_time


def test_an_uncaught_exception_leaves_its_traceback(collector: CollectorProcess, tmp_path: Path) -> None:
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent("""
        import sys, stepwire
        run = stepwire.init(project="con", address=sys.argv[1], quiet=True)
        print(run.id, flush=True)
        run.log({"loss": 1.0})
        def explode():
            raise RuntimeError("the loss went to NaN")
        explode()
    """))
    proc = subprocess.run([sys.executable, str(script), collector.address], capture_output=True, text=True,
                          env={**os.environ, "STEPWIRE_CONSOLE": "1"}, timeout=120)
    assert proc.returncode == 1 and "RuntimeError: the loss went to NaN" in proc.stderr  # printed as before
    view = stepwire.Api(address=collector.address).run(proc.stdout.split()[0])
    assert view.status == "failed"
    errors = [line.text for line in view.console() if line.stream == "stderr"]
    assert errors[0] == "Traceback (most recent call last):"
    assert errors[-1] == "RuntimeError: the loss went to NaN"
    assert any("explode()" in e for e in errors)


def test_output_is_teed_limited_and_restored(collector: CollectorProcess, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console_module, "MAX_BYTES", 100_000)
    stdout, stderr = sys.stdout, sys.stderr
    run = stepwire.init(project="con", address=collector.address, console=True, quiet=True)
    assert sys.stdout is not stdout and sys.stderr is not stderr
    print("x" * 20_000)  # truncated to 16 KiB
    print("progress 10%\rprogress 50%\rprogress 100%")  # a terminal shows the last state
    run.log({"loss": 1.0})
    print("line", 1, file=sys.stderr)
    for i in range(200):  # 200 x 1000 characters: the first ~83 fit in what is left of the 100,000 bytes
        print(f"{i:04d}" + "y" * 996)
    run.finish()
    assert sys.stdout is stdout and sys.stderr is stderr
    captured = capsys.readouterr()
    assert "x" * 20_000 in captured.out and "line 1" in captured.err  # everything still printed in full
    stats = run.stats()
    assert stats["console_truncated"] == 1
    lines = stepwire.Api(address=collector.address).run(run.id).console()
    assert lines[0].text == "x" * console_module.MAX_LINE_CHARS and lines[0].step == 0
    assert lines[1].text == "progress 100%"
    assert (lines[2].stream, lines[2].text, lines[2].step) == ("stderr", "line 1", 1)
    kept = lines[3:]
    assert 50 < len(kept) < 200 and [int(line.text[:4]) for line in kept] == list(range(len(kept)))
    assert stats["console_dropped"] == 200 - len(kept)
    assert stats["console_lines"] == len(lines) and stats["console_bytes"] <= 100_000


def test_console_false_captures_nothing(collector: CollectorProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPWIRE_CONSOLE", "1")
    stdout = sys.stdout
    run = stepwire.init(project="con", address=collector.address, console=False, quiet=True)
    assert sys.stdout is stdout
    print("not kept")
    run.finish()
    view = stepwire.Api(address=collector.address).run(run.id)
    assert view.console() == [] and view.texts() == [] and run.stats()["console_lines"] == 0


def test_console_records_stay_out_of_texts(collector: CollectorProcess) -> None:
    run = stepwire.init(project="con", address=collector.address, console=True, quiet=True)
    run.log_text("notes", "a text")
    print("a line")
    run.finish()
    view = stepwire.Api(address=collector.address).run(run.id)
    assert [t.name for t in view.texts()] == ["notes"]
    assert [line.text for line in view.console()] == ["a line"]


RANKS = textwrap.dedent("""
    import sys, stepwire
    run = stepwire.init(project="con", address=sys.argv[1], quiet=True)
    print(f"rank {run.rank} says hello")
    run.finish()
""")


def test_stepwire_logs_prints_every_ranks_lines(collector: CollectorProcess, tmp_path: Path) -> None:
    script = tmp_path / "rank.py"
    script.write_text(RANKS)
    for rank in (0, 1):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "STEPWIRE_RUN_ID": "con-two-ranks", "STEPWIRE_CONSOLE": "1"}
        subprocess.run([sys.executable, str(script), collector.address], env=env, check=True, timeout=120,
                       capture_output=True)
    view = stepwire.Api(address=collector.address).run("con-two-ranks")
    assert [line.text for line in view.console()] == ["rank 0 says hello", "rank 1 says hello"]
    assert [line.text for line in view.console(rank=1)] == ["rank 1 says hello"]

    def logs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "stepwire", "logs", *args, "--address", collector.address],
                              capture_output=True, text=True, timeout=60)

    both = logs("con-two-ranks")
    assert both.returncode == 0, both.stderr
    out = both.stdout.splitlines()
    assert len(out) == 2 and out[0].startswith("[0] ") and out[0].endswith("| rank 0 says hello")
    assert out[1].startswith("[1] ") and out[1].endswith("| rank 1 says hello")
    one = logs("con-two-ranks", "--rank", "1")
    assert one.returncode == 0 and one.stdout.splitlines()[0].endswith("| rank 1 says hello")
    assert len(one.stdout.splitlines()) == 1 and not one.stdout.startswith("[")
    missing = logs("no-such-run")
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1 and "no-such-run" in missing.stderr

    follow = subprocess.Popen([sys.executable, "-m", "stepwire", "logs", "con-two-ranks", "--follow", "--address",
                               collector.address], stdout=subprocess.PIPE, text=True)
    try:
        assert follow.stdout is not None
        assert follow.stdout.readline().endswith("| rank 0 says hello\n")
        assert follow.stdout.readline().endswith("| rank 1 says hello\n")
        env = {**os.environ, "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "STEPWIRE_RUN_ID": "con-two-ranks",
               "STEPWIRE_CONSOLE": "1"}
        subprocess.run([sys.executable, str(script), collector.address], env=env, check=True, timeout=120,
                       capture_output=True)  # a rank that prints again: follow shows it
        assert follow.stdout.readline().endswith("| rank 1 says hello\n")
        assert follow.poll() is None
    finally:
        follow.send_signal(signal.SIGINT)
        follow.communicate(timeout=30)
    assert follow.returncode == 0
