"""shared.executor on its three engines (loky, a Dask LocalCluster, a local Ray runtime): results in
completion order, a task's exception raised in the driver as itself, clear errors for a missing
engine or an unknown backend."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click
import pytest

from shared.executor import Executor, run_tasks
from shared.frames import DataError
from tests.fixtures.engines import dask_scheduler, ray_runtime  # noqa: F401 (fixtures)


def wait_for_the_driver(i: int, folder: str) -> int:
    """Task 0 finishes only once the driver has received a result (so it must be task 1's); a runner
    that yields in submission order never gets there (task 0 then gives up after 60 s)."""
    deadline = time.monotonic() + 60
    while i == 0 and not Path(folder, "driver-has-one").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return i


def fail_with(kind: str, path: str) -> None:
    if kind == "missing":
        open(path)  # FileNotFoundError with errno and filename
    if kind == "data":
        raise DataError(path, "truncated")


def engine(backend: str, request) -> dict:
    if backend == "dask":
        return {"scheduler": request.getfixturevalue("dask_scheduler")}
    if backend == "ray":
        request.getfixturevalue("ray_runtime")  # started once for the module; the executor reuses it
    return {}


@pytest.mark.engines
@pytest.mark.parametrize("backend", ["loky", "dask", "ray"])
def test_results_in_completion_order_and_task_exceptions_as_themselves(backend, request, tmp_path):
    with Executor(backend, n_jobs=2, **engine(backend, request)) as ex:
        results = ex.map_unordered(wait_for_the_driver, [(0, str(tmp_path)), (1, str(tmp_path))], desc="order")
        assert next(results) == 1
        (tmp_path / "driver-has-one").touch()
        assert list(results) == [0]

        missing = tmp_path / "no-such-frame.png"
        with pytest.raises(FileNotFoundError) as e:
            list(ex.map_unordered(fail_with, [("missing", str(missing))]))
        assert type(e.value) is FileNotFoundError and e.value.filename == str(missing)
        with pytest.raises(DataError) as e:
            list(ex.map_unordered(fail_with, [("data", str(missing))]))
        assert type(e.value) is DataError and (e.value.path, e.value.problem) == (str(missing), "truncated")


def test_one_loky_job_runs_in_this_process():
    # what the stages' own tests rely on to patch a task function
    assert list(run_tasks(os.getpid, [(), ()], "loky", n_jobs=1)) == [os.getpid()] * 2
    assert list(run_tasks(os.getpid, [], "loky", n_jobs=2)) == []


@pytest.mark.parametrize("backend, module", [("dask", "distributed"), ("ray", "ray")])
def test_a_missing_engine_names_what_to_install(backend, module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(click.UsageError, match=r"pip install -r requirements-scale\.txt") as e:
        list(run_tasks(abs, [(-1,)], backend))
    assert f"--backend {backend}" in str(e.value)


def test_an_unknown_backend_is_refused():
    with pytest.raises(click.UsageError, match="loky, dask, ray"):
        Executor("multiprocessing")
