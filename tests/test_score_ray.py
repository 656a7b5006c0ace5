"""`sliq score --ray`, the RayScorer API and the warm scorer pool (`sliq ray-pool`, `--ray-pool`) on a local 2-CPU
Ray cluster (loopback, no dashboard) that this module starts once and stops: the same records as a local run,
per-file errors, a worker or pool actor killed mid-run, Ctrl-C."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from sliq_cli.cli.app import app

from .conftest import REPO, jsonl_records

ray = pytest.importorskip("ray")
# Ray Data's DataContext warns about its own deprecated fields when it is created; nothing here sets them
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def cluster():
    import ray.data

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture()
def photos(tmp_path, example_photos):
    """Example photos in two sizes (so batches group by size), and a broken JPEG among them."""
    d = tmp_path / "photos"
    d.mkdir()
    for k, p in enumerate(example_photos):
        Image.open(p).resize((96, 64) if k % 2 else (80, 80)).save(d / p.name)
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return d


def _score(args):
    return runner.invoke(app, ["score", *map(str, args)])


def _by_path(records):
    return {r["path"]: r for r in records}


def _assert_same(got: dict, want: dict):
    assert got.keys() == want.keys()
    for path, w in want.items():
        g = got[path]
        assert (g.get("error") is None) == (w.get("error") is None), path
        if w.get("error") is None:  # float32 features summed in another order (threads, batches): ~1e-7 relative
            assert float(g["score"]) == pytest.approx(float(w["score"]), rel=1e-6, abs=1e-5), path
        else:
            assert g["error"] == w["error"]


def test_ray_gives_the_local_records_and_reports_a_broken_file(photos, tiny_encoder_dir):
    local = _score([photos, "-m", tiny_encoder_dir, "-f", "jsonl"])
    remote = _score([photos, "-m", tiny_encoder_dir, "-f", "jsonl", "--ray"])
    assert local.exit_code == remote.exit_code == 1  # one broken file: its error, every other score
    got, want = _by_path(jsonl_records(remote.stdout)), _by_path(jsonl_records(local.stdout))
    _assert_same(got, want)
    assert "corrupt" in got[str(photos / "broken.jpg")]["error"]
    assert sum(r["score"] is not None for r in got.values()) == len(got) - 1
    assert "broken.jpg" in remote.stderr


def test_ray_writes_sorted_csv_like_a_local_run(photos, tiny_encoder_dir, tmp_path):
    outs = {}
    for name, extra in (("local", []), ("ray", ["--ray"])):
        outs[name] = tmp_path / f"{name}.csv"
        r = _score([photos, "-m", tiny_encoder_dir, "--sort", "-o", outs[name], *extra])
        assert r.exit_code == 1
    local, remote = (list(csv.DictReader(outs[n].open())) for n in ("local", "ray"))
    assert [r["path"] for r in remote] == [r["path"] for r in local]  # --sort: best first, the failure last
    _assert_same(_by_path(remote), _by_path(local))


def test_ray_explains_as_a_local_run(tmp_path, example_photos):
    for p in example_photos[:2]:
        Image.open(p).resize((160, 96)).save(tmp_path / p.name)
    args = [tmp_path, "-m", REPO / "weights", "--explain", "-f", "jsonl"]  # the checkout's model has its text tower
    local, remote = _score(args), _score([*args, "--ray"])
    assert local.exit_code == remote.exit_code == 0
    want, got = _by_path(jsonl_records(local.stdout)), _by_path(jsonl_records(remote.stdout))
    _assert_same(got, want)
    for path, w in want.items():
        assert [d["text"] for d in got[path]["descriptions"]] == [d["text"] for d in w["descriptions"]]
        assert got[path]["appearance"] == w["appearance"] and got[path]["crop"] == w["crop"]


def test_the_readme_ray_data_block_scores_as_a_local_run(monkeypatch):
    from sliq_cli.api import load

    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("```python\nimport ray")
    block = text[start + len("```python\n"):text.index("```\n", start + 10)]
    monkeypatch.chdir(REPO)  # its paths are the checkout's examples/
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    rows = namespace["rows"]
    want = _by_path(load(device="cpu").records(sorted((REPO / "examples").glob("*.jpg"))))
    _assert_same({r["path"]: {"score": r["score"], "error": r["error"]} for r in rows}, want)


def _sixteen_files(folder: Path, example_photos) -> list[Path]:
    """16 files, the example photos over and over: enough calls of 2 paths for a kill to land mid-run."""
    files = []
    for k in range(16):
        src = example_photos[k % len(example_photos)]
        files.append(folder / f"{k:02d}_{src.name}")
        Image.open(src).save(files[-1])
    return files


def _map_workers():
    from ray._private.state import actors  # the GCS's actor table: works without the dashboard that list_actors needs

    return [a for a in actors().values() if "MapWorker" in a["ActorClassName"]]


def test_a_worker_killed_mid_run_loses_nothing_and_repeats_nothing(tmp_path, example_photos, tiny_encoder_dir):
    from sliq_cli.api import load
    from sliq_cli.iqa.ray_score import score_records

    files = _sixteen_files(tmp_path, example_photos)
    records = score_records(files, str(tiny_encoder_dir), batch_size=2).records
    got = [next(records)]
    victim = next(a for a in _map_workers() if a["State"] == "ALIVE")
    os.kill(victim["Pid"], signal.SIGKILL)
    got += list(records)
    assert sorted(r["path"] for r in got) == sorted(map(str, files))  # each once
    assert any(a["NumRestarts"] > 0 for a in _map_workers())  # the kill landed on a worker that had to restart
    _assert_same(_by_path(got), _by_path(load(str(tiny_encoder_dir), device="cpu").records(files)))


def test_ctrl_c_leaves_the_output_file_intact(tmp_path, example_photos, tiny_encoder_dir):
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(40):
        Image.open(example_photos[k % len(example_photos)]).save(folder / f"{k:02d}.png")
    out = tmp_path / "out.csv"
    out.write_text("yesterday's results\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "sliq_cli", "score", str(folder), "-m", str(tiny_encoder_dir),
                             "--ray", "-o", str(out)], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.csv.*.tmp")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the temporary output exists: the model is loaded and Ray is starting
    time.sleep(3)
    assert proc.poll() is None, proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert out.read_text() == "yesterday's results\n", stderr
    assert not list(tmp_path.glob(".out.csv.*")), stderr  # no temporary file left behind


def test_batches_of_paths_score_as_a_local_run(photos, tiny_encoder_dir):
    """The route of every cluster, GPU ones included (there on CUDA, with nvJPEG), on the CPU: only paths go to the
    actors, which score them with a local run's pipeline. A block in which no file failed holds an "error" column of
    nulls, which Ray Data hands back as NaN; no image may be taken for failed by it, and the broken file among good
    ones gets a local run's error."""
    import ray.data

    from sliq_cli.api import load
    from sliq_cli.iqa.ray_score import RayScorer, _reason, ray_parts

    paths = sorted(str(p) for p in photos.iterdir())
    parts = ray_parts(str(tiny_encoder_dir))
    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=3)  # one block holds broken.jpg
    rows = ds.map_batches(RayScorer, batch_size=2, compute=ray.data.ActorPoolStrategy(size=1),
                          fn_constructor_kwargs={"parts": parts, "device": "cpu", "run_size": len(paths)}).take_all()
    want = _by_path(load(str(tiny_encoder_dir), device="cpu").records(paths))
    got = {r["path"]: {"score": r["score"], "error": _reason(r["error"])} for r in rows}
    assert [p for p, r in got.items() if r["error"] is not None] == [str(photos / "broken.jpg")], got
    _assert_same(got, want)


