"""The one generic train step and eval step, jitted for the mesh.

The model supplies pure `init`/`apply`; the task supplies `loss` and `eval_outputs`. The train state is a plain
dict pytree `{"step", "params", "model_state", "opt_state"}`, donated to each step so its buffers are reused.
The step's RNG is `fold_in(rng, step)`, so a resumed run draws the same dropout masks as an uninterrupted one.
"""
from typing import Any

import jax
import jax.numpy as jnp
import optax

from recsys_jax.models.registry import ModelDef
from recsys_jax.tasks.base import Task
from recsys_jax.training import mesh as mesh_lib

TrainState = dict[str, Any]


def make_optimizer(learning_rate: float, clip_global_norm: float = 0.0) -> optax.GradientTransformation:
  adam = optax.adam(learning_rate)
  if clip_global_norm > 0:
    return optax.chain(optax.clip_by_global_norm(clip_global_norm), adam)
  return adam


def init_state(model: ModelDef, model_config: Any, tx: optax.GradientTransformation, rng: jax.Array,
               example_batch: dict, mesh) -> TrainState:
  """Initialises parameters and optimizer state directly with replicated placement."""

  def init(rng, batch):
    variables = model.init(model_config, rng, batch)
    params = variables.pop("params")
    return {"step": jnp.zeros((), jnp.int32), "params": params, "model_state": variables,
            "opt_state": tx.init(params)}

  return jax.jit(init, out_shardings=mesh_lib.replicated(mesh))(rng, example_batch)


def make_train_step(model: ModelDef, model_config: Any, task: Task, tx: optax.GradientTransformation, mesh):
  """Returns `train_step(state, batch, rng) -> (state, measurements)`, jitted with the state donated."""

  def train_step(state: TrainState, batch: dict, rng: jax.Array):
    step_rng = jax.random.fold_in(rng, state["step"])

    def loss_fn(params):
      variables = {"params": params, **state["model_state"]}
      outputs, model_state = model.apply(model_config, variables, batch, train=True, rng=step_rng)
      loss, aux = task.loss(outputs, batch)
      return loss, (aux, model_state)

    (loss, (aux, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    new_state = {"step": state["step"] + 1, "params": params, "model_state": model_state,
                 "opt_state": opt_state}
    return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads), **aux}

  rep, data = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
  return jax.jit(train_step, donate_argnums=(0,), in_shardings=(rep, data, rep), out_shardings=(rep, rep))


def make_eval_step(model: ModelDef, model_config: Any, task: Task, mesh):
  """Returns `eval_step(params, model_state, batch) -> per-row outputs`, jitted, batch-sharded."""

  def eval_step(params, model_state, batch):
    outputs, _ = model.apply(model_config, {"params": params, **model_state}, batch, train=False)
    return task.eval_outputs(outputs, batch)

  rep, data = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
  return jax.jit(eval_step, in_shardings=(rep, rep, data), out_shardings=data)


def num_params(params) -> int:
  return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
