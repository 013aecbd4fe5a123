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


# --- workers do not outlive their driver ---

_DRIVER = """
import os, sys, time
from pathlib import Path
from shared.executor import Executor

def hold(i, folder):
    Path(folder, f"task-{i}-{os.getpid()}").write_text("")
    time.sleep(300)

backend, folder = sys.argv[1], sys.argv[2]
with Executor(backend, "", 2) as ex:
    list(ex.map_unordered(hold, [(0, folder), (1, folder)], desc="hold"))
"""


def _descendants(pid: int) -> set[int]:
    """Every live process under `pid`, from /proc (zombies, which hold no memory, count as gone)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, ppid = text.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            children.setdefault(int(ppid), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            found.add(c)
            todo.append(c)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def _alive(pids: set[int]) -> set[int]:
    def live(p: int) -> bool:
        try:
            return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    return {p for p in pids if live(p)}


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process tree from Linux's /proc")
@pytest.mark.parametrize("backend", ["loky", pytest.param("dask", marks=pytest.mark.engines),
                                     pytest.param("ray", marks=pytest.mark.engines)])
def test_workers_exit_within_seconds_of_their_drivers_death(backend, tmp_path):
    """SIGKILL the driver mid-task (as the OOM killer or a closed terminal would): every process it
    started (workers, Dask nannies, Ray's local runtime) is gone within 5 s, not left computing."""
    import signal
    import subprocess

    if backend != "loky":
        pytest.importorskip({"dask": "distributed", "ray": "ray"}[backend])
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER, backend, str(tmp_path)], start_new_session=True,
                              cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    family: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("task-*"))) < 2:
            assert driver.poll() is None and time.monotonic() < deadline, "the tasks never started"
            time.sleep(0.1)
        time.sleep(0.5)  # let idle helper processes settle too
        family = _descendants(driver.pid)
        if backend == "ray":  # Ray's two idle node agents see the death within 2 s, then spend ~60 s
            # failing to report it to the dead GCS before they exit (docs/reliability.md): not workers
            family = {p for p in family if not _cmdline(p).startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent"))}
        workers = {int(p.name.split("-")[2]) for p in tmp_path.glob("task-*")}
        assert workers <= family
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 5
        while _alive(family) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(family), f"still running 5 s after the driver died: {sorted(_alive(family))}"
    finally:
        for pid in _alive(family | _descendants(driver.pid) | {driver.pid}):  # only what this test started
            os.kill(pid, signal.SIGKILL)