def test_an_actor_decodes_its_batches_as_the_whole_run(photos, tiny_encoder_dir):
    """On CUDA, a run that fits in the first batch decodes with Pillow, a larger one with nvJPEG: an actor's batch
    of paths is routed by the run's file count, not its own, so its scores are those of a local run of every file."""
    import numpy as np

    from sliq_cli.iqa.ray_score import ray_parts

    @ray.remote(num_cpus=1)
    def score_batch(parts, paths):  # in a worker, as an actor runs (its thread count is the worker's)
        from sliq_cli.iqa.features import FeatureExtractor
        from sliq_cli.iqa.ray_score import RayScorer

        scorer = RayScorer(parts, device="cpu", run_size=1000)
        extractor, counts = scorer.scorer.extractor, []

        def pillow_only(count):
            counts.append(count)
            return FeatureExtractor.pillow_only(extractor, count)

        extractor.pillow_only = pillow_only
        return counts, scorer({"path": np.array(paths)})

    paths = [str(photos / "broken.jpg"), *map(str, sorted(photos.glob("k*")))]
    counts, out = ray.get(score_batch.remote(ray_parts(str(tiny_encoder_dir)), paths))
    assert counts == [1000]
    assert out["error"][0] is not None and out["error"][1:] == [None] * (len(paths) - 1)
    assert np.isnan(out["score"][0]) and not np.isnan(out["score"][1:]).any()


