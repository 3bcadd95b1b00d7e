"""Which SLURM jobs a grid needs now: the unfinished runs as job arrays.

  bases            an array over the bases to train, `runs_per_task` a task;
  transplants-K    an array over the unfinished runs that copy from the bases
                   of task K of `bases`: it waits for that task alone
                   (afterok:BASES_K), so no transplant waits while holding a
                   node and none starts before its base;
  transplants      the unfinished runs whose base is already trained (or that
                   need none: random frozen);
  report           after every other job: results.csv and the report.

Pure: from the grid's run specs and what the workdir holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from tfx_jax.grid import experiments


@dataclasses.dataclass(frozen=True)
class Job:
  key: str  # 'bases', 'transplants', 'transplants-K', 'report'
  tasks: tuple[tuple[str, ...], ...]  # Each array task's run ids; () for the report.
  after: tuple[tuple[str, int | None], ...] = ()  # (job key, task or None: all of it)

  @property
  def is_array(self) -> bool:
    return bool(self.tasks)


def chunks(ids: Sequence[str], size: int) -> tuple[tuple[str, ...], ...]:
  return tuple(tuple(ids[i:i + size]) for i in range(0, len(ids), size))


def plan(specs: Sequence[experiments.RunSpec], finished: set[str], final_checkpoint: set[str],
         runs_per_task: int, report_written: bool) -> list[Job]:
  """The jobs to submit, in submission order; [] when nothing is left to do.

  `finished`: run ids with their result.json; `final_checkpoint`: bases with
  their final checkpoint. A finished base without it is trained again when an
  unfinished run copies from it (the main job does the same).
  """
  todo = [s for s in specs if s.run_id not in finished]
  needed = {s.base.run_id for s in todo if s.base}
  bases = [s.run_id for s in specs if s.treatment == 'base' and (
      s.run_id not in finished or (s.run_id in needed and s.run_id not in final_checkpoint))]
  jobs = [Job('bases', chunks(bases, runs_per_task))] if bases else []
  task_of = {run_id: k for k, task in enumerate(jobs[0].tasks if jobs else ())
             for run_id in task}
  groups: dict[int | None, list[str]] = {}
  for spec in todo:
    if spec.treatment != 'base':
      groups.setdefault(task_of.get(spec.base.run_id) if spec.base else None,
                        []).append(spec.run_id)
  for k in sorted(groups, key=lambda k: -1 if k is None else k):
    key, after = ('transplants', ()) if k is None else (f'transplants-{k}', (('bases', k),))
    jobs.append(Job(key, chunks(groups[k], runs_per_task), after))
  if jobs or not report_written:
    jobs.append(Job('report', (), tuple((job.key, None) for job in jobs)))
  return jobs
