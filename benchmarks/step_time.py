"""Train-step time of the `small` preset: tfx_jax against the same net in PyTorch.

  python benchmarks/step_time.py [--json=PATH] [--malloc=tuned|default]

For full training and with the first 1, 3, 5, 7 layers frozen, each framework
runs in its own process (same thread count, same allocator setting), alternating
for --rounds rounds; a row is the median of all timed steps after warm-up.
JAX runs `steps.make_train_step` exactly as the runner does (AOT-compiled, state
donated, tfx_jax's XLA options) and reports compile seconds; a second JAX
process, the baseline, runs the same step with XLA's default options. PyTorch
runs channels-first and channels-last and keeps the faster. PyTorch is the
`bench` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from tfx_jax.training import malloc

import machine

WORKERS = ('jax', 'jax_xla_default', 'torch')
CONFIGS = {'full': 0, 'frozen1': 1, 'frozen3': 3, 'frozen5': 5, 'frozen7': 7}


def _image_shape(text: str) -> tuple[int, int, int]:
  return tuple(int(s) for s in text.split(','))


def _jax_worker(args) -> dict:
  import jax
  import numpy as np

  from tfx_jax.models import optim, registry, surgery
  from tfx_jax.training import steps

  shape = _image_shape(args.image_shape)
  if args.worker == 'jax_xla_default':  # The baseline: XLA's default options.
    steps.compiler_options = lambda mesh: None
  model = registry.create('small', args.num_classes)
  params = registry.init_params(model, jax.random.PRNGKey(0), shape)
  mesh = steps.make_mesh()
  rng = np.random.default_rng(0)
  batch = steps.global_batch({
      'image': rng.normal(size=(args.batch_size, *shape)).astype(np.float32),
      'label': rng.integers(0, args.num_classes, args.batch_size).astype(np.int32),
  }, mesh)
  compiled, compile_s = {}, {}
  for config, n in CONFIGS.items():
    frozen = surgery.first_layers(n)
    optimizer = optim.make_optimizer(surgery.freeze_labels(params, frozen),
                                     optim.make_schedule('constant', 0.01, 1000))
    state = steps.create_state(params, optimizer, seed=0, mesh=mesh)
    start = time.perf_counter()
    step = steps.make_train_step(model, optimizer, frozen, mesh).lower(
        state, batch).compile()
    compile_s[config] = time.perf_counter() - start
    compiled[config] = [step, state]

  def run(config):
    step, state = compiled[config]
    state, _ = step(state, batch)
    jax.block_until_ready(state)
    compiled[config][1] = state

  return {'ms': _time_configs(run, args), 'compile_s': compile_s,
          'threads': os.cpu_count(), 'version': jax.__version__,
          'backend': jax.default_backend()}


def _torch_net(torch, in_channels: int, flat: int, num_classes: int):
  nn = torch.nn
  conv = lambda i, o: nn.Conv2d(i, o, 3, padding=1)
  return nn.Sequential(
      conv(in_channels, 32), nn.ReLU(), nn.MaxPool2d(2),
      conv(32, 64), nn.ReLU(), nn.MaxPool2d(2),
      conv(64, 96), nn.ReLU(), conv(96, 96), nn.ReLU(),
      conv(96, 64), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
      nn.Linear(flat, 256), nn.ReLU(), nn.Dropout(0.5),
      nn.Linear(256, 256), nn.ReLU(), nn.Dropout(0.5),
      nn.Linear(256, num_classes))


def _torch_worker(args) -> dict:
  import torch

  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  h, w, c = _image_shape(args.image_shape)
  flat = 64 * (h // 8) * (w // 8)
  steps = {}
  for config, n in CONFIGS.items():
    for fmt in (torch.contiguous_format, torch.channels_last):
      net = _torch_net(torch, c, flat, args.num_classes).to(memory_format=fmt)
      layers = [m for m in net if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
      for layer in layers[:n]:
        layer.requires_grad_(False)
      # The paper's solver: biases at twice the rate and without weight decay.
      weights = [l.weight for l in layers[n:]]
      biases = [l.bias for l in layers[n:]]
      opt = torch.optim.SGD([{'params': weights, 'weight_decay': 5e-4},
                             {'params': biases, 'lr': 0.02}],
                            lr=0.01, momentum=0.9)
      x = torch.randn(args.batch_size, c, h, w).contiguous(memory_format=fmt)
      y = torch.randint(0, args.num_classes, (args.batch_size,))
      steps[(config, fmt)] = (net, opt, x, y)

  def run_one(key):
    net, opt, x, y = steps[key]
    opt.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(net(x), y).backward()
    opt.step()

  # Keep the faster memory format per config, chosen on a short probe.
  formats = {}
  for config in CONFIGS:
    probe = {}
    for fmt in (torch.contiguous_format, torch.channels_last):
      for _ in range(args.warmup):
        run_one((config, fmt))
      start = time.perf_counter()
      for _ in range(3):
        run_one((config, fmt))
      probe[fmt] = time.perf_counter() - start
    formats[config] = min(probe, key=probe.get)

  return {'ms': _time_configs(lambda config: run_one((config, formats[config])), args),
          'formats': {k: 'channels_last' if v == torch.channels_last else 'channels_first'
                      for k, v in formats.items()},
          'threads': torch.get_num_threads(), 'version': torch.__version__}


def _time_configs(run, args) -> dict[str, list[float]]:
  """Per config: args.warmup untimed steps, then args.steps timed ones (ms).

  Configs are interleaved in blocks, so a change of machine load mid-run
  affects them alike.
  """
  for config in CONFIGS:
    for _ in range(args.warmup):
      run(config)
  times = {config: [] for config in CONFIGS}
  block = 4
  for _ in range(max(1, args.steps // block)):
    for config in CONFIGS:
      for _ in range(block):
        start = time.perf_counter()
        run(config)
        times[config].append((time.perf_counter() - start) * 1e3)
  return times


def _median(values):
  values = sorted(values)
  mid = len(values) // 2
  return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _run_worker(framework: str, args) -> dict:
  cmd = [sys.executable, __file__, f'--worker={framework}', f'--malloc={args.malloc}',
         f'--steps={args.steps}', f'--warmup={args.warmup}',
         f'--batch_size={args.batch_size}', f'--image_shape={args.image_shape}',
         f'--num_classes={args.num_classes}']
  out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--json', help='Also write the results here.')
  parser.add_argument('--malloc', choices=('tuned', 'default'), default='tuned',
                      help='glibc allocator setting for both frameworks.')
  parser.add_argument('--rounds', type=int, default=2,
                      help='Alternating JAX / PyTorch processes per framework.')
  parser.add_argument('--steps', type=int, default=12, help='Timed steps per config and round.')
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--image_shape', default='28,28,1', help='H,W,C')
  parser.add_argument('--num_classes', type=int, default=5)
  parser.add_argument('--worker', choices=WORKERS, help=argparse.SUPPRESS)
  args = parser.parse_args()

  if args.worker:
    tuned = args.malloc == 'tuned' and malloc.tune()
    result = (_torch_worker if args.worker == 'torch' else _jax_worker)(args)
    result['malloc_tuned'] = tuned
    print(json.dumps(result))
    return

  load_before = os.getloadavg()
  busy_before, start = machine.busy_cpu_seconds(), time.time()
  results = {w: [] for w in WORKERS}
  for _ in range(args.rounds):
    for framework in results:
      results[framework].append(_run_worker(framework, args))
  load_after = os.getloadavg()
  # Cores kept busy by other processes meanwhile: the machine's busy CPU time
  # less this benchmark's own.
  others = None
  if busy_before is not None:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    others = max(0.0, (machine.busy_cpu_seconds() - busy_before - children.ru_utime
                       - children.ru_stime) / (time.time() - start))

  jax_res, torch_res = results['jax'], results['torch']
  ms = lambda worker, config: round(
      _median([t for r in results[worker] for t in r['ms'][config]]), 2)
  rows = [{'config': c, 'jax_ms': ms('jax', c), 'torch_ms': ms('torch', c),
           'jax_xla_default_ms': ms('jax_xla_default', c)} for c in CONFIGS]
  compile_s = {c: round(_median([r['compile_s'][c] for r in jax_res]), 2) for c in CONFIGS}
  full_ms = rows[0]['jax_ms']
  header = (f'small preset, batch {args.batch_size}, {args.image_shape.replace(",", "x")}, '
            f'fp32; malloc {args.malloc}; JAX {jax_res[0]["version"]} '
            f'({jax_res[0]["backend"]}, {jax_res[0]["threads"]} threads), '
            f'PyTorch {torch_res[0]["version"]} ({torch_res[0]["threads"]} threads)')
  print(header)
  machine.print_load(load_before[0], load_after[0], others)
  print('| config | JAX ms | PyTorch ms | JAX / PyTorch | JAX / JAX full | '
        'JAX, XLA default options ms | JAX compile s | PyTorch layout |')
  print('|---|---|---|---|---|---|---|---|')
  for row in rows:
    c = row['config']
    print(f'| {c} | {row["jax_ms"]:.1f} | {row["torch_ms"]:.1f} | '
          f'{row["jax_ms"] / row["torch_ms"]:.2f} | {row["jax_ms"] / full_ms:.2f} | '
          f'{row["jax_xla_default_ms"]:.1f} | {compile_s[c]:.2f} | '
          f'{torch_res[0]["formats"][c]} |')
  if args.json:
    machine.write_json(args.json, {'rows': rows, 'settings': header,
                                   'jax_compile_s': compile_s},
                       load_before[0], load_after[0], others)


if __name__ == '__main__':
  main()
