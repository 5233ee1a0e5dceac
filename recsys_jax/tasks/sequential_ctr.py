"""Sequential CTR protocol of Microsoft `recommenders` (SLi-Rec, A2SVD): 1 positive + N candidates per row.

Batch layout (leading axis B, fixed per batch size; padded rows have weight 0):
  hist_item, hist_cate (B, W) int32   left-aligned history, 0 = padding; W = the batch's longest history
                                      rounded up to WIDTH_QUANTUM (<= max_len), so few shapes compile
  hist_mask            (B, W) float32 1 for real history positions
  hist_len             (B,)   int32
  time_first, time_now (B, W) float32 log-day time features of `recommenders`' iterator (0 in padding)
  cand_item, cand_cate (B, C) int32   column 0 is the positive
  weight               (B,)   float32
  pack_row, pack_pos   (P,)   int32   the real history positions of the batch as (row, position) pairs, then
                                      filler (0, 0); P is rounded up to a multiple of `PACK_QUANTUM`
  pack_valid           (P,)   float32 1 for real positions of real rows, 0 for filler
Training rows get `train_negatives` negatives drawn from the positives of other rows of the same batch
(rejecting equal items), so C = 1 + 4; evaluation rows carry the split's fixed sampled negatives.
Loss: softmax over each group, -log p(positive). Metrics on sigmoid(logit) per candidate.
"""
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from recsys_jax.metrics import ranking
from recsys_jax.preprocessing.sequential_dataset import SequentialDataset, SequentialSplit
from recsys_jax.tasks.base import Batch, Task, splits_digest

_DAY = 86400.0
# P (packed positions per batch) is rounded up to a multiple of this, so a dataset compiles few shapes.
PACK_QUANTUM = 1024
# A batch's history width is its longest history rounded up to a multiple of this (at most max_len).
WIDTH_QUANTUM = 10


def time_features(split: SequentialSplit) -> tuple[np.ndarray, np.ndarray]:
  """`recommenders`' per-position log-day features, vectorised.

  time_first[k] = log(max((t_{k+1} - t_0) / day, 0.5)), where t_len is the target time (a one-step shift,
  as in the original); time_now[k] = log(max((t_target - t_k) / day, 0.5)). Padding positions are 0.
  """
  n, length = split.hist_time.shape
  t = split.hist_time.astype(np.float64)
  target = split.time.astype(np.float64)[:, None]
  mask = np.arange(length)[None, :] < split.hist_len[:, None]
  t_next = np.concatenate([t[:, 1:], np.zeros((n, 1))], axis=1)
  last = np.arange(length)[None, :] == (split.hist_len[:, None] - 1)
  t_next = np.where(last, target, t_next)
  first = np.log(np.maximum((t_next - t[:, :1]) / _DAY, 0.5))
  now = np.log(np.maximum((target - t) / _DAY, 0.5))
  return (np.where(mask, first, 0).astype(np.float32), np.where(mask, now, 0).astype(np.float32))


