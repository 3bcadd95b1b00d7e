"""Max-pooling forward + backward on XLA CPU: nn.max_pool (XLA's select-and-scatter)
against tfx_jax's mask backward (`tfx_jax.models.convnet.max_pool`).

  python benchmarks/pooling.py [--json=PATH] [--steps=N]

CaffeNet's three 3x3/2 pools at batch 64 and the small preset's three 2x2/2
pools at batch 256, each a separately compiled function (the input's gradient
for a fixed cotangent, which runs the forward too) with tfx_jax's XLA options
and tuned malloc. For 2x2 also the reshape backward tfx_jax used before for
2x2 on CPU only. Medians of --steps calls after warm-up, the variants
interleaved in blocks so that a change of load hits them alike; ratios are
against nn.max_pool in the same run (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from tfx_jax.training import malloc

import machine

# (net, batch, H = W, channels, window): the input of each pool, stride 2.
POOLS = (('caffenet pool1', 64, 55, 96, 3), ('caffenet pool2', 64, 27, 256, 3),
         ('caffenet pool5', 64, 13, 256, 3), ('small pool1', 256, 28, 32, 2),
         ('small pool2', 256, 14, 64, 2), ('small pool5', 256, 7, 64, 2))
VARIANTS = ('nn.max_pool', 'masks', '2x2 reshape')


def _reshape_2x2_pool():
  """The 2x2-only custom_vjp over reshaped windows that tfx_jax used on CPU
  before the mask backward (kept here for comparison)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  @jax.custom_vjp
  def pool(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2))

  def bwd(res, dy):
    x, y = res
    n, h, w, c = x.shape
    x = x.reshape(n, h // 2, 2, w // 2, 2, c)
    y, dy = y[:, :, None, :, None], dy[:, :, None, :, None]
    grads, taken = [], False
    for i in (0, 1):
      row = []
      for j in (0, 1):
        hit = x[:, :, i:i + 1, :, j:j + 1] == y
        row.append(jnp.where(hit & ~taken, dy, 0.0))
        taken = taken | hit
      grads.append(jnp.concatenate(row, axis=4))
    return (jnp.concatenate(grads, axis=2).reshape(n, h, w, c),)

  pool.defvjp(lambda x: (pool(x), (x, pool(x))), bwd)
  return lambda x: pool(x[:, :x.shape[1] // 2 * 2, :x.shape[2] // 2 * 2])


def _measure(steps: int, warmup: int) -> tuple[list[dict], str]:
  import flax.linen as nn
  import jax
  import numpy as np

  from tfx_jax.models import convnet
  from tfx_jax.training import steps as steps_lib

  options = steps_lib.compiler_options(steps_lib.make_mesh(jax.devices()[:1]))
  reshape_2x2 = _reshape_2x2_pool()
  rng = np.random.default_rng(0)
  rows = []
  for name, batch, hw, c, k in POOLS:
    pools = {'nn.max_pool': lambda x, k=k: nn.max_pool(x, (k, k), strides=(2, 2),
                                                       padding='VALID'),
             'masks': lambda x, k=k: convnet.max_pool(x, k)}
    if k == 2:
      pools['2x2 reshape'] = reshape_2x2
    x = jax.device_put(rng.normal(size=(batch, hw, hw, c)).astype(np.float32))
    out = (hw - k) // 2 + 1
    dy = jax.device_put(rng.normal(size=(batch, out, out, c)).astype(np.float32))
    fns, grads = {}, {}
    for variant, pool in pools.items():
      compiled = jax.jit(lambda x, dy, pool=pool: jax.vjp(pool, x)[1](dy)[0],
                         compiler_options=options).lower(x, dy).compile()
      fns[variant] = lambda compiled=compiled: jax.block_until_ready(compiled(x, dy))
      grads[variant] = np.asarray(fns[variant]())
    for variant, grad in grads.items():  # The same gradient, up to the order of sums.
      np.testing.assert_allclose(grad, grads['nn.max_pool'], rtol=1e-6, atol=1e-6,
                                 err_msg=f'{name}: {variant}')
    times = {variant: [] for variant in fns}
    for fn in fns.values():
      for _ in range(warmup):
        fn()
    # Blocks of 4 timed calls, each after an untimed one. Even so the variant
    # timed after nn.max_pool comes out up to 20% slower on the 2x2 pools,
    # whichever it is: within that, masks and 2x2 reshape are equal.
    block = 4
    for _ in range(max(1, steps // block)):
      for variant, fn in fns.items():
        fn()
        for _ in range(block):
          start = time.perf_counter()
          fn()
          times[variant].append((time.perf_counter() - start) * 1e3)
    row = {'pool': name, 'input': f'{batch}x{hw}x{hw}x{c}', 'window': f'{k}x{k}/2',
           'output': f'{out}x{out}'}
    row.update({f'{v} ms': round(float(np.median(t)), 2) for v, t in times.items()})
    rows.append(row)
  return rows, f'JAX {jax.__version__} ({jax.default_backend()}), {os.cpu_count()} threads'


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--json', help='Also write the results here.')
  parser.add_argument('--steps', type=int, default=20, help='Timed calls per variant.')
  parser.add_argument('--warmup', type=int, default=3)
  args = parser.parse_args()
  malloc_tuned = malloc.tune()  # Before JAX starts its threads.

  load_before = os.getloadavg()
  busy_before, start = machine.busy_cpu_seconds(), time.time()
  rows, settings = _measure(args.steps, args.warmup)
  load_after = os.getloadavg()
  others = None  # Cores kept busy by other processes meanwhile.
  if busy_before is not None:
    own = resource.getrusage(resource.RUSAGE_SELF)
    others = max(0.0, (machine.busy_cpu_seconds() - busy_before - own.ru_utime - own.ru_stime)
                 / (time.time() - start))
  settings += f', fp32, malloc {"tuned" if malloc_tuned else "default"}'

  print(settings)
  machine.print_load(load_before[0], load_after[0], others)
  print('| pool | input | window | ' + ' | '.join(f'{v} ms' for v in VARIANTS) +
        ' | masks / nn.max_pool | 2x2 reshape / nn.max_pool |')
  print('|---' * (5 + len(VARIANTS)) + '|')
  for r in rows:
    base = r['nn.max_pool ms']
    cells = [f'{r[f"{v} ms"]:.2f}' if f'{v} ms' in r else '-' for v in VARIANTS]
    ratios = [f'{r[f"{v} ms"] / base:.2f}' if f'{v} ms' in r else '-' for v in VARIANTS[1:]]
    print(f'| {r["pool"]} | {r["input"]} | {r["window"]} | ' + ' | '.join(cells + ratios) + ' |')
  if args.json:
    machine.write_json(args.json, {'settings': settings, 'rows': rows}, load_before[0],
                       load_after[0], others)


if __name__ == '__main__':
  main()
