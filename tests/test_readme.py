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


def test_documented_config_files_and_modules_exist():
  text = ''.join(open(page).read() for page in markdown_files())
  for path in set(re.findall(r'(?:configs|tfx_jax)/[\w/]+\.py', text)):
    assert os.path.exists(os.path.join(ROOT, path)), path


def test_readme_shows_the_results_figure():
  assert '](docs/fashion_mnist/report/over_time.png)' in readme()


def markdown_files():
  yield os.path.join(ROOT, 'README.md')
  for folder, _, names in os.walk(os.path.join(ROOT, 'docs')):
    yield from (os.path.join(folder, n) for n in sorted(names) if n.endswith('.md'))


def outside_fences(text):
  return re.sub(r'^```.*?^```', '', text, flags=re.S | re.M)


def outside_code(text):
  """The text with fenced code blocks and inline code blanked out."""
  return re.sub(r'`[^`\n]*`', '', outside_fences(text))


def anchors(path):
  """GitHub's heading anchors: lowercase, punctuation dropped, spaces to hyphens,
  repeats numbered -1, -2, ..."""
  with open(path) as f:
    headings = re.findall(r'^#{1,6}\s+(.*?)\s*#*\s*$', outside_fences(f.read()), re.M)
  seen, out = {}, set()
  for heading in headings:
    slug = re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    out.add(slug if n == 0 else f'{slug}-{n}')
  return out


def test_every_relative_link_and_anchor_resolves():
  broken, checked = [], 0
  for source in markdown_files():
    with open(source) as f:
      links = re.findall(r'\]\(([^)\s]+)(?:\s+"[^"]*")?\)', outside_code(f.read()))
    for link in links:
      if re.match(r'[a-z]+:', link):
        continue  # https://, mailto:
      checked += 1
      path, _, anchor = link.partition('#')
      target = os.path.normpath(os.path.join(os.path.dirname(source), path)) if path else source
      where = f'{os.path.relpath(source, ROOT)}: ({link})'
      if not os.path.exists(target):
        broken.append(f'{where}: no file {os.path.relpath(target, ROOT)}')
      elif anchor:
        page = os.path.join(target, 'README.md') if os.path.isdir(target) else target
        if not page.endswith('.md') or anchor not in anchors(page):
          broken.append(f'{where}: no heading #{anchor} in {os.path.relpath(page, ROOT)}')
  assert checked > 20 and not broken, '\n'.join(broken)


def test_anchors_follow_githubs_rule(tmp_path):
  page = tmp_path / 'page.md'
  page.write_text('# Run on a TPU VM\n\n## Same grid, another topology\n\n'
                  '```\n# not a heading\n```\n## Same grid, another topology\n'
                  '### One process a core (`--local_shards`)\n')
  assert anchors(str(page)) == {'run-on-a-tpu-vm', 'same-grid-another-topology',
                                'same-grid-another-topology-1',
                                'one-process-a-core---local_shards'}
