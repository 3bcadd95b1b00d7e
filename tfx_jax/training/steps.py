"""The train state and the data-parallel train and eval steps: jit over a 1-D
'data' mesh of every device of every process, the batch split over 'data', the
state replicated and donated. One mechanism for one device, many devices and
many hosts.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from tfx_jax.models import net, surgery
from tfx_jax.training import precision as precision_lib

DATA_AXIS = 'data'


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array  # Raw uint32 key; dropout uses fold_in(rng, step).
  # The model's other collections (BatchNorm's batch_stats), {} when none.
  model_state: Any = flax.struct.field(default_factory=dict)

  @property
  def variables(self) -> dict:
    """The Flax variables the model is applied to."""
    return {'params': self.params, **self.model_state}

  def tree(self) -> dict:
    """The state as checkpointed: its fields, model_state only when not empty
    (so checkpoints of models without one keep their layout)."""
    out = {'step': self.step, 'params': self.params, 'opt_state': self.opt_state,
           'rng': self.rng}
    return {**out, 'model_state': self.model_state} if self.model_state else out


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D 'data' mesh over `devices` (default: all devices of all processes)."""
  devices = list(jax.devices() if devices is None else devices)
  # Auto axis types: classic sharding propagation, so reshapes of the
  # batch-sharded activations (pooling, flatten) need no explicit out_sharding.
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


# XLA CPU hands convolutions to YNNPACK by default; their gradients run 1.5-3x
# slower there than as XLA's own (Eigen) convolutions (docs/benchmarks.md).
# YNNPACK keeps dots and reductions, where it is fast.
_CPU_OPTIONS = {'xla_cpu_experimental_ynn_fusion_type': ','.join(
    f'LIBRARY_FUSION_TYPE_{t}' for t in ('DOT', 'REDUCE'))}


@functools.cache
def _cpu_options_supported() -> bool:
  """Whether this XLA knows _CPU_OPTIONS (it is an experimental option)."""
  try:
    cpu = jax.sharding.SingleDeviceSharding(jax.devices('cpu')[0])
    x = jax.ShapeDtypeStruct((), jnp.float32, sharding=cpu)
    jax.jit(jnp.sin).lower(x).compile(dict(_CPU_OPTIONS))
  except Exception:  # pylint: disable=broad-except
    return False
  return True


def compiler_options(mesh: Mesh) -> dict[str, str] | None:
  """XLA options for the steps on `mesh`: on CPU, _CPU_OPTIONS where known."""
  if mesh.devices.flat[0].platform == 'cpu' and _cpu_options_supported():
    return dict(_CPU_OPTIONS)
  return None


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def global_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's slice of a batch -> global arrays split over 'data'."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


def create_state(params, optimizer: optax.GradientTransformation, seed: int,
                 mesh: Mesh, model_state: Mapping | None = None) -> TrainState:
  """A fresh train state around a copy of `params` (and the model's other
  collections, `model_state`), replicated over the mesh.

  The state owns its buffers: train steps donate them, and `params` (a base
  network shared by many transplants, say) must outlive that.
  """
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     opt_state=optimizer.init(params),
                     rng=jax.random.PRNGKey(seed), model_state=dict(model_state or {}))
  # device_put(may_alias=False) still reuses a one-device array's buffer as the
  # first shard of a multi-device sharding (JAX 0.10); a computation's outputs
  # are always fresh buffers.
  state = jax.device_put(state, replicated(mesh))
  return jax.jit(lambda state: jax.tree.map(jnp.copy, state))(state)


