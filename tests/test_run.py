"""Round trips through a real collector process on loopback: init -> log -> finish -> Api."""

from __future__ import annotations

import math
import socket
from pathlib import Path

import numpy as np
import pytest

import stepwire
from conftest import CollectorProcess, segments_of
from reference import nasty_values, reference_histogram


def test_100k_points_across_series_round_trip_exactly(collector: CollectorProcess) -> None:
    rng = np.random.default_rng(0)
    values = rng.standard_normal((25_000, 5))
    with stepwire.init(project="rt", name="exact", address=collector.address, config={"lr": 0.1},
                       tags=["a", "b"]) as run:
        for i in range(25_000):
            run.log({f"layer{j}/x": float(values[i, j]) for j in range(4)})
            run.log_scalar("loss", float(values[i, 4]), step=i)
        stats = run.stats()
    assert stats["logged"] == 125_000
    assert run.stats()["acknowledged"] == 125_000 and run.stats()["dropped"] == 0

    api = stepwire.Api(address=collector.address)
    (view,) = api.runs(project="rt")
    assert (view.id, view.name, view.tags, view.config, view.status) == (run.id, "exact", ["a", "b"], {"lr": 0.1},
                                                                         "finished")
    for j in range(4):
        d = api.run(run.id).scalars(f"layer{j}/x")
        np.testing.assert_array_equal(d["step"], np.arange(25_000))
        np.testing.assert_array_equal(d["value"], values[:, j])
        assert np.all(d["rank"] == 0) and np.all(np.diff(d["wall_time"]) >= 0)
    loss = view.scalars("loss")
    np.testing.assert_array_equal(loss["value"], values[:, 4])
    summary = view.summary()
    assert summary["loss"] == {"last": values[-1, 4], "min": values[:, 4].min(), "max": values[:, 4].max()}
    assert {s.name: s.items for s in view.series()} == {**{f"layer{j}/x": 25_000 for j in range(4)}, "loss": 25_000}


def test_auto_step_and_explicit_steps(collector: CollectorProcess) -> None:
    with stepwire.init(address=collector.address) as run:
        run.log({"a": 1.0})            # step 0
        run.log({"a": 2.0, "b": 3})    # step 1
        run.log_scalar("a", 4.0)       # step 2
        run.log({"a": 5.0}, step=10)   # step 10
        run.log({"a": 6.0})            # step 11
        run.log({"a": 7.0}, step=3)    # an explicit earlier step is kept, as logged
        assert run.step == 12
    d = stepwire.Api(address=collector.address).run(run.id).scalars("a")
    assert d["step"].tolist() == [0, 1, 2, 3, 10, 11]
    assert d["value"].tolist() == [1.0, 2.0, 4.0, 7.0, 5.0, 6.0]


def test_nan_and_inf_scalars_are_stored_as_they_are(collector: CollectorProcess) -> None:
    with stepwire.init(address=collector.address) as run:
        run.log({"x": float("nan")})
        run.log({"x": float("inf")})
        run.log({"x": -math.inf})
        run.log({"x": np.float32(1.5), "y": np.int64(7), "z": True, "n": np.array(2.5)})
    view = stepwire.Api(address=collector.address).run(run.id)
    x = view.scalars("x")["value"]
    assert np.isnan(x[0]) and x[1] == np.inf and x[2] == -np.inf and x[3] == 1.5
    assert view.summary()["x"] == {"last": 1.5, "min": -np.inf, "max": np.inf}
    assert view.scalars("y")["value"].tolist() == [7.0]
    assert view.scalars("z")["value"].tolist() == [1.0]
    assert view.scalars("n")["value"].tolist() == [2.5]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_histograms_round_trip_against_numpy(collector: CollectorProcess, dtype: type) -> None:
    rng = np.random.default_rng(5)
    data = [nasty_values(rng, 20_000, dtype) for _ in range(3)]
    with stepwire.init(address=collector.address, k=4) as run:
        for i, x in enumerate(data):
            run.log_histogram("weights/w", x, step=i * 10)
        run.log({"grads/g": data[0], "loss": 1.0}, step=100)
        run.log_histogram("seq", [1, 2, 3, 4.5])
    view = stepwire.Api(address=collector.address).run(run.id)
    hists = view.histograms("weights/w")
    assert [h.step for h in hists] == [0, 10, 20]
    for h, x in zip(hists, data, strict=True):
        assert h.k == 4
        assert dict(zip(h.indices.tolist(), h.counts.tolist(), strict=True)) == reference_histogram(x, 4)
        assert (h.count, h.nan, h.pos_inf, h.neg_inf) == (
            len(x), np.isnan(x).sum(), np.isposinf(x).sum(), np.isneginf(x).sum())
    (g,) = view.histograms("grads/g")
    assert g.step == 100 and g.count == len(data[0])
    assert view.scalars("loss")["step"].tolist() == [100]
    (s,) = view.histograms("seq")
    assert s.count == 4 and s.max == 4.5


