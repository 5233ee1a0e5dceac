"""Shared pytest fixtures."""
import os

import pytest

from recsys_jax.training import host

host.tune_cpu_host()  # the allocator and XLA settings of the command lines, before JAX starts

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATASETS = os.path.join(REPO_ROOT, "..", "shared", "datasets")


@pytest.fixture
def shared_dataset():
  """Returns a function giving the path of a real dataset under ../shared/datasets, skipping if absent."""

  def get(*parts: str) -> str:
    path = os.path.normpath(os.path.join(SHARED_DATASETS, *parts))
    if not os.path.exists(path):
      pytest.skip(f"real data not available: {path} is absent (tests read ../shared/datasets beside the "
                  "checkout; see data/README.md for where to get it)")
    return path

  return get


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """Many tests build fresh jitted steps over the same shapes; JAX's persistent cache compiles each once."""
  from experiments import cli
  cli.enable_compilation_cache(str(tmp_path_factory.mktemp("jax_cache")), min_compile_seconds=0.2)
