"""The task protocol: a task owns its batch layout, its loss and its metrics; the trainer knows none of them.

Batches are dicts of numpy arrays with a leading batch axis of fixed size (the trainer shards that axis over
the mesh's `data` axis), so each jitted function compiles a bounded number of times. Padded rows carry
`weight == 0`.
"""
import abc
import dataclasses
import hashlib
from typing import Any, Iterable, Iterator

import jax.numpy as jnp
import numpy as np

Batch = dict[str, np.ndarray]


class Task(abc.ABC):
  """A protocol: inputs, loss and metrics for one family of models."""

  name: str
  # Early stopping and best-checkpoint selection watch this validation metric.
  selection_metric: str
  selection_mode: str = "max"  # "max" (higher is better) or "min"
  # Splits evaluated after every epoch (selection always uses "valid"); the test split is always evaluated
  # once more at the end with the best checkpoint.
  epoch_eval_splits: tuple[str, ...] = ("valid",)

  @abc.abstractmethod
  def model_dims(self) -> dict[str, int]:
    """Data-dependent model sizes (e.g. num_items); fills the matching fields of any model config."""

  @abc.abstractmethod
  def example_batch(self, batch_size: int) -> Batch:
    """A batch of the training layout, used to initialise a model's parameters."""

  @abc.abstractmethod
  def num_train_batches(self, batch_size: int) -> int:
    """How many batches `train_batches` yields per epoch."""

  @abc.abstractmethod
  def train_batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[Batch]:
    """One epoch of training batches; all randomness (order, negatives) comes from `rng`."""

  @abc.abstractmethod
  def loss(self, outputs: Any, batch: Batch) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Pure jnp: the scalar training loss and auxiliary scalars to log."""

  @abc.abstractmethod
  def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
    """The fixed evaluation batches of a split ("valid" or "test"), in a deterministic order."""

  @abc.abstractmethod
  def eval_outputs(self, outputs: Any, batch: Batch) -> dict[str, jnp.ndarray]:
    """Pure jnp, inside the jitted eval step: per-row arrays to gather on the host."""

  @abc.abstractmethod
  def compute_metrics(self, gathered: dict[str, np.ndarray]) -> dict[str, float]:
    """Metrics from the concatenated eval outputs of one split (padding rows already removed)."""

  @abc.abstractmethod
  def data_identity(self) -> dict[str, Any]:
    """What the trained parameters and the metrics depend on besides the model and train configs: a digest
    of the split arrays and the task's own settings. A workdir resumes only with the same identity."""

  def describe(self) -> dict[str, Any]:
    """Facts about the data worth writing into results.json."""
    return {}


def splits_digest(splits: Iterable[Any]) -> str:
  """Content digest of dataclasses of numpy arrays (the splits), shapes and dtypes included."""
  digest = hashlib.blake2b(digest_size=16)
  for split in splits:
    for field in dataclasses.fields(split):
      array = np.ascontiguousarray(getattr(split, field.name))
      digest.update(f"{field.name}{array.shape}{array.dtype.str}".encode())
      digest.update(array.data)
  return digest.hexdigest()
