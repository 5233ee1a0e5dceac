"""The `recommenders` Amazon sequential preprocessing, vectorised: interactions -> SequentialDataset.

Semantics of `recommenders.datasets.amazon_reviews.data_preprocessing` (see the SLi-Rec reference notes, §2):
per-user stable time order with users in first-appearance order; optional popularity-weighted item sample;
leave-last-two split (position i of n: train if i < n-2, valid if i = n-2, test if i = n-1); the first row of
a user is never an instance; each instance carries the user's full previous history (kept here as its last
`max_len` entries, left-aligned, as the iterator does); vocabularies counted on train instances only (targets
plus full histories), descending and stable, item/category 0 = default; valid/test get fixed
popularity-weighted negatives that differ from the positive and from each other. The random streams differ
from Python's `random`, so the laws match `recommenders` but not its exact draws.
"""
import dataclasses

import numpy as np
import pandas as pd

from recsys_jax.errors import InputError
from recsys_jax.preprocessing.sequential_dataset import SequentialDataset, SequentialSplit

DEFAULT_ITEM = "default_mid"  # the names `recommenders` gives vocabulary index 0
DEFAULT_CATE = "default_cat"
COLUMNS = ("user", "item", "time", "cate")
_MAX_REDRAW_ROUNDS = 10_000
_CHUNK_ROWS = 262_144  # bounds the (rows, max_len) int64 index temporaries


@dataclasses.dataclass(frozen=True)
class SequentialPrepConfig:
  sample_rate: float | None = None  # fraction of distinct items kept (popularity-weighted); None keeps all
  max_len: int = 50
  valid_negatives: int = 4
  test_negatives: int = 9
  seed: int = 42


def preprocess(interactions: pd.DataFrame, config: SequentialPrepConfig, name: str) -> SequentialDataset:
  """Builds the train/valid/test arrays; raises InputError on bad input or an empty split."""
  _check_config(config)
  (user, item, cate), (user_names, item_names, cate_names), time = _encode(interactions, name)
  rng = np.random.default_rng(config.seed)
  stats = {"interactions_total": int(len(user)), "users_total": len(user_names),
           "items_total": len(item_names), "sample_rate": config.sample_rate}
  # Instance order: users in first-appearance order (factorize codes), stable by time within a user.
  order = np.argsort(time, kind="stable")
  order = order[np.argsort(user[order], kind="stable")]
  item_cate = _last_category(item[order], cate[order], len(item_names))
  if config.sample_rate is not None:
    sampled = _sample_items(item, config.sample_rate, rng, name)
    order = order[np.isin(item[order], sampled)]
    stats["items_sampled"] = int(len(sampled))
  user, item, cate, time = user[order], item[order], cate[order], time[order]
  layout = _Layout(user)
  stats.update(layout.stats())

  item_rank = _vocab_rank(item, layout.vocab_weight, layout.first_seen, len(item_names))
  cate_rank = _vocab_rank(cate, layout.vocab_weight, layout.first_seen, len(cate_names))
  user_rank = _user_rank(layout)
  row_item = item_rank.index[item]
  row_cate = cate_rank.index[cate]

  splits = {}
  split_rows = [np.flatnonzero(layout.instance & (layout.split == code)) for code in range(3)]
  # With an empty split, skip the draws so that check_nonempty reports the real problem.
  draw = all(len(r) for r in split_rows)
  pool = item  # negatives come popularity-weighted from the (sampled) interactions
  for split_name, rows, k in zip(("train", "valid", "test"), split_rows,
                                 (0, config.valid_negatives, config.test_negatives)):
    negatives = _draw_negatives(rng, pool, item[rows], k if draw else 0, name)
    cand_item = np.concatenate([row_item[rows, None], item_rank.index[negatives]], axis=1)
    cand_cate = np.concatenate([row_cate[rows, None], cate_rank.index[item_cate[negatives]]], axis=1)
    hist_item, hist_cate, hist_time, hist_len = _histories(rows, layout.pos[rows], config.max_len,
                                                           row_item, row_cate, time)
    splits[split_name] = SequentialSplit(
        user=user_rank.index[layout.group[rows]].astype(np.int32), hist_item=hist_item, hist_cate=hist_cate,
        hist_time=hist_time, hist_len=hist_len, time=time[rows].astype(np.int64),
        cand_item=cand_item.astype(np.int32), cand_cate=cand_cate.astype(np.int32))
    stats[f"{split_name}_rows"] = int(len(rows))

  user_vocab = _as_str(user_names[layout.group_user[user_rank.order]])
  item_vocab = np.concatenate([[DEFAULT_ITEM], _as_str(item_names[item_rank.order])])
  cate_vocab = np.concatenate([[DEFAULT_CATE], _as_str(cate_names[cate_rank.order])])
  stats.update(n_users=int(len(user_vocab)), n_items=int(len(item_vocab)), n_categories=int(len(cate_vocab)),
               max_len=config.max_len)
  dataset = SequentialDataset(name=name, user_vocab=user_vocab, item_vocab=item_vocab.astype(str),
                              cate_vocab=cate_vocab.astype(str), stats=stats, **splits)
  dataset.check_nonempty(name)
  return dataset