def pack_positions(mask: np.ndarray) -> dict[str, np.ndarray]:
  """(row, position) of every entry with mask 1, row-major, padded with filler (0, 0) of validity 0."""
  rows, pos = np.nonzero(mask)
  size = max(PACK_QUANTUM, -(-len(rows) // PACK_QUANTUM) * PACK_QUANTUM)
  pad = np.zeros(size - len(rows), np.int32)
  return {"pack_row": np.concatenate([rows, pad]).astype(np.int32),
          "pack_pos": np.concatenate([pos, pad]).astype(np.int32),
          "pack_valid": np.concatenate([np.ones(len(rows), np.float32), pad.astype(np.float32)])}


class SequentialCTRTask(Task):
  name = "sequential_ctr"
  selection_metric = "group_auc"
  selection_mode = "max"

  def __init__(self, dataset: SequentialDataset, train_negatives: int = 4, ndcg_ks: tuple[int, ...] = (2, 4, 6),
               bucket_width: bool = True):
    """`bucket_width=False` keeps every batch max_len wide, which models reproducing the original's
    padding behaviour (`original_quirks`) need."""
    self.dataset = dataset
    self.bucket_width = bucket_width
    self.train_negatives = train_negatives
    self.ndcg_ks = tuple(ndcg_ks)
    self.num_items = len(dataset.item_vocab)
    self.num_categories = len(dataset.cate_vocab)
    self.num_users = len(dataset.user_vocab)
    self._features = {s: time_features(dataset.split(s)) for s in ("train", "valid", "test")}

  def model_dims(self):
    return {"num_items": self.num_items, "num_categories": self.num_categories, "num_users": self.num_users}

  # ---- batches ----------------------------------------------------------------------------------------
  def _rows(self, split: str, index: np.ndarray, cand_item: np.ndarray, cand_cate: np.ndarray,
            batch_size: int) -> Batch:
    """Gathers rows `index` of a split and pads them to `batch_size` rows of weight 0."""
    data = self.dataset.split(split)
    first, now = self._features[split]
    pad = batch_size - len(index)
    rows = np.concatenate([index, np.zeros(pad, np.int64)])
    width = data.hist_item.shape[1]
    if self.bucket_width and len(index):
      width = min(width, -(-int(data.hist_len[index].max()) // WIDTH_QUANTUM) * WIDTH_QUANTUM)
    batch = {
        "hist_item": data.hist_item[rows, :width], "hist_cate": data.hist_cate[rows, :width],
        "hist_mask": (np.arange(width)[None, :] < data.hist_len[rows, None]).astype(np.float32),
        "hist_len": data.hist_len[rows].astype(np.int32),
        "time_first": first[rows, :width], "time_now": now[rows, :width],
        "cand_item": np.concatenate([cand_item, np.zeros((pad, cand_item.shape[1]), np.int32)]),
        "cand_cate": np.concatenate([cand_cate, np.zeros((pad, cand_cate.shape[1]), np.int32)]),
        "weight": np.concatenate([np.ones(len(index), np.float32), np.zeros(pad, np.float32)]),
    }
    batch.update(pack_positions(batch["hist_mask"] * batch["weight"][:, None]))
    return batch

  def example_batch(self, batch_size: int) -> Batch:
    index = np.arange(min(batch_size, len(self.dataset.train)))
    items, cates = self._in_batch_candidates(index, np.random.default_rng(0))
    return self._rows("train", index, items, cates, batch_size)

  def num_train_batches(self, batch_size: int) -> int:
    return -(-len(self.dataset.train) // batch_size)

  def train_batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[Batch]:
    order = rng.permutation(len(self.dataset.train))
    for start in range(0, len(order), batch_size):
      index = order[start:start + batch_size]
      items, cates = self._in_batch_candidates(index, rng)
      yield self._rows("train", index, items, cates, batch_size)

  def _in_batch_candidates(self, index: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Positive + `train_negatives` positives of other rows of the batch with a different item."""
    train = self.dataset.train
    pos_item, pos_cate = train.cand_item[index, 0], train.cand_cate[index, 0]
    n, k = len(index), self.train_negatives
    draw = rng.integers(0, n, size=(n, k))
    for _ in range(100):  # redraw only the clashes; a batch of one repeated item cannot be fixed
      clash = pos_item[draw] == pos_item[:, None]
      if not clash.any():
        break
      draw[clash] = rng.integers(0, n, size=int(clash.sum()))
    items = np.concatenate([pos_item[:, None], pos_item[draw]], axis=1).astype(np.int32)
    cates = np.concatenate([pos_cate[:, None], pos_cate[draw]], axis=1).astype(np.int32)
    return items, cates

  def eval_batches(self, split: str, batch_size: int) -> Iterator[Batch]:
    data = self.dataset.split(split)
    for start in range(0, len(data), batch_size):
      index = np.arange(start, min(start + batch_size, len(data)))
      yield self._rows(split, index, data.cand_item[index], data.cand_cate[index], batch_size)

  # ---- loss and metrics ---------------------------------------------------------------------------------
  def loss(self, outputs: jax.Array, batch: Batch):
    logp = jax.nn.log_softmax(outputs, axis=-1)[:, 0]
    w = batch["weight"]
    loss = -jnp.sum(logp * w) / jnp.maximum(jnp.sum(w), 1.0)
    return loss, {}

  def eval_outputs(self, outputs: jax.Array, batch: Batch):
    return {"scores": jax.nn.sigmoid(outputs)}

  def compute_metrics(self, gathered):
    scores = gathered["scores"]
    labels = np.zeros_like(scores)
    labels[:, 0] = 1
    return ranking.sequential_ctr_metrics(labels, scores, ks=self.ndcg_ks)

  def data_identity(self):
    ds = self.dataset
    # The settings that shape the splits are named beside the digest, so a refused resume names them.
    return {"splits": splits_digest(ds.split(s) for s in ("train", "valid", "test")), "max_len": ds.max_len,
            "valid_negatives": ds.valid.num_negatives, "test_negatives": ds.test.num_negatives,
            "vocab_sizes": [self.num_users, self.num_items, self.num_categories],
            "train_negatives": self.train_negatives, "bucket_width": self.bucket_width, "ndcg_ks": list(self.ndcg_ks)}

  def describe(self):
    ds = self.dataset
    return {"name": ds.name, "rows": {s: len(ds.split(s)) for s in ("train", "valid", "test")},
            "num_users": self.num_users, "num_items": self.num_items, "num_categories": self.num_categories,
            "max_len": ds.max_len, "valid_negatives": ds.valid.num_negatives,
            "test_negatives": ds.test.num_negatives, "train_negatives": self.train_negatives,
            "stats": ds.stats}


def tiny_task(seed: int = 0) -> SequentialCTRTask:
  """60 synthetic users, short histories: for tests and smoke runs."""
  from recsys_jax.preprocessing import sequential
  from recsys_jax.synthetic import sequential as synthetic
  log = synthetic.generate(num_users=60, num_categories=4, items_per_category=10, min_length=5,
                           max_length=12, seed=seed)
  config = sequential.SequentialPrepConfig(max_len=8, valid_negatives=4, test_negatives=9, seed=seed)
  return SequentialCTRTask(sequential.preprocess(log, config, name="tiny-synthetic"))