def _metrics(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
  """Per-example loss, top-1 and top-5 correctness."""
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  top1 = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  _, top5_idx = jax.lax.top_k(logits, min(5, logits.shape[-1]))
  top5 = jnp.any(top5_idx == labels[:, None], axis=-1).astype(jnp.float32)
  return {'loss': loss, 'top1': top1, 'top5': top5}


def normalize(images: jax.Array, mean, std) -> jax.Array:
  """uint8 images -> float32 (x - mean) / std per channel (0..255 scale).

  Runs inside the jitted steps, on the device: batches cross from the host as
  uint8, a quarter of float32's bytes, and the host does no float work.
  """
  scale = 1.0 / np.asarray(std, np.float32)  # As the host computed it before.
  return (images.astype(jnp.float32) - np.asarray(mean, np.float32)) * scale


def normalizer(mean, std) -> Callable[[jax.Array], jax.Array]:
  """`normalize` with a dataset's statistics: the steps' `preprocess`."""
  return functools.partial(normalize, mean=tuple(mean), std=tuple(std))


def intercepting(path: str, fn: Callable) -> Callable:
  """A linen interceptor calling fn(next_fun, args, kwargs) for the __call__ of
  the module at `path` ('a/b'), passing every other call through."""
  wanted = tuple(path.split('/'))

  def interceptor(next_fun, args, kwargs, context):
    if context.method_name == '__call__' and tuple(context.module.path) == wanted:
      return fn(next_fun, args, kwargs)
    return next_fun(*args, **kwargs)

  return interceptor


def _apply(model: nn.Module, variables, batch, preprocess: Callable, precision: str,
           cut: tuple | None, **kwargs):
  """model.apply on the batch's images, or with `cut` (path, image shape, ...) on
  its 'features' in place of the output of the module at `path`: what feeds
  that module is then dead code, which XLA drops."""
  if cut is None:
    return model.apply(variables, precision_lib.cast(preprocess(batch['image']), precision),
                       **kwargs)
  images = jnp.zeros((batch['label'].shape[0], *cut[1]), jnp.float32)
  features = precision_lib.cast(batch['features'], precision)
  with nn.intercept_methods(intercepting(cut[0], lambda *_: features)):
    return model.apply(variables, images, **kwargs)


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation,
                    frozen_layers: Iterable[str], mesh: Mesh,
                    preprocess: Callable[[jax.Array], jax.Array] | None = None,
                    precision: str = precision_lib.DEFAULT,
                    cut: tuple | None = None) -> Callable:
  """Compiled `step(state, batch) -> (state, metrics)`; batch: image, label.
  With `cut` = (path, image shape, features' shape), batch: features, label:
  the features are the output of the frozen module at `path`
  (training/feature_cache.py), used in place of computing it; nothing below it
  is computed.

  Gradients are taken with respect to the trainable layers only, so XLA never
  builds the backward pass below the cut, and frozen leaves are passed through
  untouched (bitwise identical). The model's other collections (BatchNorm's
  running statistics) are updated by the forward pass in training mode, except
  under the frozen layers, which keep theirs bitwise. `preprocess` (e.g.
  `normalizer(...)`) maps the batch's images to the model's input, on the device.
  `precision`: one of precision.NAMES (training/precision.py).
  """
  frozen_layers = tuple(frozen_layers)
  preprocess = preprocess or (lambda images: images)
  precision_lib.check(precision)
  # A Net's frozen layers may normalise with their running averages (models/norm.py).
  frozen_kw = {'frozen': frozen_layers} if isinstance(model, net.Net) else {}

  def step(state: TrainState, batch):
    trainable, frozen = surgery.split_trainable(state.params, frozen_layers)
    dropout_rng = jax.random.fold_in(state.rng, state.step)
    mutable = list(state.model_state)

    def loss_fn(trainable):
      variables = {'params': precision_lib.cast(surgery.merge(trainable, frozen), precision),
                   **state.model_state}
      out = _apply(model, variables, batch, preprocess, precision, cut, train=True,
                   rngs={'dropout': dropout_rng}, mutable=mutable or False, **frozen_kw)
      logits, updated = (net.logits_of(out[0]), out[1]) if mutable else (net.logits_of(out), {})
      metrics = jax.tree.map(jnp.mean, _metrics(logits.astype(jnp.float32), batch['label']))
      return metrics['loss'], (metrics, updated)

    with precision_lib.matmuls(precision):
      grads, (metrics, updated) = jax.grad(loss_fn, has_aux=True)(trainable)
    updated = {name: precision_lib.like(tree, state.model_state[name])
               for name, tree in updated.items()}
    full_grads = surgery.merge(grads, jax.tree.map(jnp.zeros_like, frozen))
    updates, opt_state = optimizer.update(full_grads, state.opt_state,
                                          state.params)
    new_trainable = optax.apply_updates(
        trainable, surgery.split_trainable(updates, frozen_layers)[0])
    model_state = {name: surgery.keep_under(tree, state.model_state[name], frozen_layers)
                   for name, tree in updated.items()}
    state = state.replace(step=state.step + 1, opt_state=opt_state,
                          params=surgery.merge(new_trainable, frozen),
                          model_state=model_state)
    return state, metrics

  rep = replicated(mesh)
  return jax.jit(step, in_shardings=(rep, batch_sharded(mesh)),
                 out_shardings=(rep, rep), donate_argnums=0,
                 compiler_options=compiler_options(mesh))


