"""A model's transferable layer groups, read from its parameter tree: the
default ones (`default`), the head that no group may hold (`head`), and the
checks of groups a user names (`check`), each problem one clear line.

Paths are '/'-joined keys (`Transformer/encoderblock_0`); a group joins
paths with '+'. The default groups fit the network as its authors wrote it:
when one container (big_vision's `Transformer`, an `nnx.List` or
`nnx.Sequential` of blocks, a `backbone`) holds most of the parameters, its
children are the groups, in order; otherwise every top-level module but the
head is one. Bare parameters (a ViT's `pos_embedding`, `cls`) are no layer:
they join the first module's group ('embedding+pos_embedding+cls').
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence

from tfx_jax.errors import UserError


def _size(tree) -> int:
  if isinstance(tree, Mapping):
    return sum(_size(v) for v in tree.values())
  return math.prod(getattr(tree, 'shape', ()))


def _level(tree: Mapping, prefix: tuple[str, ...] = ()) -> tuple[tuple[str, ...], Mapping]:
  """Down through levels of one module each (an nnx.Sequential's `layers`, a
  model that is one Sequential): (the path, the first level of several)."""
  while len(tree) == 1 and isinstance(next(iter(tree.values())), Mapping):
    key = next(iter(tree))
    prefix, tree = (*prefix, str(key)), tree[key]
  return prefix, tree


def head(params: Mapping) -> str:
  """The head's path: the last entry of the params tree's top level."""
  prefix, tree = _level(params)
  return '/'.join((*prefix, str(list(tree)[-1])))


def _container(tree: Mapping, names: Sequence, total: int):
  """The entry among `names` that holds more than half of `total` parameters
  in two or more modules, or None."""
  for name in names:
    if isinstance(tree[name], Mapping) and 2 * _size(tree[name]) > total:
      _, inner = _level(tree[name])
      if sum(isinstance(v, Mapping) for v in inner.values()) >= 2:
        return name
  return None


def default(params: Mapping) -> tuple[str, ...]:
  """The default groups of a params tree (see the module's doc)."""
  prefix, tree = _level(params)
  names = list(tree)[:-1]  # The last entry is the head.
  container = _container(tree, names, _size(params))
  entries = []  # (path, is a module), in order.
  for name in names:
    if name == container:
      inner_prefix, inner = _level(tree[name], (*prefix, str(name)))
      entries += [((*inner_prefix, str(k)), isinstance(v, Mapping)) for k, v in inner.items()]
    else:
      entries.append(((*prefix, str(name)), isinstance(tree[name], Mapping)))
  modules = ['/'.join(path) for path, is_module in entries if is_module]
  bare = ['/'.join(path) for path, is_module in entries if not is_module]
  if not modules:
    return tuple(bare)
  return ('+'.join([modules[0], *bare]), *modules[1:])


def _prefixes(params: Mapping) -> list[str]:
  """Every path that names a module or a parameter, in order."""
  out = []

  def walk(tree, prefix):
    for key, value in tree.items():
      out.append('/'.join((*prefix, str(key))))
      if isinstance(value, Mapping):
        walk(value, (*prefix, str(key)))

  walk(params, ())
  return out


def _unknown(model: str, group: str, path: str, params: Mapping) -> UserError:
  """The error for `path` matching nothing: the paths near it, the closest."""
  known = _prefixes(params)
  parent = path.split('/')[:-1]
  while parent and '/'.join(parent) not in known:
    parent.pop()
  under = '/'.join(parent)
  near = [p for p in known if p.count('/') == len(parent)
          and (not under or p.startswith(under + '/'))]
  shown = ', '.join(near[:12]) + (f' and {len(near) - 12} more' if len(near) > 12 else '')
  close = difflib.get_close_matches(path, known, n=1, cutoff=0.6)
  hint = f'Did you mean {close[0]!r}? ' if close else ''
  where = f'The paths under {under!r} are' if under else 'Its top-level layers are'
  return UserError(f'Layer group {group!r} of model {model!r}: {path!r} matches no '
                   f'parameter. {hint}{where} {shown} (nested paths as a/b, groups '
                   f'joined by +).')


def check(model: str, params: Mapping, chosen: Sequence[str]) -> None:
  """Each group's paths match parameters, no parameter is in two groups, and
  no group holds the head (re-initialised in every transplant)."""
  flat = ['/'.join(str(k) for k in path) for path in _leaves(params)]
  seen = []  # (path, group)
  for group in chosen:
    for path in group.split('+'):
      if not any(p == path or p.startswith(path + '/') for p in flat):
        raise _unknown(model, group, path, params)
      for other, other_group in seen:
        if path == other or path.startswith(other + '/') or other.startswith(path + '/'):
          if group == other_group:
            raise UserError(f'config.layer_groups repeats group {group!r}: n counts '
                            f'groups, so each is named once; e.g. --config.layer_groups='
                            f'{",".join(dict.fromkeys(chosen))}.')
          raise UserError(f'config.layer_groups has {other!r} in group {other_group!r} '
                          f'and {path!r} in group {group!r}: a parameter is in one group '
                          f'at most; name each path in one group.')
      seen.append((path, group))
  last = head(params)
  for path, group in seen:
    if path == last or path.startswith(last + '/') or last.startswith(path + '/'):
      raise UserError(f'config.layer_groups puts the head {last!r} (the model\'s last '
                      f'layer) in group {group!r}: the head is re-initialised in every '
                      f'transplant, so no group may hold it; leave it out.')


def _leaves(tree: Mapping, prefix: tuple = ()):
  for key, value in tree.items():
    if isinstance(value, Mapping):
      yield from _leaves(value, (*prefix, key))
    else:
      yield (*prefix, key)
