"""Tasks (protocols). Each task module also provides `tiny_task(seed)`: a small synthetic instance for tests."""
import importlib

from recsys_jax.tasks.base import Task


def tiny_task(name: str, seed: int = 0) -> Task:
  """A seconds-sized synthetic instance of task `name`; the contract test runs every model on one."""
  return importlib.import_module(f"recsys_jax.tasks.{name}").tiny_task(seed)
