"""The project's submitit launchers: hydra-submitit-launcher 1.2.0's, plus what a study needs.

``conf/hydra/launcher/submitit_slurm.yaml``, ``slurm_cpu.yaml`` and ``submitit_local.yaml`` point
their ``_target_`` here. On top of the plugin's ``launch`` (read in
``hydra_plugins/hydra_submitit_launcher/submitit_launcher.py``: ``executor.map_array`` then
``[j.results()[0] for j in jobs]``) they

* name the Slurm jobs after the study and stage (``batch_wd_small-train``) or the task, where
  ``hydra.launcher.name`` is left at Hydra's job name (``run``, the same for every job);
* record every submission in ``<sweep dir>/jobs.json`` (job ids, job directories, overrides),
  which ``python -m landscape_exp.study status`` reads;
* submit and return at once when ``LANDSCAPE_DETACH=1`` (the study command submits its stages
  so, chained with ``--dependency=afterok``);
* otherwise wait for every job, then print one closing line with the result paths, and report
  all failed jobs, not only the first;
* turn an sbatch refusal (a GPU asked for on a CPU partition) into one line with the fix;
* where the cluster keeps no accounting (``sacct`` fails), read job states from ``squeue``
  instead: submitit's ``SlurmInfoWatcher.update`` (``submitit/core/core.py``) warns "Bypassing
  sacct error" on every poll and, with no state, takes a job that left the queue without a result
  for one still running (``is_done`` counts UNKNOWN as incomplete), so the command waited for ever.
  :class:`QueueWatcher` replaces that one method, the narrowest point: the rest of submitit
  (``Job.done`` checks the result file first, then the watcher) is unchanged.

This module lives in the Hydra layer (it subclasses a Hydra plugin); the library it calls
(``landscape_exp.cluster``, ``landscape_exp.job.console``) knows nothing of Hydra.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time as _time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf, open_dict

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

DETACH_ENV = "LANDSCAPE_DETACH"  # 1: submit and return without waiting
RECORD_ENV = "LANDSCAPE_LAUNCH_RECORD"  # also write the submission record to this file (the study command reads it)
WATCH_DELAY_S = 60  # at most this long between two looks at the queue while waiting


def _queue_watcher_class() -> type:
    from submitit.slurm.slurm import SlurmInfoWatcher

    from landscape_exp.cluster.slurm import squeue_states

    class QueueWatcher(SlurmInfoWatcher):
        """submitit's Slurm watcher, with ``squeue`` where ``sacct`` fails (no accounting): said
        once, and a job that has left the queue without a result counts as ended (state
        ``NOT_IN_QUEUE``), so submitit reports it instead of waiting for it for ever."""

        accounting: bool | None = None  # None: not tried yet

        def update(self) -> None:
            command = self._make_command()
            if command is None:
                return
            self._num_calls += 1
            info = None
            if self.accounting is not False:
                try:
                    self._output = subprocess.check_output(command, shell=False, stderr=subprocess.PIPE)
                    info = self.read_info(self._output)
                    self.accounting = True
                except (OSError, subprocess.CalledProcessError) as e:
                    if self.accounting is None:
                        why = (getattr(e, "stderr", b"") or b"").decode(errors="replace").strip() or str(e)
                        print(f"note: this cluster keeps no job accounting (`sacct` failed: {' '.join(why.split())[:120]}); "
                              "job states come from `squeue` instead, and a job that leaves the queue without a result "
                              "is reported as failed", file=sys.stderr, flush=True)
                    self.accounting = False
            if info is None:
                ids = sorted(self._registered - self._finished)
                states = squeue_states(ids)
                if states is None:  # squeue failed too: try again at the next poll
                    return
                info = {j: {"JobID": j, "State": states.get(j, "NOT_IN_QUEUE")} for j in ids}
            self._info_dict.update(info)
            self._last_status_check = _time.time()
            for job_id in self._registered - self._finished:
                if self.is_done(job_id, mode="cache"):
                    self._finished.add(job_id)

    return QueueWatcher


class _Launcher(BaseSubmititLauncher):
    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        # In the job: its config is composed again here, and Hydra would warn again (into the job's
        # .err) that the project's launcher configs shadow the plugin's schemas, which they do on purpose.
        warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema with the same name")
        return super().__call__(*args, **kwargs)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit
        from submitit.core.utils import FailedJobError

        from landscape_exp.cluster.launches import closing_line, job_name, write_launch_record

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        if self._EXECUTOR == "slurm":
            from submitit.slurm.slurm import SlurmJob

            if type(SlurmJob.watcher).__name__ != "QueueWatcher":
                SlurmJob.watcher = _queue_watcher_class()(delay_s=WATCH_DELAY_S)
        if self.params.get("name") in (None, "", str(self.config.hydra.job.name)):
            tasks = [o.split("=", 1)[1] for ov in job_overrides for o in ov if o.startswith("task=")]
            self.params["name"] = job_name(sweep_dir, tasks or [str(self.config.task.name)])
        dirs = self._job_dirs(job_overrides, initial_job_idx)

        init_params = {"folder": self.params["submitit_folder"]}
        if "max_num_timeout" in self.params:
            init_params[f"{self._EXECUTOR}_max_num_timeout"] = self.params["max_num_timeout"]
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in self.params.items()
                                      if k not in ("submitit_folder", "max_num_timeout")})
        sweep_dir.mkdir(parents=True, exist_ok=True)
        params = [(list(o), "hydra.sweep.dir", initial_job_idx + i, f"job_id_for_{initial_job_idx + i}",
                   _singleton_state()) for i, o in enumerate(job_overrides)]
        try:
            jobs = executor.map_array(self, *zip(*params))
        except FailedJobError as e:
            first = next((line for line in str(e).splitlines() if line.strip()), str(e))
            hint = ("; on a partition without GPUs use hydra/launcher=slurm_cpu (or hydra.launcher.gpus_per_node=null)"
                    if "gres" in str(e).lower() or "gpu" in str(e).lower() else "")
            print(f"error: sbatch refused the jobs: {first.strip()}{hint}", file=sys.stderr, flush=True)
            sys.exit(2)
        record = write_launch_record(sweep_dir, self._EXECUTOR, str(self.params["name"]), [
            {"num": initial_job_idx + i, "job_id": str(j.job_id), "dir": dirs[i], "overrides": list(job_overrides[i])}
            for i, j in enumerate(jobs)], extra_file=os.environ.get(RECORD_ENV))
        ids = sorted({str(j.job_id).split("_")[0] for j in jobs})
        what = f"submitted {len(jobs)} job(s) as {self._EXECUTOR} job {', '.join(ids)} ({self.params['name']}) -> {sweep_dir}"
        if os.environ.get(DETACH_ENV) == "1":
            print(f"{what}; record: {record}", flush=True)
            return [JobReturn(overrides=list(o), working_dir=dirs[i], status=JobStatus.COMPLETED, _return_value=None)
                    for i, o in enumerate(job_overrides)]
        print(f"{what}; waiting for them (Ctrl-C stops the waiting, not the jobs)", flush=True)
        returns, failed = [], []
        for i, j in enumerate(jobs):
            try:
                returns.append(j.results()[0])
            except Exception as e:  # every job is waited for; failures are reported together below
                failed.append((i, e))
                returns.append(JobReturn(overrides=list(job_overrides[i]), working_dir=dirs[i], status=JobStatus.FAILED,
                                         _return_value=e))
        print(closing_line(sweep_dir, [d for d in dirs if d], [dirs[i] or str(jobs[i].job_id) for i, _ in failed]),
              flush=True)
        if failed:
            raise failed[0][1]
        return returns

    def _job_dirs(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[str | None]:
        """Each job's output directory, resolved as Hydra's run_job will (sweep dir / subdir);
        None where that cannot be told here."""
        assert self.hydra_context is not None and self.config is not None
        saved = HydraConfig.instance().cfg
        out: list[str | None] = []
        try:
            for i, o in enumerate(job_overrides):
                try:
                    cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(o))
                    with open_dict(cfg.hydra.job):
                        cfg.hydra.job.num = initial_job_idx + i
                    HydraConfig.instance().set_config(cfg)
                    out.append(str(Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)))
                except Exception:
                    out.append(None)
        finally:
            HydraConfig.instance().cfg = saved
        return out


def _singleton_state() -> Any:
    from hydra.core.singleton import Singleton

    return Singleton.get_state()


class LocalLauncher(_Launcher):
    _EXECUTOR = "local"


class SlurmLauncher(_Launcher):
    _EXECUTOR = "slurm"
