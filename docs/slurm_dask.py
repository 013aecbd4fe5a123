"""Run one pipeline command on a Dask cluster of SLURM jobs (dask-jobqueue), then release the jobs.

    .venv/bin/python docs/slurm_dask.py --jobs 4 --cores 32 --memory 64GiB --walltime 04:00:00 -- \\
        make regions DATASET=cityscapes DATA_ROOT=/shared/cityscapes OUT=/shared/runs \\
        REGIONS_ARGS="--backend dask --scheduler {scheduler}"

Run it from the project folder on a login node (the Dask scheduler runs in this process). Each SLURM
job is one node running `--cores` single-threaded Dask worker processes (every stage task is
single-threaded), started in this checkout with this venv's Python and PYTHONPATH set to the
checkout, so the workers import the same code: the checkout, the venv, the dataset and OUT must be
on a filesystem every node sees. `{scheduler}` in the command becomes the scheduler's address.
Tasks wait in the scheduler until the jobs start, and the jobs are cancelled when the command ends.

--dry-run prints the job script and the command, and submits nothing.
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=1, help="SLURM jobs (nodes) to start")
    ap.add_argument("--cores", type=int, default=32, help="cores per job = single-threaded worker processes per job")
    ap.add_argument("--memory", default="64GiB", help="memory per job (regions need about 300 MB per worker)")
    ap.add_argument("--walltime", default="04:00:00")
    ap.add_argument("--job-extra", action="append", default=[], help="extra #SBATCH option, e.g. --partition=cpu")
    ap.add_argument("--interface", default=None, help="network interface the scheduler and workers use (e.g. ib0)")
    ap.add_argument("--host", default=None, help="address the scheduler listens on (default: dask-jobqueue's)")
    ap.add_argument("--dry-run", action="store_true", help="print the job script and the command only")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command; {scheduler} is replaced")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command to run after --")

    from dask_jobqueue import SLURMCluster  # requirements-scale.txt

    scheduler_options = {"dashboard_address": None} | ({"host": args.host} if args.host else {})
    with SLURMCluster(cores=args.cores, processes=args.cores, memory=args.memory, walltime=args.walltime,
                      job_extra_directives=args.job_extra, interface=args.interface,
                      job_script_prologue=[f"cd {shlex.quote(str(ROOT))}",
                                           f"export PYTHONPATH={shlex.quote(str(ROOT))}",
                                           "export OMP_NUM_THREADS=1"],
                      python=sys.executable, scheduler_options=scheduler_options) as cluster:
        command = [a.replace("{scheduler}", cluster.scheduler_address) for a in command]
        if args.dry_run:
            print(cluster.job_script())
            print(shlex.join(command))
            return 0
        cluster.scale(jobs=args.jobs)
        print(f"slurm_dask: {args.jobs} job(s) x {args.cores} workers asked for; scheduler {cluster.scheduler_address}",
              flush=True)
        return subprocess.call(command, cwd=os.getcwd())


if __name__ == "__main__":
    sys.exit(main())
