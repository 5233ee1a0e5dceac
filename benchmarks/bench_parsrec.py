"""PARSRec speed, memory and real-data quality; prints one JSON summary.

  python benchmarks/bench_parsrec.py [--epochs_timed=3] [--instacart_epochs=20] [--skip_instacart]

Speed, on the default synthetic data (generated into data/parsrec/synthetic.txt if absent):
  * seconds per training epoch (392 batches of 256, host batch building included), after a warm-up epoch
    that also compiles every session width; the median over --epochs_timed epochs;
  * evaluation seconds for valid + test (1,024 sessions each), median of 5;
  * FLOPs of the 2,002-way output layer per epoch (forward o.E^T + the two gradient products, from the
    actual batch shapes) and the fraction of the machine's peak they reach, the peak being measured here
    with a large f32 matmul; the same for the whole model's analytic FLOPs;
  * peak resident memory (ru_maxrss) after the synthetic part.
Quality, on the Instacart sample (../shared/datasets/instacart-sample, converted once into data/parsrec/):
PARSRec trained with the original's settings (best epoch by validation sess_prec@10, early stop after 5
epochs without improvement) vs a popularity baseline that ranks candidates by their train frequency, and a
personal one that ranks them by their frequency in the user's history, all through the same step-wise
completion with the same fixed 99 negatives (the baselines on the synthetic data too).
Runs unchanged on CPU or GPU (the device is whatever JAX picks).
"""
import json
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recsys_jax.training import host  # noqa: E402

host.tune_cpu_host()  # before JAX starts its threads

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from experiments import basket_completion as family  # noqa: E402
from recsys_jax import files, models  # noqa: E402
from recsys_jax.models.parsrec import place_next  # noqa: E402
from recsys_jax.preprocessing.baskets import load_basket_dataset  # noqa: E402
from recsys_jax.synthetic.parsrec import ParsrecGeneratorConfig  # noqa: E402
from recsys_jax.tasks.basket_completion import BasketCompletionTask, first_hit_in_top_k, summarize  # noqa: E402
from recsys_jax.training import mesh as mesh_lib, steps, trainer  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("epochs_timed", 3, "Timed training epochs after the warm-up epoch.")
flags.DEFINE_integer("eval_repeats", 5, "Timed evaluations of valid + test.")
flags.DEFINE_string("bench_cache_dir", "data/cache", "Split cache folder.")
flags.DEFINE_bool("skip_instacart", False, "Only the synthetic speed part.")
flags.DEFINE_string("instacart_path", family.INSTACART_DEFAULT, "Instacart order lines.")
flags.DEFINE_integer("instacart_epochs", 20, "Maximum PARSRec epochs on Instacart.")
flags.DEFINE_integer("instacart_early_stop", 5, "Early stop on Instacart (epochs without a better valid).")
flags.DEFINE_integer("bench_seed", 42, "Seed of negatives, initialisation, dropout and batch order.")
flags.DEFINE_integer("bench_users", 1024, "Synthetic users (a smaller value gives a smoke run).")
flags.DEFINE_integer("bench_sessions", 100, "Synthetic sessions per user.")
flags.DEFINE_string("output", os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "parsrec.json"),
                    "Where the JSON summary is written (also printed).")


def _median_seconds(fn, repeats: int) -> tuple[float, list[float]]:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times)), [round(t, 3) for t in times]


def measure_peak_flops() -> dict:
  """f32 matmul throughput: the best of a few square products, large enough to saturate the device."""
  n = 4096 if jax.default_backend() == "cpu" else 16384
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, b).block_until_ready()
  seconds, times = _median_seconds(lambda: matmul(a, b).block_until_ready(), 5)
  best = min(times)
  return {"matmul_n": n, "median_gflops": 2 * n**3 / seconds / 1e9, "best_gflops": 2 * n**3 / best / 1e9}


