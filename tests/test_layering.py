"""The house's floors (tfx_jax.LAYERS): no module imports from a floor above its
own or from a sibling on its floor, and the report never imports JAX."""

import ast
import os
import subprocess
import sys

import tfx_jax

from conftest import ROOT

PACKAGE = os.path.join(ROOT, 'tfx_jax')
JAX_LIBRARIES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax', 'chex')
FLOOR = {unit: i for i, floor in enumerate(tfx_jax.LAYERS) for unit in floor}


def unit_of(relpath: str) -> str:
  """The room a file of tfx_jax/ is in: its subpackage, or its own module."""
  head = relpath.split(os.sep)[0]
  return head[:-3] if head.endswith('.py') else head


def imports(source: str):
  """(line, imported module, the statement) for every import, at any depth
  (inline ones too); `from tfx_jax import a, b` gives tfx_jax.a and tfx_jax.b."""
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name, f'import {alias.name}'
    elif isinstance(node, ast.ImportFrom):
      module = '.' * node.level + (node.module or '')
      names = ', '.join(alias.name for alias in node.names)
      statement = f'from {module} import {names}'
      if module == 'tfx_jax':
        for alias in node.names:
          yield node.lineno, f'tfx_jax.{alias.name}', statement
      else:
        yield node.lineno, module, statement


def violations(relpath: str, source: str) -> list[str]:
  """What breaks the rule in one file of tfx_jax/, one line each."""
  unit, out = unit_of(relpath), []
  where = f'tfx_jax/{relpath.replace(os.sep, "/")}'
  if unit not in FLOOR:
    return [f'{where}: {unit!r} is on no floor of tfx_jax.LAYERS; add it there.']
  for line, module, statement in imports(source):
    parts = module.split('.')
    if module.startswith('.'):
      out.append(f'{where}:{line} `{statement}`: a relative import; name tfx_jax.... in full.')
    elif unit == 'report' and parts[0] in JAX_LIBRARIES:
      out.append(f'{where}:{line} `{statement}`: the report never imports JAX.')
    elif parts[0] == 'tfx_jax' and len(parts) > 1 and parts[1] in FLOOR and parts[1] != unit:
      target = parts[1]
      if FLOOR[target] == FLOOR[unit]:
        out.append(f'{where}:{line} `{statement}`: {unit} and {target} are siblings on '
                   f'one floor of tfx_jax.LAYERS and do not import each other.')
      elif FLOOR[target] < FLOOR[unit]:
        out.append(f'{where}:{line} `{statement}`: {unit} (floor {FLOOR[unit]}) may not '
                   f'import {target} (floor {FLOOR[target]}, above it in tfx_jax.LAYERS).')
    elif parts[0] == 'tfx_jax' and len(parts) > 1 and parts[1] not in FLOOR:
      out.append(f'{where}:{line} `{statement}`: {parts[1]} is on no floor of tfx_jax.LAYERS.')
  return out


def sources():
  for folder, _, names in os.walk(PACKAGE):
    for name in sorted(names):
      if name.endswith('.py'):
        path = os.path.join(folder, name)
        relpath = os.path.relpath(path, PACKAGE)
        if relpath != '__init__.py':
          with open(path) as f:
            yield relpath, f.read()


def test_no_module_imports_upwards_or_sideways():
  found = [v for relpath, source in sources() for v in violations(relpath, source)]
  assert not found, '\n'.join(found)


def test_every_floor_names_a_room_that_exists():
  rooms = {unit_of(relpath) for relpath, _ in sources()}
  assert set(FLOOR) == rooms, (set(FLOOR) ^ rooms)


def test_the_rule_catches_what_it_forbids():
  assert violations('data/x.py', 'from tfx_jax.training import progress') == [
      'tfx_jax/data/x.py:1 `from tfx_jax.training import progress`: data (floor 5) may not '
      'import training (floor 4, above it in tfx_jax.LAYERS).']
  assert 'may not import grid' in violations('analysis/x.py', 'from tfx_jax.grid import runner')[0]
  assert 'siblings' in violations('models/x.py', 'def f():\n  from tfx_jax.data import splits')[0]
  assert 'never imports JAX' in violations('report/x.py', 'import jax.numpy as jnp')[0]
  assert 'on no floor' in violations('newroom/x.py', 'import os')[0]
  assert violations('grid/x.py', 'from tfx_jax import config, errors\n'
                                 'from tfx_jax.grid import results') == []


def test_the_report_loads_without_jax():
  """Not even through another module: the report runs where JAX is not installed."""
  names = sorted(f'tfx_jax.report.{n[:-3]}' for n in os.listdir(os.path.join(PACKAGE, 'report'))
                 if n.endswith('.py') and n not in ('__init__.py', '__main__.py'))
  code = (f'import sys\nfor n in {names!r}: __import__(n)\n'
          f'print(sorted({{m.split(".")[0] for m in sys.modules}} & {set(JAX_LIBRARIES)!r}))')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                       text=True, check=True).stdout
  assert len(names) >= 6 and out.strip() == '[]', out


def test_the_front_door_is_lazy_and_on_the_top_floor():
  """tfx_jax.Study, load, data.arrays and errors.UserError resolve after `import
  tfx_jax` alone, which imports no JAX (the CLIs and the report stay light);
  only Study (tfx_jax/study.py, a room of the top floor) brings JAX in."""
  assert 'study' in tfx_jax.LAYERS[0] and set(tfx_jax.FRONT_DOOR) >= {
      'Study', 'load', 'data', 'errors'}
  code = ('import sys, tfx_jax\n'
          'jax = lambda: sorted({m.split(".")[0] for m in sys.modules} & '
          f'{set(JAX_LIBRARIES)!r})\n'
          'first = jax()\n'
          'names = (tfx_jax.load, tfx_jax.data.arrays, tfx_jax.errors.UserError)\n'
          'second = jax()\n'
          'print(first, second, tfx_jax.Study.__module__, jax())')
  out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                       text=True, check=True).stdout
  first, second, module, third = out.split(' ', 3)
  assert (first, second, module) == ('[]', '[]', 'tfx_jax.study') and "'jax'" in third, out
