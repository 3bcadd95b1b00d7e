"""What is transferred, written: report/analysis.json as grid/analyse.py
computed it, analysis.md (each predictor against the grid, layer by layer,
CKA) and, per split, analysis_<split>_cka.png (heatmaps) and
analysis_<split>_predictors.png (each predictor by n beside the measured
transfer). Reads only the dict; a workdir copied without checkpoints keeps
these files, and `python -m tfx_jax.report` leaves them as they are.
"""

from __future__ import annotations

import json
import os
import re
import sys

import numpy as np
from matplotlib.figure import Figure

from tfx_jax import errors, files
from tfx_jax.grid.experiments import LABELS
from tfx_jax.report import figures

JSON, MARKDOWN = 'analysis.json', 'analysis.md'
WORDS = {'agrees': 'agrees', 'disagrees': '**disagrees**', 'inverted': '**inverted**',
         'unknown': 'unknown (constant)'}


def _mean(values):
  kept = [v for v in values if v is not None]
  return float(np.mean(kept)) if kept else None


def _num(x, digits: int = 3) -> str:
  return '-' if x is None else f'{x:.{digits}f}'


def _spread(stat: dict) -> str:
  if stat['mean'] is None:
    return '-'
  return f'{stat["mean"]:+.2f}' + (f' ± {stat["sd"]:.2f}' if stat['sd'] is not None else '')


def slug(split: str) -> str:
  return re.sub(r'\W+', '', split.replace(':', '').replace('/', '_')) or 'split'


def _layer_means(split: dict, groups) -> dict[str, dict[str, float | None]]:
  seeds = list(split['seeds'].values())
  names = list(seeds[0]['layers'][groups[0]]) if seeds else []
  return {g: {k: _mean([s['layers'][g][k] for s in seeds]) for k in names} for g in groups}


def _matrix_mean(split: dict, key: str, treatment: str | None = None) -> np.ndarray | None:
  """The mean over seeds of cka_ab [L, L], or of cka_b_vs[treatment] as rows n."""
  seeds = list(split['seeds'].values())
  if treatment is None:
    return np.mean([s[key] for s in seeds], axis=0) if seeds else None
  rows = []
  for n in split['ns']:
    found = [s[key][treatment][str(n)] for s in seeds if str(n) in s[key][treatment]]
    rows.append(np.mean(found, axis=0) if found else np.full(len(seeds[0]['cka_ab']), np.nan))
  return np.asarray(rows) if any(np.isfinite(r).any() for r in rows) else None


def _agreement_table(split: dict, predictors: dict) -> list[str]:
  measured = list(split['measured'])
  if not measured:
    return ['No measured AnB or AnB+ at every n for the analysed seeds: no agreement to '
            'compute.', '']
  head = ['Predictor']
  for t in measured:
    head += [f'{LABELS[t]}: Spearman', 'Kendall', 'n chosen / best', 'verdict']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for name in predictors:
    row = [name]
    for t in measured:
      a = split['agreement'].get(name, {}).get(t)
      if a is None:
        row += ['-'] * 4
        continue
      row += [_spread(a['spearman']), _spread(a['kendall']),
              f'{a["chosen_n"]} / {a["best_n"]}', WORDS[a['verdict']]]
    lines.append('| ' + ' | '.join(row) + ' |')
  lines.append('')
  for t in measured:
    plain = []
    for name in predictors:
      a = split['agreement'].get(name, {}).get(t)
      if a is None:
        continue
      if a['verdict'] != 'agrees':
        plain.append(f'{name} {a["verdict"]} with {LABELS[t]} (Spearman '
                     f'{_spread(a["spearman"])})')
      if a['chosen_n'] != a['best_n']:
        plain.append(f'{name} would transfer n = {a["chosen_n"]} where the grid found '
                     f'n = {a["best_n"]} best for {LABELS[t]} ({a["cost_points"]:.1f} points '
                     f'of mean top-1 lost)')
    lines.append(f'Where the predictors part from the grid ({LABELS[t]}): '
                 + ('; '.join(plain) if plain else 'nowhere') + '.')
    lines.append('')
  return lines


