"""The results schema: one `Result` per finished run, and results.csv.

A run's result.json and its row of WORKDIR/results.csv hold the same fields,
in `COLUMNS` order. The runner writes them, the report and the findings read
them back through `read_csv`, which checks every row.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Iterable, Sequence

import numpy as np

from tfx_jax import files
from tfx_jax.errors import UserError
from tfx_jax.grid import experiments

METRIC = 'best10_top1'  # The paper's metric (PAPER.md, Metric).
GROUPS_FILE = 'groups.json'  # In the workdir: the model's transferable groups.
# In the workdir: the bases not trained there, {base run id: {path, sha256}}.
PRETRAINED_FILE = 'pretrained.json'


def best10(values: Iterable[float]) -> float:
  """The paper's metric: mean of the 10 highest validation top-1 values."""
  return float(np.mean(sorted(values, reverse=True)[:10]))


@dataclasses.dataclass(frozen=True)
class Result:
  """One finished run: its identity (from its RunSpec) and its scores."""
  run_id: str
  split: str
  treatment: str
  source: str  # 'A' / 'B': the base the layers come from; '' when none.
  target: str  # 'A' / 'B' / 'all': the classes trained and evaluated on.
  n: int
  seed: int
  top1: float  # At the last step.
  top5: float
  best10_top1: float  # METRIC over the run's evaluations.
  steps: int
  wall_s: float  # Train and eval time, over every resume (compile and I/O excluded).
  # Optional (a column only in files that have a size): the target-set size.
  examples_per_class: int = 0
  # Optional: the checkpoint a pretrained base came from (not trained: steps 0).
  pretrained: str = ''
  # The steps' arithmetic (config.precision); files written before it: float32.
  precision: str = 'float32'
  # A frozen group's BatchNorm in training (config.frozen_norm); before it: batch.
  frozen_norm: str = 'batch'
  # Optional: the shift of the shift experiment's target ('gaussian_noise:5';
  # docs/shift/); '' for its clean source base and other experiments.
  shift: str = ''
  # WiSE-FT: (alpha, top-1 at the last step) of the run's network with its
  # copied groups interpolated toward the base's; in results.csv a column
  # wise_top1_<alpha> per alpha (docs/tune.md). Empty for other runs.
  wise: tuple[tuple[float, float], ...] = ()

  @classmethod
  def of_run(cls, spec: experiments.RunSpec, history: Sequence[dict], steps: int,
             wall_s: float, pretrained: str = '', precision: str = 'float32',
             wise: Sequence[tuple[float, float]] = (), frozen_norm: str = 'batch') -> Result:
    """The result of `spec` from its evaluations ({'top1', 'top5', ...} each)."""
    last = history[-1]
    return cls(spec.run_id, spec.split, spec.treatment, spec.source, spec.target,
               spec.n, spec.seed, last['top1'], last['top5'],
               best10([h['top1'] for h in history]), steps, round(wall_s, 3),
               spec.examples_per_class, pretrained, precision, frozen_norm, spec.shift,
               tuple((float(a), float(t)) for a, t in wise))

  @property
  def accuracy(self) -> float:
    return self.best10_top1

  @property
  def key(self) -> tuple[str, str, str, str, int, int, int]:
    """What identifies a run across files: split, treatment, halves, n, seed, size."""
    return (self.split, self.treatment, self.source, self.target, self.n, self.seed,
            self.examples_per_class)

  @property
  def sort_key(self) -> tuple:
    return (*self.key, self.accuracy, self.run_id)

  @property
  def family(self) -> str | None:
    """'random', 'm_n', 'custom', 'from' (across datasets) or 'all'; runs on every
    class (target 'all') are 'all' whatever split the runner named, so random
    frozen filters meet their base."""
    return 'all' if self.target == 'all' else split_family(self.split)

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


FIELDS = tuple(f.name for f in dataclasses.fields(Result) if f.name != 'wise')
WISE_PREFIX = 'wise_top1_'  # A column per WiSE alpha, e.g. wise_top1_0.5.
# Written only when some run differs from this.
OPTIONAL = {'examples_per_class': 0, 'pretrained': '', 'shift': ''}
# Written in every file, read as this from files written before it.
ADDED_LATER = {'precision': 'float32', 'frozen_norm': 'batch'}
# Every file has these.
COLUMNS = tuple(f for f in FIELDS if f not in OPTIONAL and f not in ADDED_LATER)
_INTS = ('n', 'seed', 'steps', 'examples_per_class')
_FLOATS = ('top1', 'top5', METRIC, 'wall_s')


def read_pretrained(workdir: str) -> dict:
  """WORKDIR/pretrained.json (see grid/pretrained.py); {} when it has none."""
  path = os.path.join(workdir, PRETRAINED_FILE)
  return json.loads(files.read_text(path)) if files.exists(path) else {}


def split_family(split: str) -> str | None:
  """'random:<seed>' -> 'random', 'custom:<A>/<B>' -> 'custom'; 'm_n' and 'all'
  are their own; else None."""
  if split.startswith('custom:'):
    return 'custom'
  if split.startswith('random:'):
    return 'random'
  if split.startswith(experiments.FROM) and len(split) > len(experiments.FROM):
    return 'from'
  if split.startswith(experiments.SHIFT) and len(split) > len(experiments.SHIFT):
    return 'shift'
  return split if split in ('m_n', 'all') else None


