"""Regions and shards on real engines: a Dask LocalCluster (2 worker processes) and a local Ray runtime
(2 CPUs) write the same bytes as local loky processes on the tiny synthetic city, and a worker
process killed mid-stage loses no finished chunk (Dask and Ray retry the task; after loky, a rerun
completes the store)."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from preprocess import regions as regions_stage
from preprocess.shards import ShardsConfig, run_shards
from shared.region_store import sha256_file
from shared.stage import PROJECT_ROOT, StageConfig, read_pointer
from tests.fixtures.dying_task import SNAPSHOT, process_frame_dying_once
from tests.fixtures.engines import dask_scheduler, ray_runtime  # noqa: F401 (fixtures)

pytestmark = pytest.mark.engines

# the tiny city: 2 sequences x 6 frames at 96x192 -> 4 chunks of 3 frames; shards: the tiny preset
SHARDS = dict(group_size=4, epochs=2, max_groups=2, groups_per_shard=1)
DYING_FRAME = "seq00_000003"  # the first frame of chunk_00001.h5


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    from preprocess.synth import generate_preset

    root = tmp_path_factory.mktemp("city") / "city-tiny"
    generate_preset(root, "tiny")
    return root


def regions_config(city: Path, out: Path, **kw) -> regions_stage.RegionsConfig:
    return regions_stage.RegionsConfig(**{**dict(dataset="synthetic", data_root=str(city), out=str(out),
                                                 demo_size="tiny", chunk_size=3, workers=1), **kw})


def shards_config(city: Path, out: Path, **kw) -> ShardsConfig:
    return ShardsConfig(**{**dict(dataset="synthetic", data_root=str(city), out=str(out), demo_size="tiny",
                                  workers=1, **SHARDS), **kw})


def store_content(store: Path) -> dict[str, object]:
    """Chunk bytes (they name the source images, which every run here shares) and the manifest less
    the fields that say where and how the run ran."""
    man = json.loads((store / "manifest.json").read_text())
    for k in ("out", "workers", "backend", "scheduler"):
        man["config"].pop(k)
    return {p.name: p.read_bytes() for p in sorted(store.glob("chunk_*.h5"))} | {"manifest.json": man}


def shard_content(folder: Path) -> dict[str, object]:
    man = json.loads((folder / "manifest.json").read_text())
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.tar"))} | {"shards": man["shards"]}


@pytest.fixture(scope="module")
def reference(city, tmp_path_factory):
    """Region store and shard set written locally (one loky worker: in this process; the stages'
    own tests show that any number of workers gives these bytes)."""
    out = tmp_path_factory.mktemp("loky")
    store = regions_stage.run_regions(regions_config(city, out), echo=lambda s: None)
    shards = run_shards(shards_config(city, out), echo=lambda s: None)
    assert len(list(store.glob("chunk_*.h5"))) == 4 and len(list(shards.glob("shard-*.tar"))) == 2
    return store_content(store), shard_content(shards), store.name


def kill_a_worker_in_regions(city: Path, out: Path, store_name: str, monkeypatch, **engine):
    """Run regions (4 chunks, 2 workers) with the worker of chunk 1 killed once; returns the store."""
    cfg = regions_config(city, out, workers=2, **engine)
    store = out / "synthetic-tiny" / "regions" / store_name
    store.mkdir(parents=True)
    # the first frame of chunk 1 (chunks of 3 frames) dies once; the store to watch is named beside it
    (city / f"die-in-{DYING_FRAME}").touch()
    (city / "die-store.txt").write_text(str(store))
    with monkeypatch.context() as m:
        m.setattr(regions_stage, "process_frame", process_frame_dying_once)
        if engine["backend"] == "loky":
            # local processes: the stage stops when a worker dies...
            from joblib.externals.loky.process_executor import TerminatedWorkerError

            with pytest.raises(TerminatedWorkerError):
                regions_stage.run_regions(cfg, echo=lambda s: None)
            listed = json.loads((store / "manifest.json").read_text())["chunks"]
            assert "chunk_00001.h5" not in listed and 1 <= len(listed) <= 3
            # ...and the rerun completes it, redoing only the chunks not listed
            lines: list[str] = []
            regions_stage.run_regions(cfg, echo=lines.append)
            assert f"({len(listed)} chunks already done)" in lines[0]
        else:
            # a cluster runs the lost task again on a live worker: the stage completes in one go
            regions_stage.run_regions(cfg, echo=lambda s: None)
    assert (city / f"die-in-{DYING_FRAME}.fired").exists(), "the worker was never killed"
    for leftover in (city / f"die-in-{DYING_FRAME}.fired", city / "die-store.txt"):  # the city is shared
        leftover.unlink()
    at_death = json.loads((store / SNAPSHOT).read_text())
    assert at_death["chunks"] and "chunk_00001.h5" not in at_death["chunks"]
    for name, entry in at_death["chunks"].items():  # listed before the kill: kept, never rewritten
        st = os.stat(store / name)
        assert [st.st_ino, st.st_mtime_ns] == at_death["files"][name], f"finished {name} was rewritten"
        assert sha256_file(store / name) == entry["sha256"]
    lines = []
    regions_stage.run_regions(dataclasses.replace(cfg, backend="loky", scheduler=""), echo=lines.append)
    assert "nothing to do" in lines[-1]
    return store


def test_loky_rerun_completes_a_store_whose_worker_was_killed(city, reference, tmp_path, monkeypatch):
    store = kill_a_worker_in_regions(city, tmp_path, reference[2], monkeypatch, backend="loky")
    assert store_content(store) == reference[0]


def test_dask_cluster_writes_the_bytes_of_local_processes_though_a_worker_dies(
        city, reference, dask_scheduler, tmp_path, monkeypatch):
    engine = dict(backend="dask", scheduler=dask_scheduler)
    store = kill_a_worker_in_regions(city, tmp_path, reference[2], monkeypatch, **engine)
    assert store_content(store) == reference[0]
    lines: list[str] = []
    shards = run_shards(shards_config(city, tmp_path, workers=2, **engine), echo=lines.append)
    assert "backend=dask" in lines[0]
    assert shard_content(shards) == reference[1]


def test_synth_and_the_proposals_report_on_dask_match_local_runs(city, dask_scheduler, tmp_path):
    """The two other stages with per-street / per-chunk tasks: the same city files, the same report."""
    from evaluate.proposals import ProposalsConfig, run_report
    from preprocess.synth import generate

    generate(tmp_path / "city", 2, 6, (96, 192), progress=False, workers=2, backend="dask", scheduler=dask_scheduler)
    files = sorted(p.relative_to(city) for p in city.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "city") for p in (tmp_path / "city").rglob("*") if p.is_file())
    assert all((city / f).read_bytes() == (tmp_path / "city" / f).read_bytes() for f in files)

    reports = []
    for engine in (dict(), dict(backend="dask", scheduler=dask_scheduler, workers=2)):
        cfg = ProposalsConfig(dataset="synthetic", data_root=str(city), out=str(tmp_path / "o"), demo_size="tiny",
                              max_frames=4, chunk_size=2, overlays=3, **engine)
        reports.append(run_report(cfg, echo=lambda s: None))
        out = tmp_path / "o" / "synthetic-tiny" / "reports"
        assert len(list(out.glob("*/*.png"))) == 15  # 3 frames x (4 methods + weights), by 2 tasks
    for rep in reports:
        rep.pop("seconds")
    assert reports[0] == reports[1]


def test_slurm_recipe_asks_for_single_threaded_workers_of_this_checkout():
    """docs/slurm_dask.py (the README's SLURM recipe) up to the submission: the job script SLURM would
    get, and the command with the scheduler's address filled in. Submitting needs a SLURM cluster."""
    cmd = [sys.executable, "docs/slurm_dask.py", "--dry-run", "--host", "127.0.0.1", "--jobs", "2", "--cores", "8",
           "--memory", "16GiB", "--job-extra=--partition=cpu", "--",
           "make", "regions", "REGIONS_ARGS=--backend dask --scheduler {scheduler}"]
    done = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    script, command = done.stdout.strip().rsplit("\n", 1)
    for line in ("#SBATCH --cpus-per-task=8", "#SBATCH --partition=cpu", f"cd {PROJECT_ROOT}",
                 f"export PYTHONPATH={PROJECT_ROOT}", "export OMP_NUM_THREADS=1"):
        assert line in script.splitlines()
    worker = next(ln for ln in script.splitlines() if "dask_worker" in ln)
    assert worker.startswith(f"{sys.executable} -m distributed.cli.dask_worker tcp://127.0.0.1:")
    assert "--nthreads 1" in worker and "--nworkers 8" in worker
    address = worker.split()[3]
    assert command == f"make regions 'REGIONS_ARGS=--backend dask --scheduler {address}'"


@pytest.fixture
def ray_head(tmp_path) -> Iterator[str]:
    """A Ray cluster started the way a user starts one, `ray start --head` (on 127.0.0.1, 2 CPUs),
    in a shell environment that knows nothing of this process's Ray; `--block` keeps the command
    running until it is terminated, and then it stops what it started."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "ray-start.log"
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1",
           "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats", "--block"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=user_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "block forever" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()  # `ray start --block` stops the processes it started...
        proc.wait(timeout=60)
        try:  # ...and whatever did not stop goes with its process group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def user_env() -> dict[str, str]:
    """This environment less what ray.init() in this process added (its auth mode)."""
    return {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}


def test_regions_and_shards_commands_on_a_cluster_from_ray_start(city, reference, ray_head, tmp_path):
    """The README's Ray recipe on one machine: the commands join a `ray start` cluster by address."""
    for stage in ("regions", "shards"):
        cmd = [sys.executable, "-m", "preprocess", stage, "--dataset", "synthetic", "--data-root", str(city),
               "--out", str(tmp_path), "--demo-size", "tiny", "--workers", "2", "--backend", "ray",
               "--scheduler", ray_head] + (["--chunk-size", "3"] if stage == "regions" else [])
        done = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, env=user_env())
        assert done.returncode == 0, done.stderr[-3000:]
    cfg = StageConfig(dataset="synthetic", data_root=str(city), out=str(tmp_path), demo_size="tiny")
    assert store_content(read_pointer(cfg, "regions", "depth")) == reference[0]  # pointers may be relative
    assert shard_content(read_pointer(cfg, "shards", "depth")) == reference[1]


def test_ray_runtime_writes_the_bytes_of_local_processes_though_a_worker_dies(
        city, reference, ray_runtime, tmp_path, monkeypatch):
    store = kill_a_worker_in_regions(city, tmp_path, reference[2], monkeypatch, backend="ray")
    assert store_content(store) == reference[0]
    lines: list[str] = []
    shards = run_shards(shards_config(city, tmp_path, workers=2, backend="ray"), echo=lines.append)
    assert "backend=ray" in lines[0]
    assert shard_content(shards) == reference[1]
