"""Basket completion (PARSRec): complete a user's basket step by step; every step is scored.

Batch layout (leading axis B, fixed per batch size; padded rows have weight 0 and length 0):
  user      (B,)    int32
  session   (B, S)  int32    items in file order, right-padded with 0; S = the longest session of the batch
  length    (B,)    int32
  history   (B, I)  float32  the history's item histogram divided by its length, so history @ E is the mean
                             item embedding (a row of zeros for an empty history): one shape for any history
  negatives (B, K)  int32    eval batches only (not in full-ranking mode): the split's fixed negatives
  weight    (B,)    float32
Training batches are length-bucketed as in the original (`train_order="length"`): sessions sorted by length,
cut into chunks of B, chunk order shuffled per epoch (a leftover partial chunk comes last).
`train_order="shuffled"` draws fresh random batches every epoch instead, as a standard shuffling loader
does; their shorter sessions then have padded steps (EOB targets if the model trains them). S is the batch's longest
session, rounded up to a power of two beyond 16, so a dataset compiles one shape per distinct session length
(3..10 by default).

Loss: softmax cross-entropy over all ids per step, summed over a session's steps, averaged over real rows
(the original's "sum over steps of the batch-mean CE"). The model hands over each step's cross-entropy (`ce`,
(S, B)) rather than its logits: its steps need the logits for the target rule anyway, and the CE of a step's
logits is cheapest while they are still in cache. Metrics (percent), from the step-wise completion with
acceptance: `hr@k` = hit steps / valid steps, `ndcg@k` = sum over hit steps of 1/log2(rank+2) / valid steps
(both micro over steps), `sess_prec@k` = mean over sessions of hit steps / valid steps.
"""
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from recsys_jax.preprocessing.baskets import BasketDataset, BasketSplit
from recsys_jax.tasks.base import Batch, Task, splits_digest

SOB, EOB = 0, 1
_SPLITS = ("train", "valid", "test")
TRAIN_ORDERS = ("length", "shuffled")
_EXACT_WIDTHS = 16  # session widths up to this compile one shape each; longer ones round up to a power of 2


# ---- metric functions (pure jnp) -------------------------------------------------------------------------