def test_the_driver_never_imports_torch(photos, tiny_encoder_dir):
    """`sliq score --ray` lists the files, reads and checks the model and resolves the head without torch: on a GPU
    machine its import takes seconds, and the actors import it anyway. The cluster is replaced by a stub that
    reports, when Ray would start, whether the driver had imported torch."""
    code = f"""
import contextlib, sys
import sliq_cli.iqa.ray_score as ray_score

@contextlib.contextmanager
def stub(address=None):
    print("torch imported:", "torch" in sys.modules)
    raise SystemExit(0)
    yield

ray_score.ray_cluster = stub
sys.argv = ["sliq", "score", {str(photos)!r}, "--ray", "--model", {str(tiny_encoder_dir)!r}]
from sliq_cli.cli.app import main
main()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.split("\n")[0] == "torch imported: False", out.stdout + out.stderr


def test_a_warm_pool_scores_as_a_local_run_and_keeps_its_processes(photos, tiny_encoder_dir):
    from sliq_cli.iqa.ray_pool import pool_status, start_pool, stop_pool

    info = start_pool("t-warm", str(tiny_encoder_dir), actors=1, device="cpu")
    try:
        assert (info.actors, info.device) == (1, "cpu")
        _, pids = pool_status("t-warm")
        want = _by_path(jsonl_records(_score([photos, "-m", tiny_encoder_dir, "-f", "jsonl"]).stdout))
        for _ in range(2):  # two runs, one pool
            run = _score([photos, "-f", "jsonl", "--ray-pool", "t-warm"])
            assert run.exit_code == 1 and "broken.jpg" in run.stderr  # the broken file: its error, the rest scored
            _assert_same(_by_path(jsonl_records(run.stdout)), want)
        assert pool_status("t-warm")[1] == pids  # the same processes served both runs: nothing started again
        other = _score([photos, "--ray-pool", "t-warm", "-m", REPO / "weights"])
        assert other.exit_code == 2 and "serves model" in other.stderr  # the pool's model scores, or nothing does
        explain = _score([photos, "--ray-pool", "t-warm", "--explain"])
        assert explain.exit_code == 2 and "text tower" in explain.stderr
    finally:
        stop_pool("t-warm")
    gone = _score([photos, "--ray-pool", "t-warm"])
    assert gone.exit_code == 2 and "no scorer pool named 't-warm'" in gone.stderr


def test_a_pool_actor_killed_mid_run_loses_nothing_and_repeats_nothing(tmp_path, example_photos, tiny_encoder_dir):
    from sliq_cli.api import load
    from sliq_cli.iqa.ray_pool import pool_score_records, pool_status, start_pool, stop_pool

    files = _sixteen_files(tmp_path, example_photos)
    start_pool("t-kill", str(tiny_encoder_dir), actors=1, device="cpu", batch_size=2)
    try:
        (pid,) = pool_status("t-kill")[1]
        records = pool_score_records(files, "t-kill").records
        got = [next(records)]
        os.kill(pid, signal.SIGKILL)
        got += list(records)
        assert sorted(r["path"] for r in got) == sorted(map(str, files))  # each once
        (restarted,) = pool_status("t-kill")[1]
        assert restarted not in (None, pid)  # Ray restarted the actor, which rebuilt its model from the registry
    finally:
        stop_pool("t-kill")
    _assert_same(_by_path(got), _by_path(load(str(tiny_encoder_dir), device="cpu").records(files)))
