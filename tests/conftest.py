"""Test set-up: four fake CPU devices, so every sharded code path really shards."""

import os

# Must happen before the first `import jax` anywhere in the test process.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=4').strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
