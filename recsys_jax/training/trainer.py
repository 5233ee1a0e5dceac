"""`train_and_evaluate`: the one training loop every model of the library runs through.

Per epoch: train on the task's batches (data order and negatives from `default_rng([seed, epoch])`, dropout from
`fold_in(rng, step)`), evaluate on valid, checkpoint (latest + best by the task's selection metric), log one
line to `metrics.jsonl`. Stops early after `early_stop_patience` epochs without improvement. Finally restores
the best checkpoint, evaluates on test and writes `results.json`. A killed run restarted with the same workdir
resumes from the last finished epoch and ends with the same metrics as an uninterrupted one; a workdir refuses
another model, training config or data (the task's `data_identity`).
"""
import dataclasses
import json
import os
import time
from typing import Any, Callable

import jax
import numpy as np

from recsys_jax import files
from recsys_jax.errors import InputError
from recsys_jax.models.registry import ModelDef
from recsys_jax.tasks.base import Task
from recsys_jax.training import checkpoints, mesh as mesh_lib, steps
from recsys_jax.training.progress import Progress

# Config keys that may change when resuming (to extend a finished run with more epochs, say).
_RESUMABLE_CHANGES = ("epochs", "early_stop_patience")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  epochs: int = 10
  batch_size: int = 400
  eval_batch_size: int = 0  # 0: the training batch size
  learning_rate: float = 1e-3
  clip_global_norm: float = 0.0  # 0: no clipping
  early_stop_patience: int = 10
  seed: int = 42


def model_config_for(model: ModelDef, task: Task, **overrides) -> Any:
  """The model's default config with the task's data-dependent sizes and any overrides filled in."""
  fields = {f.name for f in dataclasses.fields(model.config_cls)}
  values = {k: v for k, v in task.model_dims().items() if k in fields}
  unknown = set(overrides) - fields
  if unknown:
    raise InputError(f"model {model.name!r} has no option(s) {sorted(unknown)}; it has {sorted(fields)}")
  return model.config_cls(**{**values, **overrides})


