"""Host settings for XLA on CPU, applied once at start-up, before JAX creates its runtime threads.

Measured on the 2-core development machine (BENCHMARKS.md): XLA allocates each train step's temporary buffer
(140 MB for SLi-Rec) from a worker thread. glibc serves a request that large from a thread arena with a fresh
mmap, and frees it with munmap, so every step page-faults its whole working set afresh (8 M faults in three
SLi-Rec epochs, a third of the CPU time in the kernel). One arena that never maps or trims keeps the pages.
XLA's older loop-fusion emitters compile the train steps about 25% faster at the same speed.
"""
import ctypes
import os

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
CPU_XLA_FLAGS = ("--xla_cpu_use_fusion_emitters=false",)


def tune_cpu_host() -> bool:
  """Sets the allocator options and the default XLA CPU flags; returns whether glibc took them.

  Flags already in the `XLA_FLAGS` environment variable win. A no-op off glibc; harmless on accelerators.
  """
  given = os.environ.get("XLA_FLAGS", "")
  extra = [f for f in CPU_XLA_FLAGS if f.split("=")[0] not in given]
  if extra:
    os.environ["XLA_FLAGS"] = " ".join([given] + extra).strip()
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return False
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, 64 << 20))
  return all(libc.mallopt(option, value) == 1 for option, value in settings)
