"""A whole study in one command, and where each of its jobs is.

::

    python -m landscape_exp.study run batch_wd_small                              # stages one after another, here
    python -m landscape_exp.study run batch_wd_small --launcher slurm_cpu hydra.launcher.partition=debug
    python -m landscape_exp.study run batch_wd_small surfaces:shard.count=2 'surfaces:shard.index=0,1'
    python -m landscape_exp.study status batch_wd_small                           # or a study directory

Overrides go to every stage; ``<stage>:key=value`` only to the stages whose config name contains
``<stage>`` (``compare:`` to the comparison). A study is a list of stages in ``sweeps/studies.yaml`` \
(sweep configs of ``sweeps/``), then
``task=compare`` over the study's directory (``<output dir>/studies/<study>``, or ``--dir``). With
a Slurm launcher every stage is submitted at once, each stage's jobs after the previous stage's
have succeeded (``sbatch --dependency=afterok:<job ids>``), and the command returns: ``--wait``
waits and ends with the study's status. With ``submitit_local`` (the ``_small`` forms' default) the
stages run one after another and the command returns when the last has.

Every submission leaves ``<sweep dir>/jobs.json`` (job ids, directories, overrides; written by the
launchers in ``hydra_plugins/landscape_launchers``); ``status`` reads those and asks ``squeue`` (and
``sacct`` where the cluster keeps accounting), then the jobs' own ``exit.json``/``summary.json``
for jobs that have left the queue.

Nothing here imports Hydra: stages run as ``python run.py -m ...`` processes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from landscape_exp.cluster.status import report_status
from landscape_exp.cluster.study import run_study, studies, study_dir
from landscape_exp.errors import UserError


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m landscape_exp.study", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run or submit every stage of a study, then compare")
    r.add_argument("study", help=f"one of: {', '.join(studies())}")
    r.add_argument("--launcher", help="submitit_local (the _small forms' default), submitit_slurm or slurm_cpu")
    r.add_argument("--wait", action="store_true", help="on Slurm: wait for every job, then print the status")
    r.add_argument("--dir", help="the study's directory (default: <output dir>/studies/<study>)")
    r.add_argument("overrides", nargs="*", help="key=value overrides for every stage (e.g. hydra.launcher.partition=debug); "
                   "<stage>:key=value for the stages whose name contains <stage> (e.g. surfaces:shard.count=2)")
    s = sub.add_parser("status", help="where each job of a study is")
    s.add_argument("study", help="a study name or directory")
    a, rest = p.parse_known_args(argv)  # overrides may come before and after the options
    bad = [r for r in rest if r.startswith("-") or a.cmd != "run"]
    if bad:
        p.error(f"unrecognized arguments: {' '.join(bad)}")
    try:
        if a.cmd == "run":
            run_study(a.study, launcher=a.launcher, overrides=[*a.overrides, *rest], wait=a.wait, directory=a.dir)
        else:
            sdir = study_dir(a.study)
            report_status(sdir.name, sdir, finished=False)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
