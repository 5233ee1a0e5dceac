"""Name -> model definition. A model is a config dataclass plus pure `init` and `apply` functions.

`init(config, rng, batch) -> variables` and
`apply(config, variables, batch, *, train, rng) -> (outputs, updated_model_state)` are pure functions over
pytrees; `variables` is `{"params": ..., **model_state}` (model_state holds e.g. BatchNorm statistics).
The task named by `task` supplies the batches, the loss over `outputs`, and the metrics.
Registering a model is enough for the contract test to run it through init, a train step and evaluation.
"""
import dataclasses
from typing import Any, Callable

Variables = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ModelDef:
  name: str
  task: str                  # task family, e.g. "sequential_ctr"
  config_cls: type           # a dataclass holding every architecture default
  init: Callable[..., Variables]
  apply: Callable[..., tuple[Any, Variables]]
  description: str = ""
  # Embedding tables trained with row-lazy Adam (the original's SparseAdam): rows absent from a batch stay put.
  sparse_params: tuple[str, ...] = ()
  # Config fields that change only evaluation (k, ranking mode): `--inference_only` may change them.
  eval_only_fields: tuple[str, ...] = ()

  def config_from_json(self, values: dict[str, Any]) -> Any:
    """The config a run saved in config.json (JSON lists back to tuples; keys the config lacks are ignored)."""
    fields = {f.name for f in dataclasses.fields(self.config_cls)}
    return self.config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in fields})


_REGISTRY: dict[str, ModelDef] = {}


def register(model: ModelDef) -> ModelDef:
  if model.name in _REGISTRY:
    raise ValueError(f"model {model.name!r} is registered twice")
  _REGISTRY[model.name] = model
  return model


def get(name: str) -> ModelDef:
  if name not in _REGISTRY:
    raise KeyError(f"unknown model {name!r}; valid models: {', '.join(names())}")
  return _REGISTRY[name]


def names() -> list[str]:
  return sorted(_REGISTRY)


def linen_model(name: str, task: str, config_cls: type, module_fn: Callable[[Any], Any],
                description: str = "", sparse_params: tuple[str, ...] = (),
                eval_only_fields: tuple[str, ...] = ()) -> ModelDef:
  """Registers a Flax Linen module built by `module_fn(config)` as pure init/apply functions.

  The module is called as `module(batch, train=...)`; it may use the "dropout" RNG and the mutable
  "batch_stats" collection.
  """
  import jax

  def init(config, rng, batch):
    params_rng, dropout_rng = jax.random.split(rng)
    return dict(module_fn(config).init({"params": params_rng, "dropout": dropout_rng}, batch, train=False))

  def apply(config, variables, batch, *, train, rng=None):
    module = module_fn(config)
    if train:
      outputs, state = module.apply(variables, batch, train=True, rngs={"dropout": rng},
                                    mutable=[k for k in variables if k != "params"])
      return outputs, dict(state)
    outputs = module.apply(variables, batch, train=False)
    return outputs, {k: v for k, v in variables.items() if k != "params"}

  return register(ModelDef(name=name, task=task, config_cls=config_cls, init=init, apply=apply,
                           description=description, sparse_params=sparse_params,
                           eval_only_fields=eval_only_fields))
