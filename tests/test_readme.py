"""The README's commands and Python example stay true."""

import os
import re

ROOT = os.path.join(os.path.dirname(__file__), '..')


def readme():
  with open(os.path.join(ROOT, 'README.md')) as f:
    return f.read()


def test_first_lines_are_the_two_commands_and_ci_runs_the_test_one():
  first_block = re.search(r'```bash\n(.*?)```', readme(), re.S).group(1)
  assert [l.split('#')[0].strip() for l in first_block.splitlines()] == ['make demo', 'make test']
  with open(os.path.join(ROOT, '.ci', 'run')) as f:
    assert f.read().strip().splitlines()[-1] == 'make test'


def test_python_example_runs():
  (code,) = re.findall(r'```python\n(.*?)```', readme(), re.S)
  exec(compile(code, 'README.md', 'exec'), {})  # pylint: disable=exec-used


def test_documented_config_files_exist():
  for path in set(re.findall(r'configs/\w+\.py', readme())):
    assert os.path.exists(os.path.join(ROOT, path)), path


def test_linked_files_exist():
  # Links and images into the repository (figures, docs), not web addresses.
  targets = set(re.findall(r'\]\(([^)#\s]+)', readme()))
  local = [t for t in targets if not re.match(r'[a-z]+://', t)]
  assert 'docs/fashion_mnist/report/over_time.png' in local
  missing = [t for t in local if not os.path.exists(os.path.join(ROOT, t))]
  assert not missing, missing
