"""docs/notebook.ipynb, run top to bottom in a real Jupyter kernel (nbclient and
ipykernel): a cell that raises fails the test, and its outputs are checked."""

import os

import pytest

from conftest import ROOT

nbclient = pytest.importorskip('nbclient')
nbformat = pytest.importorskip('nbformat')


def outputs(cell, kind):
  """The cell's text (stream and text/plain) or its 'image/png' outputs."""
  if kind == 'image/png':
    return [o['data'][kind] for o in cell.outputs if kind in o.get('data', {})]
  return ''.join(o.get('text', '') or o.get('data', {}).get('text/plain', '')
                 for o in cell.outputs)


def test_the_notebook_runs_in_a_kernel(tmp_path, monkeypatch):
  monkeypatch.setenv('TFX_NOTEBOOK_WORKDIR', str(tmp_path / 'w'))  # A fresh grid to train.
  monkeypatch.setenv('PYTHONPATH', ROOT)  # The kernel imports this checkout's tfx_jax.
  notebook = nbformat.read(os.path.join(ROOT, 'docs', 'notebook.ipynb'), as_version=4)
  nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': os.path.join(ROOT, 'docs')}}).execute()
  code = [c for c in notebook.cells if c.cell_type == 'code']
  text = {c.source.split('\n')[0]: outputs(c, 'text') for c in code}
  assert 'arrays:fashion_mnist_6k (28, 28, 1) 10 classes' in ''.join(text.values())
  run = next(outputs(c, 'text') for c in code if 'study.run()' in c.source)
  assert '6 runs in' in run and 'Report:' in run
  pivot = next(outputs(c, 'text') for c in code if 'pivot_table' in c.source)
  assert 'transfer_ft' in pivot and 'selffer' in pivot
  figures = [c for c in code if '.figure(' in c.source]
  assert len(figures) == 3 and all(outputs(c, 'image/png') for c in figures)
  tune = next(outputs(c, 'text') for c in code if "figure('tune_random')" in c.source)
  assert all(t in tune for t in ('surgical', 'linear_probe', 'lp_ft', 'l2sp', 'llrd'))
  readme = next(outputs(c, 'text') for c in code if 'paper.findings' in c.source)
  assert '-12.69' in readme and '5.74' in readme  # The README's headline differences.
  assert "'frozen'" in outputs(code[-1], 'text')