def to_csv(results: Iterable[Result]) -> str:
  """results.csv's text: the header, then a row per result (floats by repr);
  an OPTIONAL column only when some result has another value than its default."""
  results = list(results)
  columns = [f for f in FIELDS if f not in OPTIONAL
             or any(getattr(r, f) != OPTIONAL[f] for r in results)]
  alphas = sorted({a for r in results for a, _ in r.wise})
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(columns + [f'{WISE_PREFIX}{a:g}' for a in alphas])
  for result in results:
    row, wise = result.as_dict(), dict(result.wise)
    writer.writerow([repr(row[c]) if isinstance(row[c], float) else row[c] for c in columns]
                    + [repr(wise[a]) if a in wise else '' for a in alphas])
  return out.getvalue()


def from_dict(row: dict, where: str) -> Result:
  """A checked Result from a CSV row or result.json; UserError naming `where`."""
  if None in row or None in row.values():
    raise UserError(f'{where}: expected {len(row)} fields, as in the header.')
  row = {**OPTIONAL, **ADDED_LATER, **row}
  try:
    ints = {c: int(row[c]) for c in _INTS}
    floats = {c: float(row[c]) for c in _FLOATS}
  except ValueError as e:
    raise UserError(f'{where}: {e} (n, seed, steps, examples_per_class must be '
                    f'integers; top1, top5, best10_top1, wall_s numbers).') from None
  try:
    wise = row.get('wise') or [(float(k[len(WISE_PREFIX):]), float(v))
                               for k, v in row.items()
                               if k.startswith(WISE_PREFIX) and v not in ('', None)]
    wise = tuple((float(a), float(t)) for a, t in wise)
  except (TypeError, ValueError):
    raise UserError(f'{where}: the WiSE top-1 values must be numbers.') from None
  result = Result(**{c: str(row[c]) for c in FIELDS if c not in ints and c not in floats},
                  **ints, **floats, wise=wise)
  problem = _problem(result)
  if problem:
    raise UserError(f'{where}: {problem}.')
  return result


def _problem(r: Result) -> str | None:
  """What makes `r` impossible, in words; None if nothing."""
  treatment, source, target, n = r.treatment, r.source, r.target, r.n
  if treatment not in experiments.TREATMENTS:
    return (f'unknown treatment {treatment!r}; known: '
            f'{", ".join(experiments.TREATMENTS)}')
  if n < 0 or (n == 0) != (treatment in ('base', 'scratch')):
    return (f'n = {n}, but base runs have n = 0 (scratch runs too) and the others '
            f'n >= 1 (1..L; L + 1: surgical\'s head)')
  if treatment == 'base' and (source != target or not target):
    return f'a base run needs source == target, got {source!r}, {target!r}'
  if treatment in ('selffer', 'selffer_ft') and (source != target
                                                 or target not in ('A', 'B')):
    return f'a selffer needs source == target in A, B, got {source!r}, {target!r}'
  if (treatment in ('transfer', 'transfer_ft', 'no_adapt', 'full_ft',
                    *experiments.TUNE_TREATMENTS) and {source, target} != {'A', 'B'}):
    return f'a transfer needs source != target in A, B, got {source!r}, {target!r}'
  if treatment in ('random_frozen', 'scratch') and not target:
    return f'a {treatment} run needs a target'
  bad = [c for c in ('top1', 'top5', METRIC) if not 0 <= getattr(r, c) <= 1]
  bad += [f'{WISE_PREFIX}{a:g}' for a, t in r.wise if not 0 <= a <= 1 or not 0 <= t <= 1]
  if bad:
    return f'{", ".join(bad)} outside [0, 1]'
  if r.steps < 0:
    return f'steps = {r.steps} is negative'
  if r.examples_per_class < 0:
    return f'examples_per_class = {r.examples_per_class} is negative'
  return None


def read_csv(path: str) -> tuple[list[Result], list[str]]:
  """The runs of results.csv (last row wins per run key), and notes about it.

  Rows of splits the findings do not know are dropped with a note. Raises
  UserError, naming the file and line, if it is missing or malformed.
  """
  if not files.exists(path):
    raise UserError(f'No results file at {path}: run the grid first (it writes '
                    f'results.csv into its workdir), or pass that --workdir.')
  try:
    text = files.read_text(path)
    text = text[1:] if text.startswith('\ufeff') else text  # A spreadsheet's BOM.
    with io.StringIO(text, newline='') as f:
      reader = csv.DictReader(f)
      if reader.fieldnames is None:
        raise UserError(f'{path} is empty; expected the header {",".join(COLUMNS)}.')
      missing = [c for c in COLUMNS if c not in reader.fieldnames]
      if missing:
        raise UserError(f'{path} lacks the column(s) {", ".join(missing)}; '
                        f'expected the header {",".join(COLUMNS)}.')
      rows = [from_dict(row, f'{path}, line {reader.line_num}') for row in reader]
  except UnicodeDecodeError as e:
    raise UserError(f'{path} is not UTF-8 text ({e.reason}).') from None
  except csv.Error as e:
    raise UserError(f'{path} is not valid CSV: {e}.') from None
  latest, notes = {}, []
  for run in rows:
    latest[run.key] = run
  if len(latest) < len(rows):
    notes.append(f'{len(rows) - len(latest)} repeated row(s) of the same run '
                 f'(split, treatment, source, target, n, seed, size): the last one '
                 f'in the file was used.')
  unknown = sorted({r.split for r in latest.values() if r.family is None})
  if unknown:
    notes.append(f'Rows of unknown split(s) {", ".join(unknown)} were ignored '
                 f'(known: random:<seed>, m_n, custom:<A>/<B>, from:<dataset>, all, '
                 f'shift:<shift>).')
  runs = sorted((r for r in latest.values() if r.family is not None),
                key=lambda r: r.sort_key)
  return runs, notes
