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

from tfx_jax import errors, files
from tfx_jax.grid import results
from tfx_jax.report import comparisons, figures, over_time, tables, target_size, tune
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
  runs = target_size.at_size(every_size, size)
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
  groups = read_groups(workdir)
  curves, curve_notes = over_time.read_curves(workdir, runs)
  found = fnd.evaluate(runs, len(groups))
  when = over_time.finding_steps(runs, curves, len(groups))
  family = comparisons.primary_family(runs)
  table = over_time.gaps(runs, curves, family) if family else {}
  result = {'findings': [{**f.as_dict(), 'first_holds_at_step': when.get(f.id, (None,))[0],
                          'holds_from_step': when.get(f.id, (None, None))[1]}
                         for f in found]}
  out = os.path.join(workdir, REPORT_DIR)
  try:
    files.makedirs(out)
  except (FileExistsError, NotADirectoryError):
    raise errors.UserError(f'{out} is a file, where the report goes; move it away, '
                           f'then write the report again.') from None
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
  for name, text in texts.items():
    files.atomic_write(os.path.join(out, name), text.encode('utf-8'))
  title = (f'{dataset or "dataset unknown"}, {FAMILY_NAMES[family]}: each treatment '
           f'minus its base over training' if family else 'No transfer runs')
  for name, fig, formats in (
      ('figure2', figures.figure2(runs, dataset, groups), ('png', 'svg')),
      ('figure3', figures.figure3(runs, dataset, groups), ('png',)),
      ('over_time', figures.over_time(table, title, len(groups)), ('png',)),
      *((('target_size', target_size.figure(every_size, dataset), ('png',)),)
        if len(target_size.sizes(every_size)) > 1 else ()),
      *((f'tune_{family}', tune.figure(runs, family, dataset, groups), ('png',))
        for family in tuned),
      *((f'wise_{family}', tune.wise_figure(runs, family, dataset), ('png',))
        for family in tuned)):
    for fmt in formats:
      files.atomic_write(os.path.join(out, f'{name}.{fmt}'), figures.to_bytes(fig, fmt))
  return result