def _check_config(config: SequentialPrepConfig) -> None:
  rate = config.sample_rate
  if rate is not None and not 0 < rate <= 1:
    raise InputError(f"sample_rate must be in (0, 1] or None, got {rate}")
  if config.max_len < 1:
    raise InputError(f"max_len must be at least 1, got {config.max_len}")
  if config.valid_negatives < 0 or config.test_negatives < 0:
    raise InputError("valid_negatives and test_negatives must be >= 0, got "
                     f"{config.valid_negatives} and {config.test_negatives}")


def _encode(frame: pd.DataFrame, source: str) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
  """Codes (first-appearance order) and names of user/item/cate, and int64 times."""
  missing = [c for c in COLUMNS if c not in frame.columns]
  if missing:
    raise InputError(f"interactions lack columns {missing}; columns found: {list(frame.columns)}", source)
  if len(frame) == 0:
    raise InputError("no interactions", source)
  codes, names = [], []
  for column in ("user", "item", "cate"):
    c, uniques = pd.factorize(frame[column], sort=False)
    if (c < 0).any():
      raise InputError(f"missing {column} in row {int(np.argmax(c < 0))}", source)
    codes.append(c.astype(np.int64))
    names.append(np.asarray(uniques, dtype=object))
  time = frame["time"]
  if not pd.api.types.is_integer_dtype(time.dtype):
    raise InputError(f"the time column must hold integer unix seconds, got dtype {time.dtype}", source)
  return codes, names, time.to_numpy(dtype=np.int64)


def _as_str(values: np.ndarray) -> np.ndarray:
  return np.asarray([str(v) for v in values] if values.dtype == object else values, dtype=str)


def _last_category(item: np.ndarray, cate: np.ndarray, n_items: int) -> np.ndarray:
  """item code -> category code of its last row (dict-overwrite semantics, as `_create_item2cate`)."""
  last = np.zeros(n_items, dtype=np.int64)
  np.maximum.at(last, item, np.arange(len(item)))
  return cate[last]


def _sample_items(item: np.ndarray, rate: float, rng: np.random.Generator, source: str) -> np.ndarray:
  """int(n_items * rate) distinct items, successive popularity-weighted draws without replacement."""
  counts = np.bincount(item)
  n_items = len(counts)
  k = int(n_items * rate)
  if k < 1:
    raise InputError(f"sample_rate {rate} keeps int({n_items} * {rate}) = 0 items", source)
  if k == n_items:  # the law keeps every item; skip the O(n^2)-ish draw
    return np.arange(n_items)
  return rng.choice(n_items, size=k, replace=False, p=counts / counts.sum())


class _Layout:
  """Per-row position in its user's sequence, split tag and vocabulary weights (rows contiguous by user)."""

  def __init__(self, user: np.ndarray):
    n = len(user)
    new = np.ones(n, dtype=bool)
    new[1:] = user[1:] != user[:-1]
    starts = np.flatnonzero(new)
    self.group = np.cumsum(new) - 1                 # row -> user group (groups in first-appearance order)
    self.group_user = user[starts]                  # group -> user code
    self.sizes = np.diff(np.append(starts, n))      # interactions per user
    size = self.sizes[self.group]
    self.pos = np.arange(n) - starts[self.group]
    self.split = np.where(self.pos < size - 2, 0, np.where(self.pos == size - 2, 1, 2))
    self.instance = self.pos >= 1                   # the first row has an empty history
    # Train-file occurrences of a row at position q (targets 1..n-3 plus full histories): closed form.
    train_target = (self.pos >= 1) & (self.pos <= size - 3)
    self.vocab_weight = train_target + np.maximum(size - 3 - self.pos, 0)
    # First-encounter order in the train file: per user, target of row 1, then its history row 0, then 2, 3...
    self.first_seen = np.arange(n) + np.where(self.pos == 0, 1, 0) - np.where(self.pos == 1, 1, 0)

  def stats(self) -> dict:
    s = self.sizes
    return {"interactions_after_sampling": int(s.sum()), "users_after_sampling": int(len(s)),
            "users_dropped": int((s < 2).sum()), "users_without_valid_row": int((s < 3).sum()),
            "users_without_train_row": int((s < 4).sum())}