def test_bad_input_raises_naming_the_key_and_loses_nothing(collector: CollectorProcess) -> None:
    with stepwire.init(address=collector.address) as run:
        run.log({"ok": 1.0})
        with pytest.raises(TypeError, match="'bad'"):
            run.log({"fine": 2.0, "bad": "text"})
        with pytest.raises(TypeError, match="series name must be a str"):
            run.log({3: 1.0})
        with pytest.raises(ValueError, match="must not be empty"):
            run.log_scalar("", 1.0)
        with pytest.raises(ValueError, match="UTF-8 bytes"):
            run.log_scalar("é" * 129, 1.0)
        with pytest.raises(ValueError, match="control character"):
            run.log_scalar("a\nb", 1.0)
        with pytest.raises(TypeError, match="'c'"):
            run.log_scalar("c", [1, 2])
        with pytest.raises(TypeError, match="'c'"):
            run.log_scalar("c", complex(1, 2))
        with pytest.raises(TypeError, match="'h'"):
            run.log_histogram("h", np.array(["a", "b"]))
        with pytest.raises(TypeError, match="'h'"):
            run.log_histogram("h", np.array([1 + 2j]))
        with pytest.raises(TypeError, match="dict"):
            run.log([1, 2])  # type: ignore[arg-type]
        run.log_scalar("ok", 2.0)
        with pytest.raises(ValueError, match="already logged as a scalar"):
            run.log_histogram("ok", np.ones(3))
        run.log_scalar("é" * 128, 3.0)  # exactly 256 bytes is allowed
    view = stepwire.Api(address=collector.address).run(run.id)
    assert view.scalars("ok")["value"].tolist() == [1.0, 2.0]
    assert {s.name for s in view.series()} == {"ok", "é" * 128}  # nothing of the rejected calls was stored
    with pytest.raises(RuntimeError, match="finished"):
        run.log_scalar("ok", 1.0)
    with pytest.raises(RuntimeError, match="finished"):
        run.log({"ok": 1.0})


def test_nested_dicts_become_section_names(collector: CollectorProcess) -> None:
    with stepwire.init(address=collector.address) as run:
        run.log({"train": {"loss": 0.5, "acc": {"top1": 0.9}}})
    view = stepwire.Api(address=collector.address).run(run.id)
    assert set(view.summary()) == {"train/loss", "train/acc/top1"}


def test_log_params_and_failed_status(collector: CollectorProcess) -> None:
    with pytest.raises(ZeroDivisionError), stepwire.init(address=collector.address, config={"a": 1}) as run:
        run.log_params({"b": [1, 2], "c": object()})
        run.log({"x": 1.0})
        1 / 0  # noqa: B018
    view = stepwire.Api(address=collector.address).run(run.id)
    assert view.status == "failed"
    assert view.config["a"] == 1 and view.config["b"] == [1, 2] and view.config["c"].startswith("<object")
    assert view.scalars("x")["value"].tolist() == [1.0]


def test_unreachable_address_raises_connection_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: nothing answers there
        with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
            stepwire.init(address=f"127.0.0.1:{port}", connect_timeout=1.0, on_unreachable="raise",
                          dir=tmp_path)
    assert not segments_of(tmp_path)  # the failed init took its segment away