def epoch_flops(task: BasketCompletionTask, batch_size: int, dim: int, heads: int = 2) -> dict[str, float]:
  """Analytic multiply-add FLOPs of one training epoch (forward + 2x for the gradients), padded rows included.

  Per step and row: the output layer o.E^T (2 D I); the rest of the cell: the query-key product of h
  (2 D HD), the folded value-output product (2 HD 2D), W_f (2 2D D), i2o/i2h on [h; a] (2 2D 2D) and the
  attention itself (4 H S D). Per batch and row: the history mean (2 I D) and the user halves (2 D (HD + 2D)).
  """
  lengths = task.dataset.train.session_lengths()[task._order["train"]]
  widths = np.array([lengths[i:i + batch_size].max() for i in range(0, lengths.shape[0], batch_size)], float)
  items, steps_ = task.dataset.num_items, batch_size * widths.sum()
  output = 2.0 * dim * items * steps_
  cell = (2 * dim * heads * dim + 2 * heads * dim * 2 * dim + 2 * 2 * dim * dim + 2 * 2 * dim * 2 * dim) * steps_
  attention = float(np.sum(4 * heads * dim * batch_size * widths * (widths + 1) / 2))
  per_batch = (2 * items * dim + 2 * dim * (heads * dim + 2 * dim)) * batch_size * widths.shape[0]
  return {"output_layer": 3 * output, "model": 3 * (output + cell + attention + per_batch)}


def speed(task: BasketCompletionTask, batch_size: int, seed: int) -> dict:
  model = models.get("parsrec")
  config = trainer.model_config_for(model, task)
  mesh = mesh_lib.make_mesh()
  tx = steps.make_optimizer(1e-3, 30.0, model.sparse_params)
  state = steps.init_state(model, config, tx, jax.random.PRNGKey(seed), task.example_batch(batch_size), mesh)
  train_step = steps.make_train_step(model, config, task, tx, mesh)
  eval_step = steps.make_eval_step(model, config, task, mesh)
  rng = jax.random.PRNGKey(seed + 1)
  epoch = [0]

  def run_epoch():  # the trainer's own epoch loop, without its progress bar
    nonlocal state
    epoch[0] += 1
    state, loss, _ = trainer.train_epoch(task, train_step, state, batch_size,
                                         np.random.default_rng([seed, epoch[0]]), rng)
    return loss

  def run_eval():
    return {s: trainer.evaluate(task, eval_step, state, s, batch_size) for s in ("valid", "test")}

  start = time.perf_counter()
  run_epoch()
  warm_train = time.perf_counter() - start
  start = time.perf_counter()
  run_eval()
  warm_eval = time.perf_counter() - start
  epoch_s, epoch_times = _median_seconds(run_epoch, FLAGS.epochs_timed)
  eval_s, eval_times = _median_seconds(run_eval, FLAGS.eval_repeats)
  return {"epoch_seconds": epoch_s, "epoch_times": epoch_times, "first_epoch_seconds_with_compile": warm_train,
          "eval_seconds_valid_test": eval_s, "eval_times": eval_times,
          "first_eval_seconds_with_compile": warm_eval, "batches_per_epoch": task.num_train_batches(batch_size),
          "metrics_after_timed_epochs": run_eval(), "epochs_trained": epoch[0], "dim": config.item_dim}


def popularity_metrics(task: BasketCompletionTask, split: str, batch_size: int = 256,
                       personal: bool = False) -> dict:
  """Step-wise completion ranking candidates by train frequency, with the same acceptance rule.

  `personal`: by the frequency in the user's own history instead (global frequency breaks ties).
  """
  counts = np.bincount(np.asarray(task.dataset.train.session_items), minlength=task.dataset.num_items)
  popularity = jnp.asarray(counts / max(counts.max(), 1) * 1e-3, jnp.float32)

  @jax.jit
  def sums(session, length, negatives, history):
    cand = jnp.concatenate([session, negatives], axis=1)
    base = popularity[cand] + (jnp.take_along_axis(history, cand, axis=1) if personal else 0.0)
    remaining = jnp.arange(session.shape[1])[None, :] < length[:, None]
    hits, dcg, valid = (jnp.zeros(session.shape[0]) for _ in range(3))
    for _ in range(session.shape[1]):
      ok = jnp.concatenate([remaining & (session >= 2), jnp.ones(negatives.shape, bool)], axis=1)
      positive = jnp.concatenate([remaining & (session >= 2), jnp.zeros(negatives.shape, bool)], axis=1)
      scores = jnp.where(ok, base, -jnp.inf)
      hit, rank, col = first_hit_in_top_k(scores, positive, task.num_recoms)
      guess = jnp.take_along_axis(cand, col[:, None], axis=1)[:, 0]
      _, real, remaining = place_next(session, remaining, guess, hit)
      hits += hit & real
      dcg += jnp.where(hit & real, 1 / jnp.log2(rank + 2.0), 0.0)
      valid += real
    return hits, dcg, valid

  out = [sums(b["session"], b["length"], b["negatives"], b["history"]) + (b["weight"] > 0,)
         for b in task.eval_batches(split, batch_size)]
  keep = np.concatenate([o[3] for o in out])
  hits, dcg, valid = (np.concatenate([np.asarray(o[i]) for o in out])[keep] for i in range(3))
  return summarize(hits, dcg, valid, task.num_recoms)


