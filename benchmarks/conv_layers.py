"""The `small` preset's convolutions one by one: XLA CPU (as tfx_jax compiles them)
against PyTorch.

  python benchmarks/conv_layers.py [--json=PATH]

Per layer shape at batch 256: the forward convolution, its input gradient and
its kernel gradient, each a separately compiled JAX function with tfx_jax's XLA
options; PyTorch's forward (no grad) and forward + both gradients
(channels-last). Medians of --steps calls after warm-up, each framework in its
own process with the same thread count and tuned malloc. Shows where the full
train step's remaining gap to PyTorch lies (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from tfx_jax.training import malloc

# (H = W, input channels, output channels) of conv1..conv5 at 28x28x1.
LAYERS = ((28, 1, 32), (14, 32, 64), (7, 64, 96), (7, 96, 96), (7, 96, 64))
BATCH = 256


def _median_ms(fn, steps: int, warmup: int = 3) -> float:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append((time.perf_counter() - start) * 1e3)
  return sorted(times)[len(times) // 2]


def _jax_worker(repeats: int) -> list[dict]:
  import jax
  import numpy as np

  from tfx_jax.training import steps

  options = steps.compiler_options(steps.make_mesh(jax.devices()[:1]))
  pad = ((1, 1), (1, 1))
  conv = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  fns = {
      'fwd': lambda x, w, dy: conv(x, w),
      'dx': lambda x, w, dy: jax.vjp(lambda x: conv(x, w), x)[1](dy)[0],
      'dw': lambda x, w, dy: jax.vjp(lambda w: conv(x, w), w)[1](dy)[0],
  }
  rows = []
  rng = np.random.default_rng(0)
  for hw, c, o in LAYERS:
    x = rng.normal(size=(BATCH, hw, hw, c)).astype(np.float32)
    w = rng.normal(size=(3, 3, c, o)).astype(np.float32)
    dy = rng.normal(size=(BATCH, hw, hw, o)).astype(np.float32)
    args = [jax.device_put(a) for a in (x, w, dy)]
    row = {'layer': f'{hw}x{hw} {c}->{o}'}
    for name, fn in fns.items():
      compiled = jax.jit(fn, compiler_options=options)
      row[f'jax_{name}_ms'] = round(_median_ms(
          lambda: jax.block_until_ready(compiled(*args)), repeats), 2)
    rows.append(row)
  return rows


def _torch_worker(steps: int) -> list[dict]:
  import torch

  torch.set_num_threads(os.cpu_count())
  rows = []
  for hw, c, o in LAYERS:
    conv = torch.nn.Conv2d(c, o, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(BATCH, c, hw, hw).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    dy = torch.randn(BATCH, o, hw, hw).contiguous(memory_format=torch.channels_last)

    def forward():
      with torch.no_grad():
        conv(x)

    def forward_backward():
      torch.autograd.grad(conv(x), [x, conv.weight], dy)

    rows.append({'torch_fwd_ms': round(_median_ms(forward, steps), 2),
                 'torch_fwd_dx_dw_ms': round(_median_ms(forward_backward, steps), 2)})
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--json', help='Also write the results here.')
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--worker', choices=('jax', 'torch'), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    malloc.tune()
    worker = _jax_worker if args.worker == 'jax' else _torch_worker
    print(json.dumps(worker(args.steps)))
    return

  def run(worker):
    out = subprocess.run([sys.executable, __file__, f'--worker={worker}',
                          f'--steps={args.steps}'], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])

  rows = [{**j, **t} for j, t in zip(run('jax'), run('torch'))]
  print(f'batch {BATCH}, 3x3 convolutions, fp32, {os.cpu_count()} threads')
  print('| layer | JAX fwd | JAX dx | JAX dw | JAX fwd+dx+dw | PyTorch fwd | '
        'PyTorch fwd+dx+dw | JAX / PyTorch (fwd+dx+dw) |')
  print('|---|---|---|---|---|---|---|---|')
  for r in rows:
    total = r['jax_fwd_ms'] + r['jax_dx_ms'] + r['jax_dw_ms']
    print(f'| {r["layer"]} | {r["jax_fwd_ms"]:.2f} | {r["jax_dx_ms"]:.2f} | '
          f'{r["jax_dw_ms"]:.2f} | {total:.2f} | {r["torch_fwd_ms"]:.2f} | '
          f'{r["torch_fwd_dx_dw_ms"]:.2f} | {total / r["torch_fwd_dx_dw_ms"]:.2f} |')
  if args.json:
    tmp = f'{args.json}.tmp'
    with open(tmp, 'w') as f:
      json.dump({'rows': rows}, f, indent=1)
    os.replace(tmp, args.json)


if __name__ == '__main__':
  main()