@dataclasses.dataclass
class _Rank:
  order: np.ndarray  # vocabulary position -> code
  index: np.ndarray  # code -> vocabulary index (0 = unknown)


def _vocab_rank(codes: np.ndarray, weight: np.ndarray, first_seen: np.ndarray, n_codes: int) -> _Rank:
  """Codes with a train count, by count descending then first encounter; indices start at 1."""
  count = np.bincount(codes, weights=weight, minlength=n_codes).round().astype(np.int64)
  first = np.full(n_codes, np.iinfo(np.int64).max)
  counted = weight > 0
  np.minimum.at(first, codes[counted], first_seen[counted])
  order = np.lexsort((first, -count))
  order = order[count[order] > 0]
  index = np.zeros(n_codes, dtype=np.int64)
  index[order] = np.arange(1, len(order) + 1)
  return _Rank(order=order, index=index)


def _user_rank(layout: _Layout) -> _Rank:
  """Users by train-row count descending (stable); 0-based, unknown users share index 0 as upstream."""
  count = np.maximum(layout.sizes - 3, 0)
  order = np.argsort(-count, kind="stable")
  order = order[count[order] > 0]
  index = np.zeros(len(count), dtype=np.int64)
  index[order] = np.arange(len(order))
  return _Rank(order=order, index=index)


def _histories(rows: np.ndarray, pos: np.ndarray, max_len: int, row_item: np.ndarray, row_cate: np.ndarray,
               time: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """The last max_len earlier rows of each instance's user, left-aligned, zero-padded."""
  n = len(rows)
  hist_len = np.minimum(pos, max_len).astype(np.int32)
  # Padding slots point at an appended zero, so one gather fills values and padding alike.
  pad = len(time)
  sources = [np.append(row_item, 0).astype(np.int32), np.append(row_cate, 0).astype(np.int32),
             np.append(time, 0).astype(np.int64)]
  outs = [np.zeros((n, max_len), dtype=a.dtype) for a in sources]
  steps = np.arange(max_len)
  for lo in range(0, n, _CHUNK_ROWS):  # chunks of rows, not a per-row loop
    sl = slice(lo, lo + _CHUNK_ROWS)
    length = hist_len[sl, None]
    index = np.where(steps < length, rows[sl, None] - length + steps, pad)
    for source, out in zip(sources, outs):
      np.take(source, index, out=out[sl])
  return outs[0], outs[1], outs[2], hist_len


def _draw_negatives(rng: np.random.Generator, pool: np.ndarray, positives: np.ndarray, k: int,
                    source: str) -> np.ndarray:
  """(len(positives), k) item codes drawn from `pool` (one entry per interaction, so by popularity).

  Entries equal to the row's positive or to an earlier entry of the row are redrawn until none is left; the
  resulting set per row has the law of successive popularity-weighted draws without replacement.
  """
  m = len(positives)
  if k == 0 or m == 0:
    return np.zeros((m, k), dtype=np.int64)
  distinct = int(np.count_nonzero(np.bincount(pool)))
  if distinct - 1 < k:
    raise InputError(f"cannot draw {k} distinct negatives per row: only {distinct} distinct items remain "
                     "after sampling", source)
  negatives = pool[rng.integers(0, len(pool), size=(m, k))]
  todo = np.arange(m)
  for _ in range(_MAX_REDRAW_ROUNDS):
    bad = _offending(negatives[todo], positives[todo])
    todo_rows = bad.any(axis=1)
    if not todo_rows.any():
      return negatives
    todo, bad = todo[todo_rows], bad[todo_rows]
    r, c = np.nonzero(bad)
    negatives[todo[r], c] = pool[rng.integers(0, len(pool), size=len(r))]
  raise InputError(f"could not draw {k} distinct negatives for {len(todo)} rows in {_MAX_REDRAW_ROUNDS} "
                   "rounds: item popularity is too concentrated", source)


def _offending(negatives: np.ndarray, positives: np.ndarray) -> np.ndarray:
  """True where an entry equals the positive or repeats an earlier entry of its row."""
  bad = negatives == positives[:, None]
  order = np.argsort(negatives, axis=1, kind="stable")
  ordered = np.take_along_axis(negatives, order, axis=1)
  repeat = np.zeros(negatives.shape, dtype=bool)
  # Stable sort: among equal values the later entry comes second and is the one marked.
  np.put_along_axis(repeat, order[:, 1:], ordered[:, 1:] == ordered[:, :-1], axis=1)
  return bad | repeat
