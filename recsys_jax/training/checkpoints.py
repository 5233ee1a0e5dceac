"""Orbax checkpoints in the workdir: the latest epoch (for resume) and the best one (for the test).

Each checkpoint stores the train state and a JSON `meta` dict (epoch, history, best metric, elapsed time),
so a killed run resumes where its last finished epoch left off.
"""
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from recsys_jax.errors import InputError


class Checkpoints:
  """`latest/` keeps the last epoch; `best/` keeps the epoch with the best validation metric."""

  def __init__(self, workdir: str):
    root = os.path.abspath(os.path.join(workdir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
    self._latest = ocp.CheckpointManager(os.path.join(root, "latest"), options=options)
    self._best = ocp.CheckpointManager(os.path.join(root, "best"), options=options)

  def latest_epoch(self) -> int | None:
    return self._latest.latest_step()

  def has_best(self) -> bool:
    return self._best.latest_step() is not None

  def save(self, epoch: int, state: Any, meta: dict, best: bool) -> None:
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    if best:
      self._best.save(epoch, args=args, force=True)
      self._best.wait_until_finished()
    self._latest.save(epoch, args=args, force=True)
    # Waiting keeps the next (donating) train step from racing the background write.
    self._latest.wait_until_finished()

  def latest_meta(self) -> dict:
    """The latest checkpoint's meta alone (to check a run's config before restoring its arrays)."""
    step = self._latest.latest_step()
    return dict(self._latest.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict]:
    return _restore(self._latest, self._latest.latest_step(), abstract_state)

  def restore_best(self, abstract_state: Any) -> tuple[Any, dict]:
    return _restore(self._best, self._best.latest_step(), abstract_state)

  def close(self) -> None:
    self._latest.close()
    self._best.close()


def _restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> tuple[Any, dict]:
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_state)
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                          meta=ocp.args.JsonRestore()))
  return restored["state"], dict(restored["meta"])


def restore_variables(workdir: str, which: str = "best") -> dict:
  """The model variables ({"params": ..., **model_state}) of a run's `which` checkpoint ("best" or "latest").

  Restored as saved, so neither the model nor its optimizer has to be rebuilt to describe the structure.
  """
  folder = os.path.abspath(os.path.join(workdir, "checkpoints", which))
  if not os.path.isdir(folder):  # checked first: orbax's manager would create the folder
    raise InputError(f"holds no {which} checkpoint: not the workdir of a finished run", path=workdir)
  manager = ocp.CheckpointManager(folder)
  try:
    step = manager.latest_step()
    if step is None:
      raise InputError(f"holds no {which} checkpoint: not the workdir of a finished run", path=workdir)
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  finally:
    manager.close()
  return {"params": state["params"], **state["model_state"]}
