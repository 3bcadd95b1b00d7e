"""The report: Figures 2 and 3, Table 1, the six findings and per-layer
generality, written to W/report/.

Reads only W/results.csv (and W/config.json's "dataset", for titles and the
paper overlay; W/groups.json; the runs' metrics.jsonl for the findings over
training time), retrains nothing. The same results give byte-identical
tables, findings and figures. The CLI: `python -m tfx_jax.report --workdir=W`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from etils import epath

from tfx_jax import errors, files
from tfx_jax.grid import results
from tfx_jax.report import comparisons, figures, over_time, shift, tables, target_size, tune
from tfx_jax.report import findings as fnd
from tfx_jax.report.comparisons import FAMILY_NAMES

REPORT_DIR = 'report'


# Reading -------------------------------------------------------------------

def read_dataset(workdir: str) -> tuple[str | None, list[str]]:
  """config.json's "dataset" ('SOURCE to DATASET' across datasets; None
  without one), and a note when unreadable."""
  path = os.path.join(workdir, 'config.json')
  if not files.exists(path):
    return None, ['No config.json: dataset unknown, no paper overlay.']
  try:
    config = json.loads(files.read_text(path))
    dataset, source = config.get('dataset'), config.get('source_dataset')
  except (OSError, ValueError, AttributeError) as e:
    return None, [f'config.json unreadable ({type(e).__name__}): dataset '
                  f'unknown, no paper overlay.']
  if isinstance(dataset, dict):
    dataset = dataset.get('name')
  if dataset and source:  # Across datasets: no paper overlay either.
    dataset = f'{source} to {dataset}'
  return (str(dataset) if dataset else None), []


def read_groups(workdir: str) -> tuple[str, ...]:
  """The model's transferable groups (W/groups.json, written by the runner);
  conv1..fc7 for workdirs without one (the presets')."""
  path = os.path.join(workdir, results.GROUPS_FILE)
  if files.exists(path):
    try:
      groups = json.loads(files.read_text(path))['groups']
      if groups and all(isinstance(g, str) for g in groups):
        return tuple(groups)
    except (OSError, ValueError, KeyError, TypeError):
      pass
    raise errors.UserError(f'{path} is unreadable; delete it and rerun the main '
                           f'job, which writes it again.')
  return figures.PRESET_GROUPS


def write_report(workdir: str) -> dict:
  """Writes W/report/ from W/results.csv; returns the findings dict.

  Raises UserError if results.csv is missing or malformed.
  """
  files.check_path(workdir, '--workdir')
  every_size, notes = results.read_csv(os.path.join(workdir, 'results.csv'))
  size = target_size.main_size(every_size)
  # The paper's findings, figures and the tuning report: every run but the
  # shift experiment's, which has its own (shift.py) over every size.
  runs = [r for r in target_size.at_size(every_size, size) if r.family != 'shift']
  if len(target_size.sizes(every_size)) > 1:
    notes.append(f'Several target-set sizes: these findings and figures are those of '
                 f'{target_size.label(size)} images per class; target_size.md has them all.')
  dataset, config_notes = read_dataset(workdir)
  by_path = {}
  for run_id, base in sorted(results.read_pretrained(workdir).items()):
    by_path.setdefault((base['path'], base['sha256']), []).append(run_id)
  for (path, sha), run_ids in by_path.items():
    notes.append(f'Not trained here: base{"s" if len(run_ids) > 1 else ""} '
                 f'{", ".join(run_ids)} came from the checkpoint {path} (sha256 '
                 f'{sha[:12]}).')
  precisions = sorted({r.precision for r in every_size})
  if precisions != ['float32']:
    notes.append(f'Computed in {" and ".join(precisions)} (config.precision), not the '
                 f'paper\'s float32.')
  if any(r.frozen_norm == 'running' for r in every_size):
    notes.append('Frozen groups\' BatchNorm normalised with its running averages in training '
                 '(config.frozen_norm=running, Keras\' inference mode), not the batch\'s '
                 'statistics.')
  groups = read_groups(workdir)
  curves, curve_notes = over_time.read_curves(workdir, runs)
  found = fnd.evaluate(runs, len(groups))
  when = over_time.finding_steps(runs, curves, len(groups))
  family = comparisons.primary_family(runs)
  table = over_time.gaps(runs, curves, family) if family else {}
  result = {'findings': [{**f.as_dict(), 'first_holds_at_step': when.get(f.id, (None,))[0],
                          'holds_from_step': when.get(f.id, (None, None))[1]}
                         for f in found]}
  shifted = bool(shift.sizes(every_size))
  if shifted:  # The shift experiment's criterion, per target size.
    result['shift'] = {str(k): v for k, v in shift.overall_by_size(every_size, len(groups)).items()}
  out = os.path.join(workdir, REPORT_DIR)
  if files.exists(out) and not epath.Path(out).is_dir():
    raise errors.UserError(f'{out} is a file, where the report goes; move it away, '
                           f'then write the report again.')
  texts = {
      'findings.json': json.dumps(result, indent=2) + '\n',
      'findings.md': tables.findings_markdown(found, runs, dataset,
                                       [*config_notes, *notes], when),
      'table1.md': tables.table1(runs, dataset, len(groups)),
      'generality.md': tables.generality(runs, dataset),
      'over_time.md': over_time.markdown(when, table, family, curve_notes),
  }
  if len(target_size.sizes(every_size)) > 1:
    texts['target_size.md'] = target_size.markdown(every_size)
  tuned = tune.families(runs)
  if tuned:
    texts['tune.md'] = tune.markdown(runs, dataset, groups)
  if shifted:  # The shift experiment's verdicts lead findings.md.
    texts['shift.md'] = shift.markdown(every_size, groups)
    paper = texts['findings.md'] if any(r.family != 'shift' for r in every_size) else (
        '# The paper\'s six findings\n\nNot testable here: this workdir holds only the '
        'shift experiment\'s runs; the paper\'s grid is configs/default.py\'s '
        '(docs/paper.md).\n')
    texts['findings.md'] = shift.findings_section(every_size, len(groups)) + '\n' + paper
  title = (f'{dataset or "dataset unknown"}, {FAMILY_NAMES[family]}: each treatment '
           f'minus its base over training' if family else 'No transfer runs')
  figs = (
      ('figure2', figures.figure2(runs, dataset, groups), ('png', 'svg')),
      ('figure3', figures.figure3(runs, dataset, groups), ('png',)),
      ('over_time', figures.over_time(table, title, len(groups)), ('png',)),
      *((('target_size', target_size.figure(every_size, dataset), ('png',)),)
        if len(target_size.sizes(every_size)) > 1 else ()),
      *((f'tune_{family}', tune.figure(runs, family, dataset, groups), ('png',))
        for family in tuned),
      *((f'wise_{family}', tune.wise_figure(runs, family, dataset), ('png',))
        for family in tuned),
      *((('shift', shift.figure(every_size, dataset, len(groups)), ('png',)),)
        if shifted else ()))
  for name, fig, formats in figs:
    for fmt in formats:
      texts[f'{name}.{fmt}'] = figures.to_bytes(fig, fmt)
  _write_all(out, texts, workdir)
  return result


def _write_all(out: str, contents: dict, workdir: str) -> None:
  """Writes {name: text or bytes} as the directory `out`, whole or not at all:
  locally into a temporary directory next to it (with the files of the old
  report that this one does not write, the analysis's), renamed into place,
  so a full disk leaves the previous report as it was; on gs://, object by
  object (each is written whole). A full disk, read-only filesystem or
  denied write is one line naming `out`."""
  if not files.is_local(out):
    files.makedirs(out)
    for name, data in contents.items():
      files.atomic_write(os.path.join(out, name), data)
    return
  tmp = None
  try:
    tmp = tempfile.mkdtemp(dir=workdir, prefix=f'.{REPORT_DIR}-', suffix='.tmp')
    for name, data in contents.items():
      with open(os.path.join(tmp, name), 'wb') as f:
        f.write(data.encode('utf-8') if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    kept = files.listdir(out)
    for name in kept:
      if name in contents:
        continue
      source, copy = os.path.join(out, name), os.path.join(tmp, name)
      if os.path.isdir(source):
        shutil.copytree(source, copy)
        continue
      try:  # A hard link: no space, and the old report keeps its file.
        os.link(source, copy)
      except OSError:
        shutil.copy2(source, copy)
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700; reports are for everyone to read.
    old = f'{tmp[:-len(".tmp")]}.old' if kept else None
    if old:
      os.rename(out, old)
    try:
      os.rename(tmp, out)
    except OSError:
      if old:
        os.rename(old, out)
      raise
    tmp = None
    if old:
      shutil.rmtree(old, ignore_errors=True)
  except OSError as e:
    fault = errors.write_fault(e, workdir, '--workdir')
    if not fault:
      raise
    fault = fault.replace(f'Cannot write {os.fsdecode(e.filename or workdir)}:',
                          f'Cannot write the report in {out}:', 1)
    previous = '; the previous report is left as it was' if os.path.isdir(out) else ''
    raise errors.UserError(f'{fault[:-1]}{previous}.') from e
  finally:
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)