@dataclasses.dataclass(frozen=True)
class Phases:
  """Train steps by the step they start at (LP-FT: the head's probe, then
  every group): `at(step)` is the one that trains step `step` (0-based)."""
  starts: tuple[int, ...]
  steps: tuple[Callable, ...]

  def at(self, step: int) -> Callable:
    return self.steps[max(i for i, start in enumerate(self.starts) if start <= step)]


def make_eval_step(model: nn.Module, mesh: Mesh,
                   preprocess: Callable[[jax.Array], jax.Array] | None = None,
                   precision: str = precision_lib.DEFAULT,
                   cut: tuple | None = None) -> Callable:
  """Compiled `eval_step(variables, batch) -> sums`; batch: image, label, mask
  (with `cut`, features instead of image, as make_train_step's).

  `variables` are the model's Flax variables ({'params': ...} and any other
  collection: BatchNorm normalises with its running averages), computed in
  `precision` as the train step."""
  preprocess = preprocess or (lambda images: images)
  precision_lib.check(precision)

  def eval_step(variables, batch):
    variables = {**variables, 'params': precision_lib.cast(variables['params'], precision)}
    with precision_lib.matmuls(precision):
      logits = net.logits_of(_apply(model, variables, batch, preprocess, precision, cut,
                                    train=False)).astype(jnp.float32)
    mask = batch['mask'].astype(jnp.float32)
    sums = {k: jnp.sum(v * mask) for k, v in _metrics(logits, batch['label']).items()}
    sums['count'] = jnp.sum(mask)
    return sums

  rep = replicated(mesh)
  return jax.jit(eval_step, in_shardings=(rep, batch_sharded(mesh)),
                 out_shardings=rep, compiler_options=compiler_options(mesh))


def pad_batch(batch: Mapping[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
  """Pad a (possibly partial) batch to batch_size rows, with a 0/1 'mask'.
  A full batch's arrays are passed through, not copied."""
  n = len(batch['label'])
  if n > batch_size:
    raise ValueError(f'Batch of {n} examples is larger than batch_size {batch_size}.')
  if n == batch_size:
    return {**batch, 'mask': np.asarray(batch.get('mask', np.ones(n, bool)), bool)}
  out = {k: np.concatenate([v, np.zeros((batch_size - n, *v.shape[1:]), v.dtype)])
         for k, v in batch.items() if k != 'mask'}
  mask = np.asarray(batch.get('mask', np.ones(n, bool)), bool)
  out['mask'] = np.concatenate([mask, np.zeros(batch_size - n, bool)])
  return out


def evaluate(eval_step: Callable, variables, batches: Iterable[Mapping[str, np.ndarray]],
             batch_size: int, mesh: Mesh) -> dict[str, float]:
  """Mean loss, top-1, top-5 over exactly the examples in `batches`.

  `batch_size` is this process's batch; partial batches are padded and masked.
  Batches of global arrays with a mask (eval_cache.EvalCache's) go as they are.
  """
  totals = None
  for batch in batches:
    if not isinstance(batch.get('mask'), jax.Array):
      batch = global_batch(pad_batch(batch, batch_size), mesh)
    sums = eval_step(variables, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  if totals is None:
    raise ValueError('Evaluation got no examples.')
  totals = jax.device_get(totals)
  count = float(totals.pop('count'))
  return {'count': int(round(count)), **{k: float(v) / count for k, v in totals.items()}}
