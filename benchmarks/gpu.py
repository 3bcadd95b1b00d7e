"""CaffeNet's train step on one GPU: images/s and FLOP utilisation per precision,
the same net in PyTorch, and the step fed by the real input pipeline.

  python benchmarks/gpu.py [--json=PATH] [--smoke] [--parts=jax,torch,pipeline]

At 227x227, batch 256, 500 classes (the paper's halves), full training:
  - jax: `steps.make_train_step` for each precision of training/precision.py,
    exactly as the runner runs it (AOT-lowered and compiled, state donated, on a
    one-device mesh, uint8 images normalised on the device). FLOPs per step from
    XLA's cost analysis of the compiled step; utilisation against the device's
    dense peak for that precision (PEAK_TFLOPS), n/a on other devices (CPU);
    images/s against the float32 step's. (Where the backend's count is 0, the
    count of the step as lowered.)
  - torch: the same net written in PyTorch, channels-last, cuDNN autotuned (as
    XLA autotunes), eager and torch.compile'd (the model; SGD with momentum), in
    float32 (TF32 off), TF32 (on) and bfloat16 (autocast); against JAX's step of
    the same precision. Skipped, with a line, without torch (the bench extra).
  - pipeline: synthetic JPEGs in ImageNet's tar layout, prepared as the project
    prepares ImageNet, read by `input_pipeline.train_iterator` with worker
    processes and put on the device ahead of the step (the train loop's
    DevicePrefetch); steps/s fed against the step alone, and the pipeline alone.
Each framework runs in its own process (JAX takes most of the GPU's memory).
A time is the median over --rounds rounds of --steps steps dispatched back to
back, as the train loop dispatches them, after --warmup steps. --smoke runs all
of it on a CPU in seconds (batch 2, a few images): a test, not a measurement.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ('jax', 'torch', 'pipeline')
PRECISIONS = ('float32', 'tf32', 'bfloat16')  # tfx_jax.training.precision.NAMES
# imagenet2012's normalisation, as its DatasetSpec has it (a test holds them
# equal): the JAX part needs none of the data packages.
MEAN, STD = (123.68, 116.78, 103.94), (1.0, 1.0, 1.0)
IMAGE_SIZE = 227  # Its crops (PAPER.md), which the pipeline part feeds the step.
DEVICE_PREFETCH = 2  # config.device_prefetch's default.

# Dense peak TFLOP/s (float32 on the CUDA cores; TF32 and bfloat16 on the tensor
# cores, without sparsity, i.e. half the data sheets' starred figures), by device
# kind, first match wins. Source: NVIDIA's data sheets: H100 and H200 Tensor Core
# GPU (SXM and NVL/PCIe columns), GH200 Grace Hopper Superchip, A100 Tensor Core
# GPU (SXM and PCIe alike), L40S, L4 and A10.
PEAK_TFLOPS = (
    (r'GH200', {'float32': 67.0, 'tf32': 494.5, 'bfloat16': 989.5}),
    (r'H200 NVL', {'float32': 60.0, 'tf32': 417.5, 'bfloat16': 835.5}),
    (r'H200', {'float32': 67.0, 'tf32': 494.5, 'bfloat16': 989.5}),
    (r'H100 NVL', {'float32': 60.0, 'tf32': 417.5, 'bfloat16': 835.5}),
    (r'H100.*PCIe', {'float32': 51.0, 'tf32': 378.0, 'bfloat16': 756.5}),
    (r'H100', {'float32': 67.0, 'tf32': 494.5, 'bfloat16': 989.5}),  # SXM5
    (r'A100', {'float32': 19.5, 'tf32': 156.0, 'bfloat16': 312.0}),
    (r'L40S', {'float32': 91.6, 'tf32': 183.0, 'bfloat16': 366.5}),
    (r'\bL4\b', {'float32': 30.3, 'tf32': 60.0, 'bfloat16': 121.0}),
    (r'\bA10\b', {'float32': 31.2, 'tf32': 62.5, 'bfloat16': 125.0}),
)
SMOKE = {'batch_size': 2, 'warmup': 1, 'rounds': 1, 'steps': 1, 'classes': 2,
         'train_per_class': 2, 'workers': '0', 'torch_modes': 'eager'}


def peak_tflops(device_kind: str, precision: str) -> float | None:
  for pattern, peaks in PEAK_TFLOPS:
    if re.search(pattern, device_kind):
      return peaks[precision]
  return None


def time_steps(run, sync, args) -> float:
  """Median ms per step: args.warmup steps, then args.rounds rounds of
  args.steps steps, each round synced once at its end."""
  for _ in range(args.warmup):
    run()
  sync()
  per_step = []
  for _ in range(args.rounds):
    start = time.perf_counter()
    for _ in range(args.steps):
      run()
    sync()
    per_step.append((time.perf_counter() - start) * 1e3 / args.steps)
  return statistics.median(per_step)


def flops_of(stage) -> float:
  """FLOPs of one call by XLA's cost analysis of a compiled or lowered function:
  a dict, or (older JAX) a list of one dict per program; 0 when it has none."""
  analysis = stage.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get('flops', 0.0))


# ---------------------------------------------------------------- JAX


def _jax_worker(args) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from tfx_jax.models import optim, registry, surgery
  from tfx_jax.training import precision as precision_lib
  from tfx_jax.training import steps

  assert precision_lib.NAMES == PRECISIONS, precision_lib.NAMES
  device = jax.devices()[0]
  mesh = steps.make_mesh([device])
  shape = (IMAGE_SIZE, IMAGE_SIZE, 3)
  model = registry.create('caffenet', args.num_classes)
  params = jax.jit(lambda key: registry.init_params(model, key, shape))(jax.random.PRNGKey(0))
  frozen = ()  # Full training, as the bases and the fine-tuned (+) runs train.
  optimizer = optim.make_optimizer(surgery.freeze_labels(params, frozen),
                                   optim.make_schedule('step', 0.01, 1000))
  preprocess = steps.normalizer(MEAN, STD)
  sharding = steps.batch_sharded(mesh)
  b = args.batch_size
  shapes = {'image': jax.ShapeDtypeStruct((b, *shape), jnp.uint8, sharding=sharding),
            'label': jax.ShapeDtypeStruct((b,), jnp.int32, sharding=sharding)}
  rng = np.random.default_rng(0)
  batch = steps.global_batch({
      'image': rng.integers(0, 256, (b, *shape), np.uint8),
      'label': rng.integers(0, args.num_classes, b).astype(np.int32)}, mesh)

  def time_step(compiled, next_batch):
    holder = [steps.create_state(params, optimizer, seed=0, mesh=mesh)]

    def run():
      holder[0], _ = compiled(holder[0], next_batch())
    return time_steps(run, lambda: jax.block_until_ready(holder[0]), args)

  parts = args.parts.split(',')
  precisions = PRECISIONS if 'jax' in parts else (args.fed_precision,)
  rows, compiled_steps = [], {}
  for precision in precisions:
    state = steps.create_state(params, optimizer, seed=0, mesh=mesh)
    start = time.perf_counter()
    lowered = steps.make_train_step(model, optimizer, frozen, mesh, preprocess,
                                    precision=precision).lower(state, shapes)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    del state
    compiled_steps[precision] = compiled
    ms = time_step(compiled, lambda: batch)
    # The compiled step's count, else (a backend that counts no FLOPs in its
    # library calls) the count of the step as lowered, before XLA's passes.
    flops, source = flops_of(compiled), 'compiled'
    if flops <= 0:
      flops, source = flops_of(lowered), 'lowered'
    peak = peak_tflops(device.device_kind, precision)
    tflops = flops / ms * 1e3 / 1e12
    rows.append({'precision': precision, 'step_ms': ms, 'images_per_s': b / ms * 1e3,
                 'flops': flops, 'flops_from': source, 'tflops_per_s': tflops,
                 'peak_tflops': peak,
                 'mfu': None if peak is None else tflops / peak, 'compile_s': compile_s})
  for row in rows:
    row['vs_float32'] = row['images_per_s'] / rows[0]['images_per_s']
  result = {'jax': rows if 'jax' in parts else [], 'device_kind': device.device_kind,
            'platform': device.platform, 'jax_version': jax.__version__}
  if 'pipeline' in parts:
    alone = next(r for r in rows if r['precision'] == args.fed_precision)
    try:
      result['pipeline'] = _pipeline(args, mesh, compiled_steps[args.fed_precision],
                                     alone['step_ms'], time_step)
    except ImportError as e:  # A machine with JAX but not the data packages.
      result['pipeline_skipped'] = f'{e} (pip install -e .)'
  return result


def _synthetic_data(args, workdir: str) -> tuple[str, list[int]]:
  """A synthetic manual_dir prepared as ImageNet: (data_dir, classes)."""
  from tfx_jax.data.sources import ilsvrc, prepare, synthetic_imagenet

  manual, data_dir = os.path.join(workdir, 'manual'), os.path.join(workdir, 'data')
  classes = list(range(0, 1000, 1000 // args.classes))[:args.classes]
  if not os.path.exists(os.path.join(manual, ilsvrc.VALIDATION_TAR)):
    synthetic_imagenet.write_manual_dir(manual, classes, args.train_per_class, 1,
                                        odd_modes=False)
  prepare.prepare(manual, data_dir, images_per_shard=64, log=lambda message: None)
  return data_dir, classes


def _fitting_workers(workers: int, batch_size: int) -> int:
  """`workers` (-1: the project's rule), fewer if /dev/shm cannot hold their batches."""
  from tfx_jax.data import datasets, input_pipeline
  from tfx_jax.errors import UserError

  workers = datasets.host_workers('imagenet2012', workers)
  spec = datasets.dataset_spec('imagenet2012')
  while workers:
    try:
      input_pipeline.check_shared_memory(spec, workers, batch_size, spec.image_shape)
      return workers
    except UserError:
      workers -= 1
  return workers


def _pipeline(args, mesh, compiled, alone_ms: float, time_step) -> list[dict]:
  from tfx_jax.data import input_pipeline
  from tfx_jax.training import prefetch, steps

  workdir = args.workdir or tempfile.mkdtemp(prefix='tfx_jax_gpu_bench_')
  start = time.perf_counter()
  data_dir, classes = _synthetic_data(args, workdir)
  data_s = time.perf_counter() - start
  put = lambda batch: steps.global_batch(batch, mesh)
  rows = []
  for asked in (int(w) for w in args.workers.split(',')):
    workers = _fitting_workers(asked, args.batch_size)
    it = input_pipeline.train_iterator(
        'imagenet2012', classes, batch_size=args.batch_size, seed=0, data_dir=data_dir,
        num_workers=workers, process_index=0, process_count=1)
    for _ in range(2 * workers):  # The workers' start and first batches.
      next(it)
    host_ms = time_steps(lambda: next(it), lambda: None, args)
    data = prefetch.DevicePrefetch(it, put, DEVICE_PREFETCH)
    fed_ms = time_step(compiled, lambda: next(data))
    data.stop()
    it.close()
    rows.append({'workers': workers, 'workers_asked': asked,
                 'device_prefetch': DEVICE_PREFETCH, 'precision': args.fed_precision,
                 'fed_steps_per_s': 1e3 / fed_ms, 'alone_steps_per_s': 1e3 / alone_ms,
                 'fed_vs_alone': alone_ms / fed_ms, 'pipeline_steps_per_s': 1e3 / host_ms,
                 'images': args.classes * args.train_per_class, 'data_s': data_s})
  if not args.workdir:
    shutil.rmtree(workdir)
  return rows


# ---------------------------------------------------------------- PyTorch


def _torch_caffenet(torch, num_classes: int, image_size: int):
  """CaffeNet as convnet.CAFFENET has it: LRN after the pool, groups 2 in conv2/4/5."""
  nn = torch.nn
  lrn = lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
  pool = lambda: nn.MaxPool2d(3, 2)
  side = (image_size - 11) // 4 + 1
  for _ in range(3):
    side = (side - 3) // 2 + 1
  return nn.Sequential(
      nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), pool(), lrn(),
      nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), pool(), lrn(),
      nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
      nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
      nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), pool(), nn.Flatten(),
      nn.Linear(256 * side * side, 4096), nn.ReLU(), nn.Dropout(0.5),
      nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
      nn.Linear(4096, num_classes))


