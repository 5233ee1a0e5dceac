"""SLi-Rec / A2SVD: parameter counts of the original, padding invariance, the quirks option, learning."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recsys_jax import models, tasks
from recsys_jax.training import mesh as mesh_lib, steps, trainer


@pytest.fixture(scope="module")
def task():
  return tasks.tiny_task("sequential_ctr")


def _non_embedding_params(params) -> int:
  leaves = jax.tree_util.tree_leaves_with_path(params)
  return sum(x.size for path, x in leaves if "embedding" not in jax.tree_util.keystr(path))


@pytest.mark.parametrize("name,expected", [("a2svd", 16_597), ("slirec", 68_759)])
def test_parameter_counts_match_recommenders(task, name, expected):
  model = models.get(name)
  config = trainer.model_config_for(model, task)
  variables = model.init(config, jax.random.PRNGKey(0), task.example_batch(8))
  assert _non_embedding_params(variables["params"]) == expected


def _eval_scores(model, config, variables, batch):
  return np.asarray(model.apply(config, variables, batch, train=False)[0])


def _with_extra_padding(batch, extra):
  """Widens the history by `extra` padded columns holding garbage ids and times (mask 0)."""
  out = dict(batch)
  rng = np.random.default_rng(0)
  for key in ("hist_item", "hist_cate"):
    garbage = rng.integers(1, 5, size=(batch[key].shape[0], extra)).astype(batch[key].dtype)
    out[key] = np.concatenate([batch[key], garbage], axis=1)
  for key in ("time_first", "time_now"):
    out[key] = np.concatenate([batch[key], rng.normal(size=(batch[key].shape[0], extra)).astype(np.float32)], 1)
  out["hist_mask"] = np.concatenate([batch["hist_mask"], np.zeros((batch["hist_mask"].shape[0], extra),
                                                                 np.float32)], 1)
  # Garbage also inside each row's own padding.
  pad = out["hist_mask"] == 0
  out["hist_item"] = np.where(pad, 3, out["hist_item"])
  return out


@pytest.mark.parametrize("name", ["a2svd", "slirec"])
def test_padding_does_not_change_scores(task, name):
  model = models.get(name)
  config = trainer.model_config_for(model, task)
  batch = next(task.eval_batches("valid", 16))
  variables = model.init(config, jax.random.PRNGKey(0), batch)
  base = _eval_scores(model, config, variables, batch)
  padded = _eval_scores(model, config, variables, _with_extra_padding(batch, 7))
  np.testing.assert_allclose(base, padded, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["a2svd", "slirec"])
def test_original_quirks_attend_to_padding(task, name):
  model = models.get(name)
  config = trainer.model_config_for(model, task, original_quirks=True)
  batch = next(task.eval_batches("valid", 16))
  variables = model.init(config, jax.random.PRNGKey(0), batch)
  # Train-free init gives near-uniform attention; scale embeddings so padding ids matter visibly.
  variables = jax.tree_util.tree_map(lambda x: x * 50, variables)
  base = _eval_scores(model, config, variables, batch)
  padded = _eval_scores(model, config, variables, _with_extra_padding(batch, 7))
  assert np.abs(base - padded).max() > 1e-4


@pytest.mark.parametrize("name", ["popularity", "a2svd", "slirec"])
def test_one_train_step_lowers_the_loss(task, name):
  model = models.get(name)
  config = trainer.model_config_for(model, task)
  mesh = mesh_lib.make_mesh()
  tx = steps.make_optimizer(1e-2)
  batch = next(iter(task.train_batches(64, np.random.default_rng(0))))
  state = steps.init_state(model, config, tx, jax.random.PRNGKey(0), batch, mesh)
  rng = jax.random.PRNGKey(3)

  def loss_at(params, model_state):
    variables = {"params": params, **model_state}
    outputs, _ = model.apply(config, variables, batch, train=True, rng=jax.random.fold_in(rng, 0))
    return float(task.loss(outputs, batch)[0])

  before = loss_at(state["params"], state["model_state"])
  assert before == pytest.approx(np.log(5), abs=0.05)  # untrained: uniform over each 1+4 group
  step = steps.make_train_step(model, config, task, tx, mesh)
  state, _ = step(state, batch, rng)  # donates the old state
  # Same batch, same dropout mask; BatchNorm uses batch statistics in training mode.
  assert loss_at(state["params"], state["model_state"]) < before


def test_group_softmax_loss_is_mean_negative_log_likelihood_of_the_positive(task):
  logits = jnp.array([[2.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0, 1.0]])
  batch = {"weight": np.array([1.0, 1.0], np.float32)}
  loss, _ = task.loss(logits, batch)
  expected = np.mean([-np.log(np.exp(2) / (np.exp(2) + 4)), -np.log(1 / (1 + 4 * np.e))])
  assert float(loss) == pytest.approx(expected, rel=1e-6)
  # A padded row (weight 0) does not count.
  loss_padded, _ = task.loss(jnp.concatenate([logits, jnp.full((1, 5), 9.0)]),
                             {"weight": np.array([1.0, 1.0, 0.0], np.float32)})
  assert float(loss_padded) == pytest.approx(expected, rel=1e-6)


def test_packed_attention_equals_dense_without_padding(task):
  """With no padding the fixes change nothing: packed (default) and dense (quirks) paths agree in training."""
  from recsys_jax.tasks.sequential_ctr import pack_positions
  model = models.get("slirec")
  batch = dict(next(iter(task.train_batches(16, np.random.default_rng(0)))))
  width = batch["hist_mask"].shape[1]
  batch["hist_len"] = np.full_like(batch["hist_len"], width)
  batch["hist_mask"] = np.ones_like(batch["hist_mask"])
  batch["hist_item"] = np.where(batch["hist_item"] == 0, 1, batch["hist_item"])
  batch.update(pack_positions(batch["hist_mask"] * batch["weight"][:, None]))
  outs = []
  for quirks in (False, True):
    config = trainer.model_config_for(model, task, original_quirks=quirks, dropout=0.0)
    variables = model.init(config, jax.random.PRNGKey(0), batch)
    variables = jax.tree_util.tree_map(lambda x: x * 20, variables)  # make the attention non-uniform
    outs.append(np.asarray(model.apply(config, variables, batch, train=True, rng=jax.random.PRNGKey(1))[0]))
  np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-4)