def instacart(seed: int) -> dict:
  path = family.ensure_instacart(FLAGS.instacart_path, 3, 10, rebuild=False)
  dataset = load_basket_dataset(path, num_negatives=99, seed=seed, cache_dir=FLAGS.bench_cache_dir)
  task = BasketCompletionTask(dataset)
  model = models.get("parsrec")
  config = trainer.model_config_for(model, task)
  train = trainer.TrainConfig(epochs=FLAGS.instacart_epochs, batch_size=256, learning_rate=1e-3,
                              clip_global_norm=30.0, early_stop_patience=FLAGS.instacart_early_stop, seed=seed)
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as workdir:
    results = trainer.train_and_evaluate(task, model, config, train, workdir, "instacart",
                                         log=lambda msg: print(msg, file=sys.stderr, flush=True))
  return {"data": {k: dataset.stats[k] for k in ("users", "num_items", "train_sessions", "mean_session_length",
                                                  "max_session_length")},
          "parsrec": {"valid": results["valid"], "test": results["test"], "best_epoch": results["best_epoch"],
                      "epochs_run": results["epochs_run"], "seconds": time.perf_counter() - start},
          "popularity": {s: popularity_metrics(task, s) for s in ("valid", "test")},
          "personal_popularity": {s: popularity_metrics(task, s, personal=True) for s in ("valid", "test")}}


def main(argv):
  del argv
  summary = {"backend": jax.default_backend(), "device": str(jax.devices()[0]), "cpu_count": os.cpu_count(),
             "loadavg_start": os.getloadavg()}
  summary["peak"] = measure_peak_flops()
  path = family.ensure_synthetic(ParsrecGeneratorConfig(num_users=FLAGS.bench_users,
                                                        num_sessions=FLAGS.bench_sessions))
  dataset = load_basket_dataset(path, num_negatives=99, seed=FLAGS.bench_seed, cache_dir=FLAGS.bench_cache_dir)
  task = BasketCompletionTask(dataset)
  summary["synthetic"] = speed(task, 256, FLAGS.bench_seed)
  flops = epoch_flops(task, 256, summary["synthetic"]["dim"])
  peak = summary["peak"]["median_gflops"] * 1e9
  for part in ("output_layer", "model"):
    summary[part] = {
        "gflop_per_epoch": flops[part] / 1e9,
        "gflops_achieved": flops[part] / summary["synthetic"]["epoch_seconds"] / 1e9,
        "fraction_of_peak": flops[part] / summary["synthetic"]["epoch_seconds"] / peak,
        "floor_seconds_per_epoch": flops[part] / peak}
  summary["peak_rss_gb_synthetic"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  summary["popularity_synthetic"] = {s: popularity_metrics(task, s) for s in ("valid", "test")}
  summary["personal_popularity_synthetic"] = {s: popularity_metrics(task, s, personal=True)
                                              for s in ("valid", "test")}
  summary["original_pytorch_cpu"] = {"epoch_seconds": 137.0, "epoch_seconds_no_anomaly_detection": 86.0,
                                     "peak_rss_gb": 0.8}
  summary["speedup_vs_original"] = 137.0 / summary["synthetic"]["epoch_seconds"]
  if not FLAGS.skip_instacart:
    if os.path.isfile(FLAGS.instacart_path):
      summary["instacart"] = instacart(FLAGS.bench_seed)
    else:
      summary["instacart"] = f"skipped: {FLAGS.instacart_path} is absent"
  summary["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  summary["command"] = " ".join(["python"] + sys.argv)
  summary["loadavg_end"] = os.getloadavg()
  files.write_json(FLAGS.output, summary)
  print(json.dumps(summary, indent=2, default=float))


if __name__ == "__main__":
  app.run(main)