def train_and_evaluate(task: Task, model: ModelDef, model_config: Any, config: TrainConfig, workdir: str,
                       dataset_name: str, mesh=None, log=print,
                       on_epoch_end: Callable[[list[dict]], None] | None = None,
                       inference_only: bool = False) -> dict:
  """Trains, selects the best epoch on valid, tests it; returns (and writes) the results dict.

  `on_epoch_end(history)` runs after each epoch's checkpoint (plots, say). `inference_only` skips training
  and evaluates the best checkpoint already in `workdir`.
  """
  mesh = mesh or mesh_lib.make_mesh()
  n_dev = mesh.shape[mesh_lib.DATA_AXIS]
  if config.batch_size % n_dev:
    raise InputError(f"--batch_size {config.batch_size} must be a multiple of the {n_dev} devices")
  eval_batch_size = mesh_lib.round_up_batch(config.eval_batch_size or config.batch_size, mesh)
  if inference_only and not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise InputError("holds no checkpoint to evaluate; train first (without --inference_only)", path=workdir)
  os.makedirs(workdir, exist_ok=True)

  init_rng, train_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  tx = steps.make_optimizer(config.learning_rate, config.clip_global_norm, model.sparse_params)
  state = steps.init_state(model, model_config, tx, init_rng, task.example_batch(config.batch_size), mesh)
  run_config = {"model": model.name, "dataset": dataset_name, "task": task.name,
                "model_config": dataclasses.asdict(model_config), "train_config": dataclasses.asdict(config),
                "data_identity": task.data_identity()}
  meta = {"epoch": 0, "history": [], "best_epoch": 0, "best_value": None, "train_seconds": 0.0,
          "train_examples": 0, "config": run_config}

  ckpt = checkpoints.Checkpoints(workdir)
  if ckpt.latest_epoch() is not None:
    _check_same_run(ckpt.latest_meta()["config"], run_config, workdir,
                    model.eval_only_fields if inference_only else ())
    state, meta = ckpt.restore_latest(state)
    meta["config"] = run_config
    log(f"resuming from {workdir}: epoch {meta['epoch']} of {config.epochs} already done")
  elif inference_only:
    raise InputError("holds no checkpoint to evaluate; train first (without --inference_only)", path=workdir)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  files.write_text(metrics_path, "".join(_jsonl(r) for r in meta["history"]))
  files.write_json(os.path.join(workdir, "config.json"), run_config)

  train_step = steps.make_train_step(model, model_config, task, tx, mesh)
  eval_step = steps.make_eval_step(model, model_config, task, mesh)
  n_batches = task.num_train_batches(config.batch_size)
  better = (lambda a, b: a > b) if task.selection_mode == "max" else (lambda a, b: a < b)

  first_epoch = meta["epoch"] + 1  # this process compiles (or loads from the cache) the train step during it
  for epoch in range(first_epoch, 0 if inference_only else config.epochs + 1):
    if meta["best_value"] is not None and epoch - 1 - meta["best_epoch"] >= config.early_stop_patience:
      log(f"early stop: no {task.selection_metric} improvement for {config.early_stop_patience} epochs")
      break
    progress = Progress(n_batches, f"epoch {epoch}/{config.epochs}", unit="ex")
    start = time.perf_counter()
    state, train_loss, examples = train_epoch(task, train_step, state, config.batch_size,
                                              np.random.default_rng([config.seed, epoch]), train_rng, progress)
    seconds = time.perf_counter() - start
    if not np.isfinite(train_loss):
      raise FloatingPointError(f"training diverged at epoch {epoch}: loss {train_loss}")

    record = {"epoch": epoch, "step": int(state["step"]), "train_loss": train_loss,
              "epoch_train_seconds": seconds, "epoch_train_examples": examples,
              "includes_compilation": epoch == first_epoch}
    for split in task.epoch_eval_splits:
      record[split] = evaluate(task, eval_step, state, split, eval_batch_size)
    value = record["valid"][task.selection_metric]
    improved = meta["best_value"] is None or better(value, meta["best_value"])
    meta.update(epoch=epoch, train_seconds=meta["train_seconds"] + seconds,
                train_examples=meta["train_examples"] + examples, history=meta["history"] + [record])
    if improved:
      meta.update(best_epoch=epoch, best_value=value)
    ckpt.save(epoch, state, meta, best=improved)
    with open(metrics_path, "a", encoding="utf-8") as f:
      f.write(_jsonl(record))
    log(f"epoch {epoch}: train_loss {train_loss:.4f} | "
        + " | ".join(f"{split} {_fmt(record[split])}" for split in task.epoch_eval_splits) + (" *" if improved else ""))
    if on_epoch_end is not None:
      on_epoch_end(meta["history"])

  state, best_meta = ckpt.restore_best(state)
  # Evaluation-only settings may differ from training's under inference_only: valid is evaluated afresh.
  valid = (evaluate(task, eval_step, state, "valid", eval_batch_size) if inference_only
           else meta["history"][best_meta["epoch"] - 1]["valid"])
  start = time.perf_counter()
  test = evaluate(task, eval_step, state, "test", eval_batch_size)
  test_seconds = time.perf_counter() - start
  ckpt.close()
  results = {
      "model": model.name, "dataset": dataset_name, "task": task.name,
      "valid": valid, "test": test,
      "best_epoch": best_meta["epoch"], "epochs_run": meta["epoch"],
      "train_seconds": meta["train_seconds"],
      "train_examples_per_second": meta["train_examples"] / max(meta["train_seconds"], 1e-9),
      "steady_train_examples_per_second": _steady_rate(meta["history"]),
      "test_eval_seconds": test_seconds,
      "num_params": steps.num_params(state["params"]), "num_devices": n_dev,
      "backend": jax.default_backend(), "config": run_config, "data": task.describe(),
  }
  with open(metrics_path, "a", encoding="utf-8") as f:
    f.write(json.dumps({"epoch": best_meta["epoch"], "split": "test", "checkpoint": "best", **test}) + "\n")
  files.write_json(os.path.join(workdir, "results.json"), results)
  return results