def _torch_worker(args) -> dict:
  import torch

  dev = 'cuda' if torch.cuda.is_available() else 'cpu'
  sync = torch.cuda.synchronize if dev == 'cuda' else (lambda: None)
  torch.manual_seed(0)
  torch.backends.cudnn.benchmark = True
  b, s, last = args.batch_size, IMAGE_SIZE, torch.channels_last
  images = torch.randint(0, 256, (b, 3, s, s), dtype=torch.uint8, device=dev)
  images = images.contiguous(memory_format=last)
  labels = torch.randint(0, args.num_classes, (b,), device=dev)
  mean = torch.tensor(MEAN, device=dev).view(1, 3, 1, 1)
  rows = []
  for mode in args.torch_modes.split(','):
    for precision in PRECISIONS:
      tf32 = precision == 'tf32'
      torch.backends.cuda.matmul.allow_tf32 = tf32
      torch.backends.cudnn.allow_tf32 = tf32
      net = _torch_caffenet(torch, args.num_classes, s).to(dev, memory_format=last)
      # The paper's solver: biases at twice the rate and without weight decay.
      weights = [p for name, p in net.named_parameters() if name.endswith('weight')]
      biases = [p for name, p in net.named_parameters() if name.endswith('bias')]
      opt = torch.optim.SGD([{'params': weights, 'weight_decay': 5e-4},
                             {'params': biases, 'lr': 0.02}], lr=0.01, momentum=0.9)
      forward = torch.compile(net) if mode == 'compile' else net

      def run():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev, torch.bfloat16, enabled=precision == 'bfloat16'):
          logits = forward(images.float() - mean)
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()
        opt.step()

      start = time.perf_counter()
      run()  # torch.compile compiles here.
      sync()
      first_s = time.perf_counter() - start
      ms = time_steps(run, sync, args)
      rows.append({'mode': mode, 'precision': precision, 'step_ms': ms,
                   'images_per_s': b / ms * 1e3, 'first_step_s': first_s})
      if mode == 'compile':
        torch._dynamo.reset()  # pylint: disable=protected-access
  device = torch.cuda.get_device_name() if dev == 'cuda' else 'cpu'
  return {'torch': rows, 'torch_version': torch.__version__, 'torch_device': device}


