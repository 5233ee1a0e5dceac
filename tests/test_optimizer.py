"""make_optimizer: row-lazy Adam (the original PARSRec's SparseAdam) against a plain numpy Adam per row."""
import jax.numpy as jnp
import numpy as np

from recsys_jax.training import steps


def _numpy_sparse_adam(grads, lr, b1=0.9, b2=0.999, eps=1e-8):
  """PyTorch SparseAdam on one table: moments of a row move only when it has a gradient; the step count
  (bias correction) is the tensor's."""
  m = np.zeros_like(grads[0])
  v = np.zeros_like(grads[0])
  w = np.zeros_like(grads[0])
  for t, g in enumerate(grads, start=1):
    rows = np.any(g != 0, axis=1)
    m[rows] = b1 * m[rows] + (1 - b1) * g[rows]
    v[rows] = b2 * v[rows] + (1 - b2) * g[rows] ** 2
    w[rows] -= lr * (m[rows] / (1 - b1 ** t)) / (np.sqrt(v[rows] / (1 - b2 ** t)) + eps)
  return w


def test_lazy_rows_match_sparse_adam_and_other_parameters_stay_dense():
  rng = np.random.default_rng(0)
  grads = []
  for _ in range(6):
    g = rng.normal(size=(5, 3)).astype(np.float32)
    g[rng.random(5) < 0.5] = 0.0                 # rows absent from this batch
    grads.append(g)
  tx = steps.make_optimizer(0.01, lazy_rows=("table",))
  dense = steps.make_optimizer(0.01)
  params = {"table": jnp.zeros((5, 3)), "w": jnp.zeros((5, 3))}
  state, dense_state = tx.init(params), dense.init(params)
  lazy_w = dense_w = params
  for g in grads:
    updates, state = tx.update({"table": jnp.asarray(g), "w": jnp.asarray(g)}, state, lazy_w)
    lazy_w = {k: lazy_w[k] + updates[k] for k in params}
    d_updates, dense_state = dense.update({"table": jnp.asarray(g), "w": jnp.asarray(g)}, dense_state, dense_w)
    dense_w = {k: dense_w[k] + d_updates[k] for k in params}
  np.testing.assert_allclose(lazy_w["table"], _numpy_sparse_adam(grads, 0.01), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(lazy_w["w"], dense_w["w"], rtol=1e-6)       # not named: plain Adam
  assert not np.allclose(dense_w["table"], lazy_w["table"])              # dense Adam moves absent rows


def test_lazy_variant_has_the_checkpoint_structure_of_plain_adam():
  import jax
  params = {"table": jnp.zeros((2, 2)), "w": jnp.zeros(3)}
  for clip in (0.0, 30.0):
    a = steps.make_optimizer(1e-3, clip, ("table",)).init(params)
    b = steps.make_optimizer(1e-3, clip).init(params)
    assert jax.tree.structure(a) == jax.tree.structure(b)