def markdown(analysis: dict, dataset: str | None) -> str:
  groups, predictors = analysis['groups'], analysis['predictors']
  s = analysis['settings']
  lines = [f'# What is transferred: {dataset or "dataset unknown"}', '',
           f'From the checkpoints, forward passes only (tfx_jax/grid/analyse.py; '
           f'docs/report.md). Probe sets of target B drawn with each seed: '
           f'{s["train_examples"]} train and {s["eval_examples"]} eval images, '
           f'class-balanced. Spatial maps are average-pooled to at most 4 x 4 cells'
           + (f', and a layer wider than {s["max_features"]:,} units is count-sketched to '
              f'{s["max_features"]:,}. ' if s.get('max_features') else '. ') +
           f'CKA is linear and unbiased, over minibatches of {s["batch_size"]}. '
           f'Measured transfer: results.csv\'s best10_top1. Every predictor is read as '
           f'"higher: more transferable"; its verdict is from the mean Spearman rho over '
           f'seeds (agrees >= 0.5, inverted <= -0.5, else disagrees).', '']
  for name, what in predictors.items():
    lines.append(f'- `{name}`: {what}.')
  lines.append('')
  for split_name, split in analysis['splits'].items():
    seeds = sorted(split['seeds'], key=int)
    lines += [f'## Split {split_name}: seeds {", ".join(seeds) or "none"}', '']
    if not seeds:
      lines += ['Nothing analysed (see the notes).', '']
      continue
    lines += ['### Against the grid', '', *_agreement_table(split, predictors)]
    means = _layer_means(split, groups)
    measured = {t: {n: _mean(v[i] for v in split['measured'][t].values())
                    for i, n in enumerate(split['ns'])} for t in split['measured']}
    init = {t: _mean_list([s['cka_init_trained'].get(t) for s in split['seeds'].values()])
            for t in ('A', 'B')}
    head = ['n', 'group', *predictors, 'CKA init/trained A', 'B',
            *(f'measured {LABELS[t]}' for t in measured)]
    lines += ['### Layer by layer (means over seeds)', '',
              '| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for i, g in enumerate(groups):
      row = [str(i + 1), g, *(_num(means[g][p]) for p in predictors),
             *(_num(init[t][i]) if init[t] else '-' for t in ('A', 'B')),
             *(_num(measured[t].get(i + 1)) for t in measured)]
      lines.append('| ' + ' | '.join(row) + ' |')
    lines.append('')
    for t in ('selffer_ft', 'transfer_ft'):
      matrix = _matrix_mean(split, 'cka_b_vs', t)
      if matrix is None:
        continue
      having = [s for s, v in split['seeds'].items() if v['cka_b_vs'][t]]
      lines += [f'### CKA of baseB and {LABELS[t]} at n, layer by layer (seed'
                f'{"s" if len(having) > 1 else ""} {", ".join(having)}'
                f'{", means" if len(having) > 1 else ""})',
                '', '| n | ' + ' | '.join(groups) + ' |', '|' + '---|' * (len(groups) + 1)]
      for n, row in zip(split['ns'], matrix):
        lines.append(f'| {n} | ' + ' | '.join(_num(v if np.isfinite(v) else None)
                                               for v in row) + ' |')
      lines.append('')
  if analysis['notes']:
    lines += ['## Notes', '', *(f'- {n}' for n in analysis['notes']), '']
  cost = analysis['cost']
  ratio = f'{100 * cost["ratio"]:.2f}%' if cost['ratio'] is not None else '-'
  lines += [f'Cost: {cost["analysis_s"]:.1f} s on {cost["devices"]}, {ratio} of the grid\'s '
            f'training time ({cost["training_s"]:.0f} s, results.csv\'s wall_s).', '']
  return '\n'.join(lines)


def _mean_list(rows):
  rows = [r for r in rows if r]
  return list(np.mean(rows, axis=0)) if rows else None


def cka_figure(split: dict, groups, title: str) -> Figure:
  panels = [('baseA (rows) x baseB (columns)', _matrix_mean(split, 'cka_ab'), 'layer of baseA')]
  for t in ('transfer_ft', 'selffer_ft'):
    matrix = _matrix_mean(split, 'cka_b_vs', t)
    if matrix is not None:
      panels.append((f'baseB x {LABELS[t]} at n, same layer', matrix, 'n'))
  fig = Figure(figsize=(4.2 * len(panels), 4.0), layout='constrained')
  for ax, (name, matrix, ylabel) in zip(fig.subplots(1, len(panels), squeeze=False)[0],
                                        panels):
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap='viridis')
    ax.set_xticks(range(len(groups)), groups, rotation=45, ha='right', fontsize=7)
    rows = groups if ylabel != 'n' else [str(n) for n in split['ns']]
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_title(name, fontsize=9)
    ax.set_ylabel(ylabel)
    for (r, c), v in np.ndenumerate(matrix):
      if np.isfinite(v):
        ax.text(c, r, f'{v:.2f}', ha='center', va='center', fontsize=6,
                color='white' if v < 0.6 else 'black')
  fig.colorbar(image, ax=fig.axes, shrink=0.8, label='linear CKA (unbiased)')
  fig.suptitle(title)
  return fig


