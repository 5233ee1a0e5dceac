"""host.tune_cpu_host: XLA flags are added without overriding the user's, and glibc takes the options."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PROBE = """
import os
from recsys_jax.training import host
print(host.tune_cpu_host())
print(os.environ["XLA_FLAGS"])
"""


def _probe(xla_flags):
  env = dict(os.environ, XLA_FLAGS=xla_flags)
  out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, cwd=REPO,
                       check=True).stdout.splitlines()
  return out[0] == "True", out[1]


def test_flags_are_added_and_the_users_win():
  took, flags = _probe("--xla_force_host_platform_device_count=2")
  assert took  # glibc (Linux CI)
  assert flags.split() == ["--xla_force_host_platform_device_count=2", "--xla_cpu_use_fusion_emitters=false"]
  _, flags = _probe("--xla_cpu_use_fusion_emitters=true")
  assert flags == "--xla_cpu_use_fusion_emitters=true"