def train_epoch(task: Task, train_step, state: dict, batch_size: int, data_rng: np.random.Generator,
                rng: jax.Array, progress: Progress | None = None) -> tuple[dict, float, int]:
  """One pass over the task's training batches: (new state, mean batch loss, real examples seen).

  Host batches go straight to the jitted step, whose input sharding splits them over the mesh (one transfer
  inside the call: cheaper than placing them beforehand).

  One step stays in flight: the host prepares the next batch while the device runs the current one, and
  holds at most two batches (dispatching them all at once would build every batch up front on the cores the
  steps need).
  """
  losses, examples = [], 0
  for batch in task.train_batches(batch_size, data_rng):
    n = int(batch["weight"].sum())
    state, measurements = train_step(state, batch, rng)
    losses.append(measurements["loss"])
    if len(losses) > 1:  # also makes the progress bar's rate the compute rate, not the dispatch rate
      losses[-2].block_until_ready()
    examples += n
    if progress is not None:
      progress.update(1, n)
  jax.block_until_ready(state)
  return state, float(np.mean(jax.device_get(losses))), examples


def _steady_rate(history: list[dict]) -> float | None:
  """Train examples per second over the epochs after each process's first (None when there are none)."""
  steady = [r for r in history if "epoch_train_examples" in r and not r["includes_compilation"]]
  seconds = sum(r["epoch_train_seconds"] for r in steady)
  return sum(r["epoch_train_examples"] for r in steady) / seconds if seconds > 0 else None


def _jsonl(record: dict) -> str:
  """One metrics.jsonl line per evaluated split of an epoch record."""
  common = {k: v for k, v in record.items() if not isinstance(v, dict)}
  return "".join(json.dumps({**common, "split": split, **metrics}) + "\n"
                 for split, metrics in record.items() if isinstance(metrics, dict))


def evaluate(task: Task, eval_step, state: dict, split: str, batch_size: int) -> dict[str, float]:
  """Runs the jitted eval step over a split's fixed batches and computes the task's metrics."""
  outputs, weights = [], []
  for batch in task.eval_batches(split, batch_size):
    outputs.append(eval_step(state["params"], state["model_state"], batch))
    weights.append(batch["weight"])
  keep = np.concatenate(weights) > 0
  gathered = {k: np.concatenate([np.asarray(o[k]) for o in outputs])[keep] for k in outputs[0]}
  return task.compute_metrics(gathered)


def _check_same_run(saved: dict, current: dict, workdir: str, free_model_fields: tuple[str, ...]) -> None:
  """Refuses to continue a run whose model, training or data differ, naming the settings that differ."""
  def strip(c):
    c = json.loads(json.dumps(c))
    for key in _RESUMABLE_CHANGES:
      c["train_config"].pop(key, None)
    for key in free_model_fields:
      c["model_config"].pop(key, None)
    return c

  saved, current = strip(saved), strip(current)
  differing = [f"{part}.{key}" if key else part for part in sorted(set(saved) | set(current))
               for key in _differing_keys(saved.get(part), current.get(part))]
  if differing:
    raise InputError(f"holds a checkpoint of a different configuration ({', '.join(differing)} differ); pass a "
                     "new --workdir or --overwrite", path=workdir)


def _differing_keys(was: Any, now: Any) -> list[str]:
  """The keys whose values differ between two dicts; [""] for other values that differ."""
  if was == now:
    return []
  if not (isinstance(was, dict) and isinstance(now, dict)):
    return [""]
  return sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))


def _fmt(metrics: dict[str, float]) -> str:
  return " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