def predictors_figure(split: dict, groups, predictors: dict, title: str) -> Figure:
  names = [*predictors, 'measured']
  cols = 4
  fig = Figure(figsize=(3.4 * cols, 2.8 * -(-len(names) // cols)), layout='constrained')
  axes = fig.subplots(-(-len(names) // cols), cols, squeeze=False).ravel()
  ns = split['ns']
  seeds = list(split['seeds'].values())
  for ax, name in zip(axes, names):
    if name == 'measured':
      for t, by_seed in split['measured'].items():
        colour, marker, _ = figures.STYLE[t]
        values = np.asarray(list(by_seed.values()))
        ax.errorbar(ns, values.mean(0), yerr=values.std(0, ddof=1) if len(values) > 1 else 0,
                    color=colour, marker=marker, capsize=3, label=LABELS[t])
      ax.legend(fontsize=7)
      ax.set_title('measured top-1 (best10)', fontsize=9)
    else:
      values = np.asarray([[s['layers'][g][name] for g in groups] for s in seeds], float)
      if np.isnan(values).all():  # Not measured: a pretrained base's initialisation, say.
        ax.set_title(f'{name}: not measured', fontsize=9)
        continue
      sd = np.nanstd(values, 0, ddof=1) if len(values) > 1 else 0
      ax.errorbar(range(1, len(groups) + 1), np.nanmean(values, 0), yerr=sd, color='black',
                  marker='o', capsize=3)
      rho = [f'{LABELS[t]} {a["spearman"]["mean"]:+.2f}'
             for t, a in split['agreement'].get(name, {}).items()
             if a['spearman']['mean'] is not None]
      ax.set_title(name + (f'\nrho: {", ".join(rho)}' if rho else ''), fontsize=9)
    ax.set_xticks(range(1, len(groups) + 1))
    ax.grid(alpha=0.3)
    ax.set_xlabel('n')
  for ax in axes[len(names):]:
    ax.set_visible(False)
  fig.suptitle(title)
  return fig


def write(workdir: str, analysis: dict, dataset: str | None) -> str:
  """report/analysis.json, analysis.md and the figures; returns the report
  directory. A full disk, read-only filesystem or denied write is a UserError
  naming the path (each file is written whole or not at all, the JSON last)."""
  out = os.path.join(workdir, 'report')
  try:
    _write(out, analysis, dataset)
  except OSError as e:
    fault = errors.write_fault(e, workdir, '--workdir')
    if not fault:
      raise
    raise errors.UserError(f'{fault[:-1]}; then python -m tfx_jax.report --analyse '
                           f'--workdir={workdir} writes the analysis (the grid\'s results '
                           f'stand).') from e
  return out


def _write(out: str, analysis: dict, dataset: str | None) -> None:
  files.makedirs(out)
  for name, split in analysis['splits'].items():
    if not split['seeds']:
      continue
    title = f'{dataset or "dataset unknown"}, split {name}'
    for kind, fig in (('cka', cka_figure(split, analysis['groups'], title)),
                      ('predictors', predictors_figure(split, analysis['groups'],
                                                       analysis['predictors'], title))):
      files.atomic_write(os.path.join(out, f'analysis_{slug(name)}_{kind}.png'),
                         figures.to_bytes(fig, 'png'))
  files.atomic_write(os.path.join(out, MARKDOWN), markdown(analysis, dataset).encode('utf-8'))
  files.atomic_write(os.path.join(out, JSON), (json.dumps(analysis, indent=1) + '\n').encode())


def compute(workdir: str, config=None) -> dict:
  """The analysis of `workdir` from its checkpoints (grid/analyse.py, which
  imports JAX: only here); raises UserError, having written nothing, when
  there is nothing to analyse."""
  from tfx_jax.grid import analyse  # pylint: disable=import-outside-toplevel
  return analyse.analyse(workdir, config)


def run(workdir: str, config=None, computed: dict | None = None) -> str:
  """Analyses `workdir` (or takes `computed`) and writes the result; returns
  report/analysis.md's path."""
  from tfx_jax.report import writer  # pylint: disable=import-outside-toplevel
  result = computed if computed is not None else compute(workdir, config)
  return os.path.join(write(workdir, result, writer.read_dataset(workdir)[0]), MARKDOWN)


def at_end(workdir: str, config, processes: int) -> str:
  """The main job's analysis after its report, as the line it prints. A job of
  several processes is told the command (the forward passes run on one); a
  grid it cannot analyse (no transfer experiment) is told why, and succeeds;
  an analysis that fails is one line on stderr, and the job succeeds too."""
  if processes > 1:
    return (f'Analysis: run python -m tfx_jax.report --analyse --workdir={workdir} (one '
            f'process) for what is transferred.')
  try:
    return f'Analysis: {run(workdir, config)}'
  except errors.UserError as e:
    if isinstance(e.__cause__, OSError):  # A machine fault: on stderr, as failures are.
      print(f'warning: {e}', file=sys.stderr, flush=True)
      return 'No analysis: it could not be written (the line on stderr says why).'
    return f'No analysis: {e}'
  except Exception as e:  # pylint: disable=broad-except  # The grid's results stand.
    print(f'warning: {failure(e, workdir)}', file=sys.stderr, flush=True)
    return 'No analysis: it failed (the line on stderr says why); the results stand.'


def failure(e: Exception, workdir: str) -> str:
  """One line for an analysis that failed: the cause, and how to see more."""
  cause = ' '.join(str(e).split())[:300] or '(no message)'
  return (f'the analysis of {workdir} failed: {type(e).__name__}: {cause} (python -m '
          f'tfx_jax.report --analyse --verbose --workdir={workdir} shows the traceback).')
