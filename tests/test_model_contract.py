"""Every registered model goes through init, one train step and evaluation on its task's tiny data.

Registering a model is enough to be covered here.
"""
import jax
import numpy as np
import pytest

from recsys_jax import models, tasks
from recsys_jax.training import mesh as mesh_lib, steps, trainer


@pytest.mark.parametrize("name", models.names())
def test_model_contract(name):
  model = models.get(name)
  task = tasks.tiny_task(model.task)
  config = trainer.model_config_for(model, task)
  mesh = mesh_lib.make_mesh()
  tx = steps.make_optimizer(1e-3)
  batch_size = 16
  state = steps.init_state(model, config, tx, jax.random.PRNGKey(0), task.example_batch(batch_size), mesh)
  train_step = steps.make_train_step(model, config, task, tx, mesh)
  batch = next(iter(task.train_batches(batch_size, np.random.default_rng(0))))
  state, measurements = train_step(state, batch, jax.random.PRNGKey(1))
  assert int(state["step"]) == 1
  assert np.isfinite(float(measurements["loss"]))
  eval_step = steps.make_eval_step(model, config, task, mesh)
  metrics = trainer.evaluate(task, eval_step, state, "valid", batch_size)
  assert task.selection_metric in metrics
  assert all(np.isfinite(v) for v in metrics.values()), metrics
