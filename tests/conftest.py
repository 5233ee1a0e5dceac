"""Shared pytest fixtures."""
import os

import pytest

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
