"""The allocator settings the CLI applies keep large buffers off mmap."""

import os
import subprocess
import sys
import textwrap

import pytest

_MMAPPED_BYTES = textwrap.dedent('''
    import ctypes, sys
    from tfx_jax.training import malloc
    if sys.argv[1] == 'tuned':
      assert malloc.tune()
    class MallInfo2(ctypes.Structure):
      _fields_ = [(name, ctypes.c_size_t) for name in (
          'arena', 'ordblks', 'smblks', 'hblks', 'hblkhd', 'usmblks', 'fsmblks',
          'uordblks', 'fordblks', 'keepcost')]
    libc = ctypes.CDLL('libc.so.6')
    libc.malloc.restype = ctypes.c_void_p
    libc.mallinfo2.restype = MallInfo2
    before = libc.mallinfo2().hblkhd  # Bytes held in mmapped blocks.
    buffer = libc.malloc(64 << 20)  # An activation-sized buffer.
    print(libc.mallinfo2().hblkhd - before)
''')


def _mmapped_bytes(mode):
  out = subprocess.run([sys.executable, '-c', _MMAPPED_BYTES, mode], check=True,
                       capture_output=True, text=True)
  return int(out.stdout)


def test_tuned_malloc_serves_large_buffers_from_the_heap():
  # glibc's default maps a 64 MiB block, and unmaps it when freed, so every
  # train step faults its activations in again; tuned, the heap keeps it.
  assert _mmapped_bytes('default') >= 64 << 20
  assert _mmapped_bytes('tuned') == 0


_BACKEND_IS_CPU = textwrap.dedent('''
    import os
    import jax  # As main.py does, before it asks.
    from tfx_jax.training import malloc
    threads = len(os.listdir('/proc/self/task'))
    print(malloc.backend_is_cpu(), len(os.listdir('/proc/self/task')) - threads)
''')


def _backend_is_cpu(tmp_path, platforms, plugin=False):
  env = {k: v for k, v in os.environ.items() if k not in ('JAX_PLATFORMS', 'PYTHONPATH')}
  if platforms is not None:
    env['JAX_PLATFORMS'] = platforms
  if plugin:  # What a CUDA or ROCm plugin package installs, found as JAX finds it.
    os.makedirs(tmp_path / 'jax_plugins' / 'fake_gpu', exist_ok=True)
    (tmp_path / 'jax_plugins' / 'fake_gpu' / '__init__.py').write_text(
        'raise RuntimeError("a plugin must not be imported to be found")\n')
    env['PYTHONPATH'] = str(tmp_path)
  out = subprocess.run([sys.executable, '-c', _BACKEND_IS_CPU], check=True, env=env,
                       cwd=os.path.dirname(os.path.dirname(__file__)),
                       capture_output=True, text=True).stdout.split()
  assert out[1] == '0'  # Decided without starting a backend (no new thread).
  return out[0] == 'True'


@pytest.mark.parametrize('platforms, plugin, cpu', [
    (None, False, True),  # Only the CPU can be the backend here.
    (None, True, False),  # An accelerator plugin: JAX would prefer its device.
    ('cpu', True, True),
    ('cpu,cuda', True, True),  # The first listed is the default.
    ('cuda', False, False),
    ('tpu,cpu', False, False),
])
def test_malloc_is_tuned_for_the_cpu_backend_only(tmp_path, platforms, plugin, cpu):
  assert _backend_is_cpu(tmp_path, platforms, plugin) == cpu