# ---------------------------------------------------------------- report


def _run_worker(name: str) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], f'--worker={name}']
  # tfx_jax from this checkout, installed or not (and so in grain's workers).
  path = os.pathsep.join(filter(None, [ROOT, os.environ.get('PYTHONPATH')]))
  out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=path))
  return json.loads(out.stdout.strip().splitlines()[-1])


def _fmt(value, spec: str) -> str:
  return 'n/a' if value is None else format(value, spec)


def _compare_torch(results: dict) -> None:
  """Each PyTorch row against JAX's step of its precision: images/s, and
  utilisation of the peak by that step's FLOPs (the same net's work)."""
  jax_rows = {r['precision']: r for r in results.get('jax', [])}
  for row in results.get('torch', []):
    jax_row = jax_rows.get(row['precision'])
    row['vs_jax'] = jax_row and row['images_per_s'] / jax_row['images_per_s']
    peak = jax_row and jax_row['peak_tflops']
    row['mfu'] = peak and jax_row['flops'] / row['step_ms'] * 1e3 / 1e12 / peak


def _report(results: dict, args) -> None:
  head = (f'CaffeNet train step, batch {args.batch_size}, {IMAGE_SIZE}x{IMAGE_SIZE}, '
          f'{args.num_classes} classes, full training; host {os.cpu_count()} cores')
  if 'jax_version' in results:
    head += (f'; JAX {results["jax_version"]} on {results["device_kind"]} '
             f'({results["platform"]})')
  if 'torch_version' in results:
    head += f'; PyTorch {results["torch_version"]} on {results["torch_device"]}'
  print(head + ('; --smoke: not a measurement' if args.smoke else ''))
  if results.get('jax'):
    print('\n| JAX precision | step ms | images/s | vs float32 | GFLOP/step | TFLOP/s '
          '| peak TFLOP/s | MFU | compile s |\n|---|---|---|---|---|---|---|---|---|')
    for r in results['jax']:
      print(f'| {r["precision"]} | {r["step_ms"]:.2f} | {r["images_per_s"]:,.0f} | '
            f'{r["vs_float32"]:.2f} | {r["flops"] / 1e9:,.0f} | {r["tflops_per_s"]:.1f} | '
            f'{_fmt(r["peak_tflops"], ".1f")} | {_fmt(r["mfu"], ".1%")} | '
            f'{r["compile_s"]:.1f} |')
  if 'torch' in args.parts.split(','):
    print('\n| PyTorch | precision | step ms | images/s | vs JAX | MFU | first step s |'
          '\n|---|---|---|---|---|---|---|')
    if results.get('torch_skipped'):
      print(f'| skipped: {results["torch_skipped"]} | | | | | | |')
    for r in results.get('torch', []):
      print(f'| {r["mode"]} | {r["precision"]} | {r["step_ms"]:.2f} | '
            f'{r["images_per_s"]:,.0f} | {_fmt(r["vs_jax"], ".2f")} | '
            f'{_fmt(r["mfu"], ".1%")} | {r["first_step_s"]:.1f} |')
  if results.get('pipeline_skipped'):
    print(f'\nFed by the pipeline: skipped: {results["pipeline_skipped"]}')
  if results.get('pipeline'):
    first = results['pipeline'][0]
    print(f'\nFed by the pipeline: {first["images"]} synthetic images, made and prepared in '
          f'{first["data_s"]:.0f} s\n| workers | device prefetch | precision | fed steps/s '
          '| step alone steps/s | fed / alone | pipeline alone steps/s |'
          '\n|---|---|---|---|---|---|---|')
    for r in results['pipeline']:
      auto = ' (auto)' if r['workers_asked'] == -1 else ''
      print(f'| {r["workers"]}{auto} | {r["device_prefetch"]} | {r["precision"]} | '
            f'{r["fed_steps_per_s"]:.2f} | {r["alone_steps_per_s"]:.2f} | '
            f'{r["fed_vs_alone"]:.2f} | {r["pipeline_steps_per_s"]:.2f} |')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--json', help='Also write the results here.')
  parser.add_argument('--smoke', action='store_true',
                      help=f'A few seconds on a CPU, for tests: {SMOKE}.')
  parser.add_argument('--parts', default=','.join(PARTS), help='Of ' + ','.join(PARTS))
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--num_classes', type=int, default=500)
  parser.add_argument('--warmup', type=int, default=5)
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--steps', type=int, default=10, help='Steps per timed round.')
  parser.add_argument('--torch_modes', default='eager,compile')
  parser.add_argument('--fed_precision', default='bfloat16', choices=PRECISIONS)
  parser.add_argument('--workers', default='0,-1',
                      help='Pipeline worker processes, comma-separated; -1: the '
                           "project's rule (datasets.host_workers).")
  parser.add_argument('--classes', type=int, default=4, help='Synthetic classes.')
  parser.add_argument('--train_per_class', type=int, default=32,
                      help='Synthetic training images per class.')
  parser.add_argument('--workdir', help='Keep the synthetic data here (reused).')
  parser.add_argument('--worker', choices=('jax', 'torch'), help=argparse.SUPPRESS)
  if parser.parse_known_args()[0].smoke:
    parser.set_defaults(**SMOKE)
  args = parser.parse_args()
  parts = args.parts.split(',')
  if not set(parts) <= set(PARTS):
    parser.error(f'--parts: choose among {",".join(PARTS)}')

  if args.worker:
    print(json.dumps((_jax_worker if args.worker == 'jax' else _torch_worker)(args)))
    return

  start, results = time.perf_counter(), {}
  if {'jax', 'pipeline'} & set(parts):
    results.update(_run_worker('jax'))
  if 'torch' in parts:
    if importlib.util.find_spec('torch') is None:
      results['torch_skipped'] = 'torch is not installed (pip install -e ".[bench]")'
    else:
      results.update(_run_worker('torch'))
  _compare_torch(results)
  _report(results, args)
  results.update(settings={k: v for k, v in vars(args).items() if k not in ('json', 'worker')},
                 wall_s=time.perf_counter() - start)
  print(f'\n{results["wall_s"]:.0f} s in all')
  if args.json:
    tmp = f'{args.json}.tmp'
    with open(tmp, 'w') as f:
      json.dump(results, f, indent=1)
      f.write('\n')
    os.replace(tmp, args.json)


if __name__ == '__main__':
  main()
