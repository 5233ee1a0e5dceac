"""Flags and wiring of the sequential CTR family (SLi-Rec, A2SVD, popularity)."""
import os

from absl import flags

from recsys_jax import files
from recsys_jax.preprocessing import sequential, sequential_sources
from recsys_jax.tasks.sequential_ctr import SequentialCTRTask

DATASETS = ("synthetic", "amazon", "interactions", "recommenders")
# recommenders' sli_rec.yaml / asvd.yaml values as run in its quick start (10 epochs, EARLY_STOP 10).
TRAIN_DEFAULTS = dict(epochs=10, batch_size=400, learning_rate=1e-3, early_stop=10)

flags.DEFINE_string("meta_path", None, "amazon: optional meta file (categories); interactions: optional "
                    "item-meta table.")
flags.DEFINE_string("user_col", "user_id", "interactions: user column.")
flags.DEFINE_string("item_col", "item_id", "interactions: item column.")
flags.DEFINE_string("time_col", "time", "interactions: timestamp column (unix seconds or dates).")
flags.DEFINE_string("category_col", None, "interactions: category column in the interactions table, if any.")
flags.DEFINE_string("meta_item_col", "item_id", "interactions: item column of --meta_path.")
flags.DEFINE_string("meta_category_col", "i_category", "interactions: category column of --meta_path.")
flags.DEFINE_float("sample_rate", None, "Popularity-weighted item sampling rate (0.01 in recommenders' quick "
                   "start); default: keep all items.")
flags.DEFINE_integer("max_len", 50, "History length kept (the last max_len interactions; at most 10,000).",
                     lower_bound=1, upper_bound=10_000)
# At least one negative each: AUC needs a negative, training with none has no contrast.
flags.DEFINE_integer("valid_negatives", 4, "Fixed sampled negatives per validation positive.", lower_bound=1)
flags.DEFINE_integer("test_negatives", 9, "Fixed sampled negatives per test positive (9, or 49).", lower_bound=1)
flags.DEFINE_integer("train_negatives", 4, "In-batch negatives per training positive.", lower_bound=1)
flags.DEFINE_integer("synthetic_users", 2000, "synthetic: number of users generated.")
flags.DEFINE_bool("original_quirks", False, "Reproduce recommenders' defects: attention over padded history "
                  "positions (A2SVD, SLi-Rec long-term) and SLi-Rec's fusion gate reading the time of the "
                  "last padded column.")


def build_task(model, f):
  config = sequential.SequentialPrepConfig(sample_rate=f.sample_rate, max_len=f.max_len,
                                           valid_negatives=f.valid_negatives,
                                           test_negatives=f.test_negatives, seed=f.seed)
  columns = {"user": f.user_col, "item": f.item_col, "time": f.time_col, "category": f.category_col,
             "meta_item": f.meta_item_col, "meta_category": f.meta_category_col}
  dataset = sequential_sources.load_sequential_dataset(
      f.dataset, data_path=f.data_path, meta_path=f.meta_path, columns=columns, config=config,
      cache_dir=f.cache_dir, synthetic_options={"num_users": f.synthetic_users})
  task = SequentialCTRTask(dataset, train_negatives=f.train_negatives, bucket_width=not f.original_quirks)
  rows = ", ".join(f"{s} {len(dataset.split(s)):,}" for s in ("train", "valid", "test"))
  print(f"data {dataset.name}: {rows} rows; {task.num_items:,} items, {task.num_categories:,} categories "
        f"(index 0 = unknown); users dropped: {dataset.stats.get('users_dropped', 0)}")
  overrides = {"original_quirks": f.original_quirks} if model.name != "popularity" else {}
  return task, dataset.name, overrides


def before_training(task, workdir, f):
  """Saves what inference needs beside the checkpoints: vocabularies and the item -> category map."""
  if f.inference_only:  # a trained workdir has them; an empty one is refused by the trainer
    return
  ds = task.dataset
  files.save_npz(os.path.join(workdir, "vocab.npz"), {
      "item_vocab": ds.item_vocab.astype(str), "cate_vocab": ds.cate_vocab.astype(str),
      "item_cate": ds.item_categories(), "max_len": ds.max_len})


def epoch_callback(task, workdir, f):
  return None


def after_training(task, workdir, results, f):
  return None
