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


def make_optimizer(learning_rate: float, clip_global_norm: float = 0.0,
                   lazy_rows: tuple[str, ...] = ()) -> optax.GradientTransformation:
  """Adam (after global-norm clipping when `clip_global_norm` > 0).

  Parameters named in `lazy_rows` (embedding tables) get row-lazy Adam, as PyTorch's SparseAdam: a row
  absent from the batch (all-zero gradient) keeps its moments and does not move.
  """
  # The same state structure as optax.adam, so checkpoints restore whichever variant wrote them.
  adam = optax.adam(learning_rate) if not lazy_rows else optax.chain(
      scale_by_lazy_row_adam(lazy_rows), optax.scale_by_learning_rate(learning_rate))
  if clip_global_norm > 0:
    return optax.chain(optax.clip_by_global_norm(clip_global_norm), adam)
  return adam


def scale_by_lazy_row_adam(lazy_rows: tuple[str, ...]) -> optax.GradientTransformation:
  """optax.scale_by_adam, except that rows of the named parameters with an all-zero gradient are left alone.

  The bias correction counts every step, as SparseAdam's per-tensor step count does.
  """
  inner = optax.scale_by_adam()

  def is_lazy(path) -> bool:
    return any(getattr(k, "key", None) in lazy_rows for k in path)

  def keep(path, grad, new, old):
    """`new` where the row had a gradient, `old` elsewhere (rows of lazy parameters only)."""
    if not is_lazy(path):
      return new
    present = jnp.any(grad != 0, axis=tuple(range(1, grad.ndim)), keepdims=True)
    return jnp.where(present, new, old)

  def update(grads, state, params=None):
    updates, new_state = inner.update(grads, state, params)
    updates = jax.tree_util.tree_map_with_path(lambda p, g, u: keep(p, g, u, jnp.zeros_like(u)), grads, updates)
    mu = jax.tree_util.tree_map_with_path(keep, grads, new_state.mu, state.mu)
    nu = jax.tree_util.tree_map_with_path(keep, grads, new_state.nu, state.nu)
    return updates, new_state._replace(mu=mu, nu=nu)

  return optax.GradientTransformation(inner.init, update)


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
