"""Data-parallel placement on a `jax.sharding.Mesh` with one `data` axis.

The batch's leading axis is split over the `data` axis; parameters and optimizer state are replicated. The
same code runs on 1 or N devices: only the mesh changes. Later, large embedding tables can be sharded by rows
over a `model` axis by changing `state_sharding`.
"""
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: list | None = None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def round_up_batch(batch_size: int, mesh: Mesh) -> int:
  """The smallest batch size >= `batch_size` that splits evenly over the data axis."""
  n = mesh.shape[DATA_AXIS]
  return -(-batch_size // n) * n
