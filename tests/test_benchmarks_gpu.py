"""benchmarks/gpu.py: its --smoke run on CPU gives every row, with numbers that
make sense; its constants are the project's and its peaks the right device's."""

import importlib.util
import json
import os
import subprocess
import sys

from tfx_jax import config
from tfx_jax.data import datasets
from tfx_jax.training import precision

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
SCRIPT = os.path.join(ROOT, 'benchmarks', 'gpu.py')


def _load_gpu_benchmark():
  spec = importlib.util.spec_from_file_location('gpu_benchmark', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_smoke_run_measures_every_precision_and_the_fed_step(tmp_path):
  out = tmp_path / 'gpu.json'
  result = subprocess.run([sys.executable, SCRIPT, '--smoke', f'--json={out}'], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads(out.read_text())
  rows = results['jax']
  assert [r['precision'] for r in rows] == list(precision.NAMES)
  for r in rows:
    assert r['images_per_s'] > 0 and r['step_ms'] > 0
    # XLA's count of the whole step (forward, backward, update): CaffeNet's
    # 4.0 GFLOP per 227 px image (docs/benchmarks.md), at batch 2.
    assert 3.5e9 < r['flops'] / 2 < 4.5e9, r
    assert r['peak_tflops'] is None and r['mfu'] is None  # A CPU has no entry.
    assert f'| {r["precision"]} |' in result.stdout
  assert rows[0]['vs_float32'] == 1.0
  (fed,) = results['pipeline']
  assert fed['workers'] == 0 and fed['precision'] == 'bfloat16'
  assert fed['fed_steps_per_s'] > 0 and fed['alone_steps_per_s'] > 0
  assert fed['pipeline_steps_per_s'] > 0
  if importlib.util.find_spec('torch') is None:
    assert 'torch is not installed' in results['torch_skipped']
    assert '| skipped: torch is not installed' in result.stdout
  else:
    assert [(r['mode'], r['precision']) for r in results['torch']] == [
        ('eager', p) for p in precision.NAMES]
    assert all(r['images_per_s'] > 0 for r in results['torch'])


def test_constants_are_the_projects_and_peaks_are_found_by_device_kind():
  gpu = _load_gpu_benchmark()
  assert gpu.PRECISIONS == precision.NAMES
  spec = datasets.dataset_spec('imagenet2012')
  assert (gpu.MEAN, gpu.STD) == (spec.mean, spec.std)
  assert (gpu.IMAGE_SIZE,) * 2 == spec.image_shape[:2]
  assert gpu.DEVICE_PREFETCH == config.base_config().device_prefetch
  assert gpu.peak_tflops('NVIDIA H200', 'bfloat16') == 989.5
  assert gpu.peak_tflops('NVIDIA H100 80GB HBM3', 'tf32') == 494.5
  assert gpu.peak_tflops('NVIDIA H100 PCIe', 'bfloat16') == 756.5
  assert gpu.peak_tflops('NVIDIA A100-SXM4-80GB', 'float32') == 19.5
  assert gpu.peak_tflops('NVIDIA L4', 'bfloat16') == 121.0
  assert gpu.peak_tflops('NVIDIA L40S', 'bfloat16') == 366.5
  for unknown in ('cpu', 'NVIDIA A10G', 'TPU v4'):
    assert gpu.peak_tflops(unknown, 'float32') is None