def first_hit_in_top_k(scores: jax.Array, positive: jax.Array, k: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The best-ranked positive among the top-k of `scores` (..., C); ties go to the lower column.

  Returns (hit, rank, col): whether a positive is in the top k, its 0-based rank (k on a miss), and its
  column (on a miss, the column of the top-1 candidate).
  """
  k = min(k, scores.shape[-1])
  _, top = jax.lax.top_k(scores, k)
  top_positive = jnp.take_along_axis(positive, top, axis=-1)
  hit = jnp.any(top_positive, axis=-1)
  rank = jnp.where(hit, jnp.argmax(top_positive, axis=-1), k)
  col = jnp.take_along_axis(top, jnp.where(hit, rank, 0)[..., None], axis=-1)[..., 0]
  return hit, rank.astype(jnp.int32), col


def session_sums(scores: jax.Array, positive: jax.Array, step_mask: jax.Array, k: int) -> dict[str, jax.Array]:
  """Per-session sums over the valid steps of step-major (S, B, C) scores: hits, DCG and the step count."""
  hit, rank, _ = first_hit_in_top_k(scores, positive, k)
  hit = hit & step_mask
  gain = jnp.where(hit, 1.0 / jnp.log2(rank.astype(jnp.float32) + 2.0), 0.0)
  return {"hits": jnp.sum(hit, axis=0).astype(jnp.float32), "dcg": jnp.sum(gain, axis=0),
          "steps": jnp.sum(step_mask, axis=0).astype(jnp.float32)}


def summarize(hits: np.ndarray, dcg: np.ndarray, steps: np.ndarray, k: int) -> dict[str, float]:
  """HR@k and NDCG@k (micro over steps) and session precision@k (macro over sessions), in percent."""
  hits, dcg, steps = (np.asarray(x, np.float64) for x in (hits, dcg, steps))
  total = max(steps.sum(), 1.0)
  scored = steps > 0
  prec = float(np.mean(hits[scored] / steps[scored])) if scored.any() else float("nan")
  return {f"hr@{k}": 100.0 * hits.sum() / total, f"ndcg@{k}": 100.0 * dcg.sum() / total,
          f"sess_prec@{k}": 100.0 * prec}


# ---- the task ----------------------------------------------------------------------------------------------

def history_bag(data: BasketSplit, index: np.ndarray, num_items: int,
                h_len: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """The histories of rows `index` as a sparse (len(index), num_items) histogram: (flat positions, values).

  Normalised by the history length, so the model's history mean is one (B, I) x (I, D) product.
  """
  h_len = data.history_lengths()[index] if h_len is None else h_len
  n = index.shape[0]
  starts = np.asarray(data.history_offsets[index])
  offsets = np.concatenate([[0], np.cumsum(h_len)])
  flat = np.arange(offsets[-1], dtype=np.int64) + np.repeat(starts - offsets[:-1], h_len)
  row = np.repeat(np.arange(n, dtype=np.int64), h_len)
  counts = np.bincount(row * num_items + np.asarray(data.history_items[flat]), minlength=n * num_items)
  position = np.flatnonzero(counts)
  value = (counts[position] / np.maximum(h_len, 1)[position // num_items]).astype(np.float32)
  return position.astype(np.int32), value


def bucket_width(length: int) -> int:
  """The compiled session width of a batch whose longest session has `length` items."""
  length = max(int(length), 1)
  return length if length <= _EXACT_WIDTHS else 1 << (length - 1).bit_length()


class BasketCompletionTask(Task):
  name = "basket_completion"
  selection_mode = "max"
  # The original evaluates test every epoch for its curves; selection still uses valid only.
  epoch_eval_splits = ("valid", "test")

  def __init__(self, dataset: BasketDataset, num_recoms: int = 10, full_ranking: bool = False,
               tie_seed: int | None = 0, train_order: str = "length"):
    """`tie_seed` breaks length ties of the training order by a fixed seeded permutation, so that a chunk
    mixes users (the original's unstable sort by length scrambles ties too); None keeps the split's (user,
    time) order, where a chunk holds a few dozen consecutive users. `train_order`: see the module doc."""
    if num_recoms < 1:
      raise ValueError(f"num_recoms={num_recoms}; expected >= 1")
    if train_order not in TRAIN_ORDERS:
      raise ValueError(f"train_order={train_order!r}; expected one of {TRAIN_ORDERS}")
    self.train_order = train_order
    self.dataset = dataset
    self.num_recoms = int(num_recoms)
    self.full_ranking = bool(full_ranking)
    self.selection_metric = f"sess_prec@{self.num_recoms}"
    self._lengths = {s: dataset.split(s).session_lengths() for s in _SPLITS}
    self._history_lengths = {s: dataset.split(s).history_lengths() for s in _SPLITS}
    self._order = {s: np.argsort(self._lengths[s], kind="stable") for s in _SPLITS}
    self._cache: dict[tuple, dict] = {}
    if tie_seed is not None:
      lengths = self._lengths["train"]
      self._order["train"] = np.lexsort((np.random.default_rng(tie_seed).random(lengths.shape[0]), lengths))

  def model_dims(self) -> dict[str, int]:
    return {"num_users": self.dataset.num_users, "num_items": self.dataset.num_items,
            "num_recoms": self.num_recoms, "full_ranking": self.full_ranking}

  # ---- batches --------------------------------------------------------------------------------------------
  def batch(self, split: str, index: np.ndarray, batch_size: int, evaluation: bool = False) -> Batch:
    """Rows `index` of a split, padded to `batch_size` rows of weight 0 and length 0.

    Evaluation batches carry the split's fixed negatives (none for train, whose candidates are then the
    remaining items only), except in full-ranking mode.
    """
    return self._densify(self._sparse_batch(split, np.asarray(index, np.int64), batch_size, evaluation))

  def _sparse_batch(self, split: str, index: np.ndarray, batch_size: int, evaluation: bool) -> dict:
    """A batch whose history histogram is kept as (flat position, value) pairs: about 10x smaller."""
    data: BasketSplit = self.dataset.split(split)
    n, num_items = index.shape[0], self.dataset.num_items
    if n > batch_size:
      raise ValueError(f"{n} rows do not fit a batch of {batch_size}")
    lengths = np.zeros(batch_size, np.int32)
    lengths[:n] = self._lengths[split][index]
    session = np.zeros((batch_size, bucket_width(lengths.max(initial=0))), np.int32)
    session[:n] = data.session_matrix(index, session.shape[1])
    position, value = history_bag(data, index, num_items, self._history_lengths[split][index])
    user = np.zeros(batch_size, np.int32)
    user[:n] = data.user[index]
    weight = np.zeros(batch_size, np.float32)
    weight[:n] = 1.0
    out = {"user": user, "session": session, "length": lengths, "weight": weight,
           "history_position": position, "history_value": value}
    if evaluation and not self.full_ranking:
      negatives = np.zeros((batch_size, data.num_negatives), np.int32)
      negatives[:n] = data.negatives[index]
      out["negatives"] = negatives
    return out

  def _densify(self, sparse: dict) -> Batch:
    rows, num_items = sparse["user"].shape[0], self.dataset.num_items
    batch = {k: v for k, v in sparse.items() if not k.startswith("history_")}
    history = np.zeros(rows * num_items, np.float32)
    history[sparse["history_position"]] = sparse["history_value"]
    batch["history"] = history.reshape(rows, num_items)
    return batch

  def _chunk_batch(self, split: str, k: int, batch_size: int, evaluation: bool) -> Batch:
    """Batch k of a split's fixed chunks; its sparse form is cached, since every epoch reuses the chunks."""
    key = (split, k, batch_size, evaluation)
    if key not in self._cache:
      chunk = self._order[split][k * batch_size:(k + 1) * batch_size]
      self._cache[key] = self._sparse_batch(split, chunk, batch_size, evaluation)
    return self._densify(self._cache[key])

  def example_batch(self, batch_size: int) -> Batch:
    return self.batch("train", self._order["train"][:batch_size], batch_size)

  def num_train_batches(self, batch_size: int) -> int:
    return -(-len(self.dataset.train) // batch_size)

  def train_batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[Batch]:
    n = len(self.dataset.train)
    if self.train_order == "shuffled":
      order = rng.permutation(n)
      for start in range(0, n, batch_size):
        yield self.batch("train", order[start:start + batch_size], batch_size)
      return
    full = n // batch_size
    for k in np.concatenate([rng.permutation(full), np.arange(full, -(-n // batch_size))]).astype(int):
      yield self._chunk_batch("train", int(k), batch_size, evaluation=False)

  def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
    for k in range(-(-len(self.dataset.split(split)) // batch_size)):
      yield self._chunk_batch(split, k, batch_size, evaluation=True)

  # ---- loss and metrics ---------------------------------------------------------------------------------
  def loss(self, outputs: dict, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    ce = outputs["ce"]                                          # (S, B)
    mask = outputs["step_mask"] * batch["weight"][None, :]
    total = jnp.sum(ce * mask)
    per_row = total / jnp.maximum(jnp.sum(batch["weight"]), 1.0)
    per_step = total / jnp.maximum(jnp.sum(mask), 1.0)
    # The gradient is the original's objective (sum over steps, mean over rows); the value is the mean CE
    # per step, which is what the original reports as its train loss and what the trainer logs.
    loss = per_row + jax.lax.stop_gradient(per_step - per_row)
    return loss, {"loss_per_row": per_row, "ce_per_step": per_step}

  def eval_outputs(self, outputs: dict, batch: Batch) -> dict[str, jax.Array]:
    return session_sums(outputs["scores"], outputs["positive"], outputs["step_mask"], self.num_recoms)

  def compute_metrics(self, gathered: dict[str, np.ndarray]) -> dict[str, float]:
    return summarize(gathered["hits"], gathered["dcg"], gathered["steps"], self.num_recoms)

  def data_identity(self) -> dict[str, Any]:
    ds = self.dataset
    # The settings that shape the splits are named beside the digest, so a refused resume names them; so is
    # a training order other than the default (only then, so that runs recorded before the option resume).
    # The data's name is left out: the same content under another file name is the same data.
    identity = {"splits": splits_digest(ds.split(s) for s in _SPLITS), "history_len": ds.stats["history_len"],
                "num_negatives": ds.valid.num_negatives, "num_users": ds.num_users, "num_items": ds.num_items}
    if self.train_order != TRAIN_ORDERS[0]:
      identity["train_order"] = self.train_order
    return identity

  def describe(self) -> dict[str, Any]:
    ds = self.dataset
    return {"name": ds.name, "num_users": ds.num_users, "num_items": ds.num_items,
            "sessions": {s: len(ds.split(s)) for s in ("train", "valid", "test")},
            "num_recoms": self.num_recoms, "full_ranking": self.full_ranking, "train_order": self.train_order,
            "num_negatives": ds.valid.num_negatives, "max_session_len": ds.max_session_len,
            "stats": ds.stats}

  # ---- explanations ---------------------------------------------------------------------------------------
  def export_attention(self, apply_fn: Callable[[Batch], dict], split: str, batch_size: int) -> dict[str, np.ndarray]:
    """Runs the evaluation completion over a split and returns its per-step attention, padded to width W.

    `apply_fn(batch)` returns the model's evaluation outputs. Returns, per session in split order: `user`,
    `length`, `placed` (N, W) (the item placed at each step), `attention` (N, W, W) (step s's weights over
    key slots; slot 0 is SOB at step 0, else b_j), `hit` (N, W) (the step was a top-k hit).
    """
    data = self.dataset.split(split)
    n, width = len(data), bucket_width(data.session_lengths().max(initial=1))
    placed = np.zeros((n, width), np.int32)
    attention = np.zeros((n, width, width), np.float32)
    hit = np.zeros((n, width), bool)
    for k, batch in enumerate(self.eval_batches(split, batch_size)):
      chunk = self._order[split][k * batch_size:(k + 1) * batch_size]
      out = jax.device_get(apply_fn(batch))
      s, m = batch["session"].shape[1], chunk.shape[0]
      placed[chunk, :s] = out["placed"][:, :m].T
      attention[chunk, :s, :s] = np.swapaxes(out["attention"][:, :m], 0, 1)
      step_hit, _, _ = first_hit_in_top_k(out["scores"][:, :m], out["positive"][:, :m], self.num_recoms)
      hit[chunk, :s] = (np.asarray(step_hit) & out["step_mask"][:, :m]).T
    return {"user": np.asarray(data.user), "length": data.session_lengths().astype(np.int32),
            "placed": placed, "attention": attention, "hit": hit}


def category_attention(export: dict[str, np.ndarray], item_category: np.ndarray, user_group: np.ndarray,
                       num_categories: int, num_groups: int = 2) -> tuple[np.ndarray, np.ndarray]:
  """Category-to-category attention per user group: (lift (G, C, C), counts (G, C, C)).

  For each step s >= 2 and key j < s, the placed item b_s (category t) attends to b_j (category c) with
  weight w; its lift is w * s, the weight relative to uniform attention over the s keys, so steps with
  different numbers of keys compare. Step 1 is left out: its single key always gets weight 1. lift[g, t, c]
  is the mean lift over those (step, key) pairs of group g (nan where none); an untrained model gives
  about 1 everywhere.
  """
  length, placed, att = export["length"], export["placed"], export["attention"]
  n, width = placed.shape
  s = np.arange(width)
  valid = (s[None, :, None] < length[:, None, None]) & (s[None, None, :] < s[None, :, None])   # (N, S, J)
  valid &= (s[None, :, None] >= 2)
  nn_, ss, jj = np.nonzero(valid)
  target_cat = item_category[placed[nn_, ss]]
  key_cat = item_category[placed[nn_, jj]]
  keep = (target_cat >= 0) & (key_cat >= 0)
  group = user_group[export["user"][nn_]]
  key = (group * num_categories + target_cat) * num_categories + key_cat
  size = num_groups * num_categories * num_categories
  lift = att[nn_, ss, jj] * ss
  sums = np.bincount(key[keep], weights=lift[keep], minlength=size).reshape(num_groups, num_categories, -1)
  counts = np.bincount(key[keep], minlength=size).reshape(num_groups, num_categories, -1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return sums / counts, counts


def pair_lift(lift: np.ndarray, counts: np.ndarray, a: int, b: int) -> np.ndarray:
  """(G,) the count-weighted mean lift between categories a and b, both directions."""
  sums = np.nan_to_num(lift[:, a, b]) * counts[:, a, b] + np.nan_to_num(lift[:, b, a]) * counts[:, b, a]
  total = counts[:, a, b] + counts[:, b, a]
  with np.errstate(invalid="ignore", divide="ignore"):
    return sums / total


def key_lift(lift: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """(G, C): the mean lift of keys of each category, over every placed category (count-weighted).

  How much more (> 1) or less than uniform a group attends to a category's items whatever comes next: the
  personalised part of the attention. Unlike a single (placed, key) cell it stays well sampled when two
  categories rarely co-occur in a group.
  """
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.sum(np.nan_to_num(lift) * counts, axis=1) / counts.sum(axis=1)


def tiny_task(seed: int = 0) -> BasketCompletionTask:
  """48 users x 8 sessions of 4 items over 20 categories of 3 items: for tests and smoke runs."""
  from recsys_jax.preprocessing.baskets import split_sessions
  from recsys_jax.synthetic.parsrec import ParsrecGeneratorConfig, generate
  # One session length, so a smoke run compiles one shape.
  config = ParsrecGeneratorConfig(num_users=48, num_sessions=8, items_per_category=3, min_session_len=4,
                                  max_session_len=4, seed=seed)
  data = generate(config)
  dataset = split_sessions(data.sessions, name="tiny-parsrec", num_negatives=20, seed=seed,
                           num_items=config.num_items)
  return BasketCompletionTask(dataset, num_recoms=10)
