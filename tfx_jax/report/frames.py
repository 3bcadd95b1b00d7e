"""A workdir's results for Python and notebooks: results.csv and the findings as
pandas DataFrames, the report's figures as matplotlib Figures
(`tfx_jax.load(workdir)`, and what `tfx_jax.Study.run()` returns).

Reads only files (results.csv, report/); any workdir, made by the CLI, SLURM
or a notebook. No JAX.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os

from tfx_jax import files
from tfx_jax.errors import UserError
from tfx_jax.grid import results as results_lib

REPORT_DIR = 'report'
_STRINGS = tuple(f.name for f in dataclasses.fields(results_lib.Result) if f.type == 'str')
_INTS = tuple(f.name for f in dataclasses.fields(results_lib.Result) if f.type == 'int')


class Results:
  """A workdir's results: `frame` (results.csv), `findings`, `figure(name)`."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.report_dir = os.path.join(workdir, REPORT_DIR)
    self._csv = os.path.join(workdir, 'results.csv')
    if not files.exists(self._csv):
      raise UserError(f'{workdir!r} holds no results.csv: not a tfx_jax workdir, or no run '
                      f'has finished in it yet.')

  def __repr__(self) -> str:
    return f'Results({self.workdir!r}: {len(self.frame)} runs)'

  @property
  def frame(self):
    """results.csv as a DataFrame: text columns str, counts int64, scores
    float64 (a WiSE column is NaN where a run has no value)."""
    import pandas as pd  # pylint: disable=g-import-not-at-top  # Slow to import.
    frame = pd.read_csv(io.StringIO(files.read_text(self._csv)), dtype=str,
                        keep_default_na=False)
    for column in frame.columns:
      if column in _INTS:
        frame[column] = frame[column].astype('int64')
      elif column not in _STRINGS:
        frame[column] = frame[column].replace('', 'nan').map(float).astype('float64')
    return frame

  @property
  def findings(self):
    """The report's findings (report/findings.json), a row each."""
    import pandas as pd  # pylint: disable=g-import-not-at-top
    path = os.path.join(self.report_dir, 'findings.json')
    if not files.exists(path):
      raise UserError(f'{self.workdir!r} has no report yet (no {path}); write it with '
                      f'`python -m tfx_jax.report --workdir={self.workdir}` or Study.run().')
    return pd.DataFrame(json.loads(files.read_text(path))['findings'])

  def figures(self) -> list[str]:
    """The names `figure` takes: the report's PNG files without '.png'."""
    if not files.exists(self.report_dir):
      return []
    return sorted(n[:-4] for n in files.listdir(self.report_dir) if n.endswith('.png'))

  def figure(self, name: str):
    """The report's figure `name` ('figure2', 'figure3', 'over_time', ...,
    as its file is named) as a matplotlib Figure, which a notebook shows inline."""
    import matplotlib.image  # pylint: disable=g-import-not-at-top
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    name = name[:-4] if name.endswith('.png') else name
    if name not in self.figures():
      known = ', '.join(self.figures()) or 'none: write the report first'
      raise UserError(f'No figure {name!r} in {self.report_dir}; its figures: {known}.')
    png = files.read_bytes(os.path.join(self.report_dir, f'{name}.png'))
    pixels = matplotlib.image.imread(io.BytesIO(png), format='png')
    dpi = 100
    fig = plt.figure(figsize=(pixels.shape[1] / dpi, pixels.shape[0] / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(pixels, interpolation='nearest')
    ax.set_axis_off()
    plt.close(fig)  # Shown where it is returned, not again by pyplot at the cell's end.
    return fig

  def _repr_markdown_(self) -> str:  # Notebooks: the findings at a glance.
    path = os.path.join(self.report_dir, 'findings.md')
    head = f'**{self!r}**'
    return head if not files.exists(path) else f'{head}\n\n{files.read_text(path)}'


def load(workdir: str) -> Results:
  """The results of `workdir`, however it was made; a UserError of one line
  when it has no results.csv, or a malformed one."""
  loaded = Results(workdir)
  results_lib.read_csv(loaded._csv)  # pylint: disable=protected-access  # Checks every row.
  return loaded
