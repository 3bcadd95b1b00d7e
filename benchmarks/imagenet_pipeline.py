"""Host cost of feeding ImageNet: prepare, then the train and eval pipelines.

  .venv/bin/python benchmarks/imagenet_pipeline.py [--json=PATH] [--compare_decoders]

Builds a synthetic manual_dir in the original tar layout (about 2,000 textured
JPEGs of varied sizes around 500x375, quality 90), runs tfx_jax.prepare on it,
then measures host CPU milliseconds per image (medians of --repeats timed runs
after warm-up; CPU time of every process and thread involved):
  - each stage of the train path (read, decode, crop and mirror as uint8);
  - the whole train pipeline (grain, 0 workers) and eval pipeline (EvalData,
    0 threads), and both with 1 and 2 workers (train: processes; eval: threads);
  - (a) the path before issue 12: PIL decode of the original-size JPEG, PIL
    resize to 256, crop, float32 normalise;
  - (b) a bare decode of the prepared 256x256 JPEGs with the chosen decoder;
  - the training loop's thread per step, 2 workers: CPU ms of that thread alone
    (time.thread_time) to take a batch, put it on the devices and dispatch a
    step, without and with the device-prefetch thread (training/prefetch.py);
  - evaluation from memory (training/eval_cache.py): host CPU ms per eval image
    at the first evaluation (decoding) and at the later ones.
It prints a table, the host cores needed per 10k images/s, and checks the
targets of issue 12 (train and eval <= 1.5x decode; before/train >= 8;
2 workers >= 1.6x the images/s of 1).
"""

import io
import json
import os
import platform
import resource
import shutil
import tempfile
import time

import numpy as np
import PIL.Image
from absl import app, flags, logging

from tfx_jax.data import input_pipeline
from tfx_jax.data.sources import ilsvrc, jpeg_shards, prepare, synthetic_imagenet
from tfx_jax.training import eval_cache, prefetch, steps

_JSON = flags.DEFINE_string('json', None, 'Write the headline numbers here.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed runs per measurement (median).')
_CLASSES = flags.DEFINE_integer('classes', 20, 'Synthetic classes.')
_TRAIN = flags.DEFINE_integer('train_per_class', 80, 'Train images per class.')
_VAL = flags.DEFINE_integer('validation_per_class', 20, 'Validation images per class.')
_BATCH = flags.DEFINE_integer('batch_size', 256, 'Train batch size.')
_EVAL_BATCH = flags.DEFINE_integer('eval_batch_size', 100, 'Eval batch size.')
_BATCHES = flags.DEFINE_integer('batches', 6, 'Train batches per timed run.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Keep the synthetic data here (reused '
                               'when present); default: a temp dir, deleted.')
_COMPARE = flags.DEFINE_bool('compare_decoders', False, 'Also time every installed '
                             'libjpeg-turbo decoder (simplejpeg, PyTurboJPEG, OpenCV, Pillow).')

MEAN = np.asarray((123.68, 116.78, 103.94), np.float32)


def cpu_seconds() -> float:
  """CPU time of this process (all threads) and of its live children (grain workers)."""
  tick = os.sysconf('SC_CLK_TCK')
  total = time.process_time()
  me = str(os.getpid())
  for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
      with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
      continue
    if fields[1] == me:  # ppid; then utime, stime are fields 11 and 12.
      total += (int(fields[11]) + int(fields[12])) / tick
  return total


def _cpu_with_finished_children() -> float:
  usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
  return sum(u.ru_utime + u.ru_stime for u in usage)


def measure(run, images: int) -> tuple[float, float]:
  """(median CPU ms per image, median images/s) of `run()` over --repeats runs."""
  cpu, rate = [], []
  for _ in range(_REPEATS.value):
    c0, t0 = cpu_seconds(), time.perf_counter()
    run()
    cpu.append((cpu_seconds() - c0) * 1e3 / images)
    rate.append(images / (time.perf_counter() - t0))
  return float(np.median(cpu)), float(np.median(rate))


def per_image(fn, items) -> float:
  """Median CPU ms per item of fn over `items`."""
  def run():
    for item in items:
      fn(item)
  run()  # Warm-up.
  return measure(run, len(items))[0]


