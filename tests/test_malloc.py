"""The allocator settings the CLI applies keep large buffers off mmap."""

import subprocess
import sys
import textwrap

_MMAPPED_BYTES = textwrap.dedent('''
    import ctypes, sys
    from tfx_jax import malloc
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
