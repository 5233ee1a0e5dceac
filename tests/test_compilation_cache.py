"""cli.enable_compilation_cache: the size cap holds, also over a folder filled while no cap was set.

Each phase runs in its own process: JAX opens its persistent cache once per process.
"""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_COMPILE = """
import sys
import jax, jax.numpy as jnp
from experiments import cli
cache_dir, max_bytes, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cli.enable_compilation_cache(cache_dir, min_compile_seconds=0.0, max_bytes=max_bytes)
jax.config.update("jax_raise_persistent_cache_errors", True)  # a failed write or eviction fails the test
for k in range(first, first + count):  # one distinct program per k
  jax.jit(lambda x, k=k: jnp.cumsum(x) * k)(jnp.ones(1000 + k)).block_until_ready()
"""


def _compile(cache_dir, max_bytes, first, count):
  done = subprocess.run([sys.executable, "-c", _COMPILE, str(cache_dir), str(max_bytes), str(first), str(count)],
                        cwd=REPO, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-2000:]


def _programs(cache_dir):
  return {name: os.path.getsize(os.path.join(cache_dir, name)) for name in os.listdir(cache_dir)
          if name.endswith("-cache")}


def test_cap_evicts_the_oldest_programs_including_uncapped_ones(tmp_path):
  _compile(tmp_path, 0, first=0, count=12)  # no cap: programs without last-use stamps
  uncapped = _programs(tmp_path)
  assert len(uncapped) >= 12
  cap = sum(uncapped.values()) // 2
  _compile(tmp_path, cap, first=100, count=6)
  kept = _programs(tmp_path)
  assert sum(kept.values()) <= cap
  assert set(kept) - set(uncapped)  # the new programs were written ...
  assert len(set(uncapped) - set(kept)) >= len(uncapped) // 2  # ... and old ones evicted to make room