def train_path(data_dir, classes, workers):
  it = input_pipeline.train_iterator(
      'imagenet2012', classes, batch_size=_BATCH.value, seed=0, data_dir=data_dir,
      num_workers=workers, process_index=0, process_count=1)
  for _ in range(max(2, 2 * workers)):  # Start-up and workers' first batches.
    next(it)

  def run():
    for _ in range(_BATCHES.value):
      next(it)
  result = measure(run, _BATCHES.value * _BATCH.value)
  it.close()
  return result


def eval_path(data_dir, classes, threads):
  data = input_pipeline.EvalData('imagenet2012', classes, batch_size=_EVAL_BATCH.value,
                                 data_dir=data_dir, num_workers=threads,
                                 process_index=0, process_count=1)

  def run():
    for _ in data:
      pass
  run()
  return measure(run, data.num_examples)


def loop_thread(data_dir, classes, ahead: int, workers: int = 2) -> dict:
  """The training loop's thread per step: CPU ms of that thread alone (median
  over --repeats runs of --batches steps) and wall ms, with `ahead` batches
  put on the devices by the prefetch thread (0: by the loop itself, as before).
  The step takes the whole batch but reads only its labels: on CPU devices the
  images stay in the host's pages (no copy), and a step touching them would
  count the device's work (faulting those pages in) as the loop's."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  mesh = steps.make_mesh()
  step = jax.jit(lambda batch: jnp.sum(batch['label']) + 0 * batch['image'][0, 0, 0, 0])
  it = input_pipeline.train_iterator(
      'imagenet2012', classes, batch_size=_BATCH.value, seed=0, data_dir=data_dir,
      num_workers=workers, process_index=0, process_count=1)
  data = prefetch.DevicePrefetch(it, lambda b: steps.global_batch(b, mesh), ahead)
  for _ in range(2 * workers + 2):  # Start-up and the workers' first batches.
    step(next(data)).block_until_ready()
  cpu, wall = [], []
  for _ in range(_REPEATS.value):
    c0, t0, out = time.thread_time(), time.perf_counter(), None
    for _ in range(_BATCHES.value):
      out = step(next(data))
    cpu.append((time.thread_time() - c0) * 1e3 / _BATCHES.value)
    out.block_until_ready()
    wall.append((time.perf_counter() - t0) * 1e3 / _BATCHES.value)
  data.stop()
  it.close()
  return {'loop_cpu_ms_per_step': float(np.median(cpu)),
          'wall_ms_per_step': float(np.median(wall))}


def eval_from_memory(data_dir, classes, threads: int = 2) -> dict:
  """Host CPU ms per eval image at the first evaluation and at later ones."""
  mesh = steps.make_mesh()
  data = input_pipeline.EvalData('imagenet2012', classes, batch_size=_EVAL_BATCH.value,
                                 data_dir=data_dir, num_workers=threads,
                                 process_index=0, process_count=1)
  cache = eval_cache.EvalCache(data, _EVAL_BATCH.value, mesh)

  def run():
    for batch in cache:
      batch['image'].block_until_ready()
  c0 = cpu_seconds()
  run()
  first = (cpu_seconds() - c0) * 1e3 / data.num_examples
  later = measure(run, data.num_examples)[0]
  return {'first_ms_per_image': first, 'later_ms_per_image': later,
          'location': cache.location}


def before(originals, rng):
  """The path before issue 12, per image, from the original JPEG bytes."""
  def load(data):
    image = PIL.Image.open(io.BytesIO(data)).convert('RGB').resize((256, 256),
                                                                    PIL.Image.BILINEAR)
    y, x = rng.integers(0, 30, 2)
    crop = np.asarray(image)[y:y + 227, x:x + 227][:, ::-1]
    return crop.astype(np.float32) - MEAN
  return per_image(load, originals)


def decoders(prepared) -> dict[str, float]:
  """ms per 256x256 decode for every installed libjpeg-turbo decoder."""
  out = {'simplejpeg': per_image(jpeg_shards.decode, prepared)}
  try:
    import cv2  # pylint: disable=g-import-not-at-top
    cv2.setNumThreads(1)
    out['opencv'] = per_image(lambda b: cv2.imdecode(np.frombuffer(b, np.uint8),
                                                     cv2.IMREAD_COLOR), prepared)
  except ImportError:
    pass
  out['pillow'] = per_image(lambda b: np.asarray(PIL.Image.open(io.BytesIO(b)).convert('RGB')),
                            prepared)
  try:
    import turbojpeg  # pylint: disable=g-import-not-at-top
    tj = turbojpeg.TurboJPEG()
    out['pyturbojpeg'] = per_image(lambda b: tj.decode(b, pixel_format=turbojpeg.TJPF_RGB),
                                   prepared)
  except (ImportError, RuntimeError, OSError):
    pass
  return out


def machine() -> dict:
  model = ''
  with open('/proc/cpuinfo') as f:
    for line in f:
      if line.startswith('model name'):
        model = line.split(':', 1)[1].strip()
        break
  return {'cpu': model, 'cores': len(os.sched_getaffinity(0)),
          'load_avg_1m': os.getloadavg()[0], 'python': platform.python_version()}


def main(_):
  logging.set_verbosity(logging.WARNING)
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix='tfx_jax_imagenet_bench_')
  manual, data_dir = os.path.join(workdir, 'manual'), os.path.join(workdir, 'data')
  classes = list(range(0, 1000, 1000 // _CLASSES.value))[:_CLASSES.value]
  load_start = os.getloadavg()[0]
  if not os.path.exists(os.path.join(manual, ilsvrc.VALIDATION_TAR)):
    start = time.perf_counter()
    synthetic_imagenet.write_manual_dir(manual, classes, _TRAIN.value, _VAL.value,
                                        odd_modes=False)
    print(f'built the synthetic manual_dir in {time.perf_counter() - start:.0f} s')
  shutil.rmtree(data_dir, ignore_errors=True)
  start, cpu0 = time.perf_counter(), _cpu_with_finished_children()
  manifest = prepare.prepare(manual, data_dir, images_per_shard=64, log=lambda m: None)
  n = sum(s['num_examples'] for s in manifest['splits'].values())
  prepare_rate, prepare_cpu = manifest['images_per_s'], _cpu_with_finished_children() - cpu0
  print(f'prepare: {n} images in {time.perf_counter() - start:.1f} s, {prepare_rate:.0f} '
        f'images/s on {len(os.sched_getaffinity(0))} cores (from the pool\'s start), '
        f'{prepare_cpu * 1e3 / n:.2f} ms CPU per image')

  listing = ilsvrc.list_train(manual)
  with open(listing.tar, 'rb') as f:
    originals = [ilsvrc.read(f.fileno(), int(o), int(s), listing.tar, name) for name, o, s in
                 zip(listing.names[:200], listing.offsets[:200], listing.sizes[:200])]
  root = os.path.join(data_dir, prepare.DIRNAME)
  source = jpeg_shards.JpegShardSource(root, 'train')
  index = np.random.default_rng(0).permutation(len(source))[:512]
  prepared = source.read(index)
  decoded = [jpeg_shards.decode(b) for b in prepared]
  rng = np.random.default_rng(0)
  out = np.empty((1, 227, 227, 3), np.uint8)

  def crop(image):  # As the pipeline does it: half of them mirrored.
    y, x, flip = rng.integers(0, 30), rng.integers(0, 30), rng.random() < 0.5
    jpeg_shards.crop_into(image, y, x, flip, out[0])

  stages = {
      'read (pread of one image)': per_image(lambda i: source.read([i]), index),
      'decode 256x256 (simplejpeg)': per_image(jpeg_shards.decode, prepared),
      'crop 227 + mirror half (uint8)': per_image(crop, decoded),
  }
  decode_only = stages['decode 256x256 (simplejpeg)']
  before_ms = before(originals, rng)
  train = {w: train_path(data_dir, classes, w) for w in (0, 1, 2)}
  evals = {w: eval_path(data_dir, classes, w) for w in (0, 1, 2)}
  train_ms, eval_ms = train[0][0], evals[0][0]
  loop = {ahead: loop_thread(data_dir, classes, ahead) for ahead in (0, 2)}
  cached = eval_from_memory(data_dir, classes)

  print(f'\nms of host CPU per image (median of {_REPEATS.value}), batch {_BATCH.value}')
  print('| stage | ms/image |\n|---|---|')
  for name, ms in stages.items():
    print(f'| {name} | {ms:.3f} |')
  print(f'| whole train pipeline, 0 workers | {train_ms:.3f} |')
  print(f'| whole eval pipeline, 0 threads | {eval_ms:.3f} |')
  print(f'| before: PIL decode of the original + resize + crop + float32 | {before_ms:.3f} |')
  print('\n| workers | train images/s | train CPU ms/image | eval images/s (threads) '
        '| eval CPU ms/image |\n|---|---|---|---|---|')
  for w in (0, 1, 2):
    print(f'| {w} | {train[w][1]:,.0f} | {train[w][0]:.3f} | {evals[w][1]:,.0f} | '
          f'{evals[w][0]:.3f} |')
  print('\n| the loop\'s thread, 2 workers | CPU ms/step | wall ms/step |\n|---|---|---|')
  for ahead, name in ((0, 'takes, puts and dispatches (before)'),
                      (2, 'dispatches; a thread puts 2 ahead (now)')):
    print(f'| {name} | {loop[ahead]["loop_cpu_ms_per_step"]:.2f} | '
          f'{loop[ahead]["wall_ms_per_step"]:.1f} |')
  loop_ratio = loop[2]['loop_cpu_ms_per_step'] / loop[0]['loop_cpu_ms_per_step']
  print(f'now / before: {loop_ratio:.2f}')
  print(f'\neval host CPU ms/image, 2 threads: first evaluation {cached["first_ms_per_image"]:.3f}'
        f' (decodes), later ones {cached["later_ms_per_image"]:.4f} (from memory, '
        f'{cached["location"]})')
  scaling = train[2][1] / train[1][1]
  print(f'\nhost cores per 10k images/s: train {10 * train_ms:.1f} in-process, '
        f'{10 * train[2][0]:.1f} with worker processes (their shared-memory hand-over '
        f'included); eval {10 * eval_ms:.1f}; before this issue {10 * before_ms:.1f}')
  checks = {'train <= 1.5 x decode': train_ms <= 1.5 * decode_only,
            'eval <= 1.5 x decode': eval_ms <= 1.5 * decode_only,
            'before / train >= 8': before_ms / train_ms >= 8,
            '2 workers >= 1.6 x 1 worker': scaling >= 1.6,
            'loop thread: prefetch < before': loop_ratio < 1,
            'eval from memory < 5% of the first': (cached['later_ms_per_image']
                                                   < 0.05 * cached['first_ms_per_image'])}
  print(f'train/decode {train_ms / decode_only:.2f}, eval/decode {eval_ms / decode_only:.2f}, '
        f'before/train {before_ms / train_ms:.1f}, 2 vs 1 workers {scaling:.2f}x')
  for name, ok in checks.items():
    print(f'  {"ok  " if ok else "FAIL"} {name}')
  if _COMPARE.value:
    print('\n| decoder (256x256 q90 4:2:0) | ms/image |\n|---|---|')
    for name, ms in decoders(prepared).items():
      print(f'| {name} | {ms:.3f} |')
  info = machine()
  info['load_avg_1m_at_start'] = load_start
  print(f'\nmachine: {info}')
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump({'train_ms_per_image': train_ms, 'eval_ms_per_image': eval_ms,
                 'decode_only_ms_per_image': decode_only, 'before_ms_per_image': before_ms,
                 'images_per_s_by_workers': {str(w): train[w][1] for w in (0, 1, 2)},
                 'eval_images_per_s_by_threads': {str(w): evals[w][1] for w in (0, 1, 2)},
                 'stages_ms_per_image': stages, 'prepare_images_per_s': prepare_rate,
                 'prepare_cpu_ms_per_image': prepare_cpu * 1e3 / n,
                 'train_cpu_ms_per_image_by_workers': {str(w): train[w][0] for w in (0, 1, 2)},
                 'loop_thread_by_prefetch': {str(k): v for k, v in loop.items()},
                 'eval_from_memory': cached,
                 'checks': checks, 'machine': info}, f, indent=2)
      f.write('\n')
  if not _WORKDIR.value:
    shutil.rmtree(workdir)


if __name__ == '__main__':
  app.run(main)