def test_stats_and_drop_policy(collector: CollectorProcess) -> None:
    run = stepwire.init(address=collector.address, policy="drop")
    for i in range(1000):
        run.log_scalar("x", float(i))
    run.finish()
    run.finish()  # idempotent
    s = run.stats()
    assert s["logged"] + s["dropped"] == 1000
    assert s["sent"] == s["acknowledged"] == s["logged"]
    assert len(stepwire.Api(address=collector.address).run(run.id).scalars("x")["step"]) == s["logged"]
    with pytest.raises(ValueError, match="policy"):
        stepwire.init(address=collector.address, policy="maybe")
    with pytest.raises(ValueError, match="mode"):
        stepwire.init(address=collector.address, mode="sideways")


def test_texts_artifacts_params_and_meta(collector: CollectorProcess, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"x" * 3_000_000)
    with stepwire.init(address=collector.address, config={"a": 1}) as run:
        run.log_text("samples/pred", "the cat sat", step=3)
        run.log_text("samples/pred", "on the mat")
        name = run.log_artifact(ckpt, name="checkpoints/model_3.pt", step=3)
        ckpt.unlink()  # captured at call time: deleting it now changes nothing
        run.log_artifact(_write(tmp_path / "cfg.txt"))
        run.log_params({"b": 2}, replace=True)
        run.update_meta({"progress": 40})
        with pytest.raises(FileNotFoundError):
            run.log_artifact(tmp_path / "missing.bin")
        for bad in ("../escape", "/abs", "a//b", "a\\b", "ctl\x01"):
            with pytest.raises(ValueError, match="artifact name"):
                run.log_artifact(tmp_path / "cfg.txt", name=bad)
        with pytest.raises(TypeError, match="must be a str"):
            run.log_text("t", 3)  # type: ignore[arg-type]
        run.log_artifact(tmp_path / "cfg.txt", name="gone.txt")
        run.delete_artifact("gone.txt")
    assert run.stats()["side_failed"] == 0
    view = stepwire.Api(address=collector.address).run(run.id)
    assert [(t.step, t.text) for t in view.texts("samples/pred")] == [(3, "the cat sat"), (4, "on the mat")]
    assert view.config == {"b": 2} and view.meta["progress"] == 40
    assert view.meta["ranks"] == {"0": "finished"} and view.meta["world_size"] == 1
    arts = {a.name: a for a in view.artifacts()}
    assert set(arts) == {name, "cfg.txt"}
    assert arts[name].size == 3_000_000 and arts[name].step == 3
    out = view.download_artifact(name, tmp_path)
    assert out == tmp_path / "model_3.pt" and out.read_bytes() == b"x" * 3_000_000
    with pytest.raises(KeyError):
        view.download_artifact("gone.txt", tmp_path)
    assert not (tmp_path / ".gone.txt.part").exists()


def _write(path):  # type: ignore[no-untyped-def]
    path.write_text("lr: 0.1\n")
    return path


def test_stats_account_for_the_time_spent_logging(collector: CollectorProcess, capfd) -> None:  # type: ignore[no-untyped-def]
    run = stepwire.init(address=collector.address)
    for i in range(20_000):
        run.log({"a": float(i), "b": 1.0})
    run.log_histogram("h", np.random.default_rng(0).standard_normal(1_000_000))
    s = run.stats()
    assert s["logging_s"] > 0 and 0 < s["logging_fraction"] < 1
    run.finish()
    err = capfd.readouterr().err
    assert f"stepwire: run {run.id} finished (finished): logging cost" in err and "40.0 k points, 0 dropped" in err
    ranked = stepwire.init(address=collector.address, rank=2, world_size=4, run_id="four-ranked")
    ranked.finish()  # one line per rank, each saying which
    assert "stepwire: run four-ranked rank 2/4 finished (finished): logging cost" in capfd.readouterr().err
    with stepwire.init(address=collector.address, quiet=True) as quiet:
        quiet.log({"a": 1.0})
    assert "stepwire: run" not in capfd.readouterr().err
