"""The array form of a sequential CTR dataset: what preprocessing produces and the task consumes.

One row is one user history plus a group of candidates. Column 0 of `cand_item`/`cand_cate` is the positive;
valid and test rows carry their fixed sampled negatives in columns 1..K; train rows carry the positive only
(the task draws training negatives from other rows of the batch, as `recommenders` does).
Histories are left-aligned and right-padded with 0, which is also the vocabulary's default/unknown id.
"""
import dataclasses
import json

import numpy as np

from recsys_jax import files
from recsys_jax.errors import InputError

SPLITS = ("train", "valid", "test")
_SPLIT_FIELDS = ("user", "hist_item", "hist_cate", "hist_time", "hist_len", "time", "cand_item", "cand_cate")


@dataclasses.dataclass
class SequentialSplit:
  user: np.ndarray        # (N,) int32 user index
  hist_item: np.ndarray   # (N, L) int32 item index, 0 = padding / unknown
  hist_cate: np.ndarray   # (N, L) int32 category index, 0 = padding / unknown
  hist_time: np.ndarray   # (N, L) int64 unix seconds, 0 in padding
  hist_len: np.ndarray    # (N,) int32 number of real history entries (<= L)
  time: np.ndarray        # (N,) int64 unix seconds of the target interaction
  cand_item: np.ndarray   # (N, 1+K) int32, column 0 = positive
  cand_cate: np.ndarray   # (N, 1+K) int32

  def __len__(self) -> int:
    return int(self.user.shape[0])

  @property
  def num_negatives(self) -> int:
    return int(self.cand_item.shape[1]) - 1

  def take(self, index: np.ndarray) -> "SequentialSplit":
    return SequentialSplit(**{f: getattr(self, f)[index] for f in _SPLIT_FIELDS})


@dataclasses.dataclass
class SequentialDataset:
  name: str
  train: SequentialSplit
  valid: SequentialSplit
  test: SequentialSplit
  user_vocab: np.ndarray  # (U,) str: index -> raw user id
  item_vocab: np.ndarray  # (I,) str: index -> raw item id; index 0 is the default/unknown item
  cate_vocab: np.ndarray  # (C,) str: index -> raw category; index 0 is the default/unknown category
  stats: dict             # counts worth reporting (users dropped, rows per split, ...)

  @property
  def max_len(self) -> int:
    return int(self.train.hist_item.shape[1])

  def split(self, name: str) -> SequentialSplit:
    return getattr(self, name)

  def item_categories(self) -> np.ndarray:
    """(I,) category index of each item index, read off every (item, category) pair in the splits."""
    out = np.zeros(len(self.item_vocab), np.int32)
    for split in (self.split(s) for s in SPLITS):
      for items, cates in ((split.hist_item, split.hist_cate), (split.cand_item, split.cand_cate)):
        out[items.ravel()] = cates.ravel()
    out[0] = 0
    return out

  def check_nonempty(self, source: str) -> None:
    for name in SPLITS:
      if len(self.split(name)) == 0:
        raise InputError(f"the {name} split is empty after preprocessing ({self.stats}); "
                         "each user needs at least 3 interactions for train, valid and test rows", source)

  def save(self, path: str) -> None:
    arrays = {f"{s}/{f}": getattr(self.split(s), f) for s in SPLITS for f in _SPLIT_FIELDS}
    # Vocabularies as fixed-width unicode (pandas hands out object arrays), so loading needs no pickle.
    arrays.update(user_vocab=self.user_vocab.astype(str), item_vocab=self.item_vocab.astype(str),
                  cate_vocab=self.cate_vocab.astype(str),
                  name=np.asarray(self.name), stats_json=np.asarray(json.dumps(self.stats, sort_keys=True)))
    files.save_npz(path, arrays)

  @classmethod
  def load(cls, path: str) -> "SequentialDataset":
    z = files.load_npz(path)
    splits = {s: SequentialSplit(**{f: z[f"{s}/{f}"] for f in _SPLIT_FIELDS}) for s in SPLITS}
    return cls(name=str(z["name"]), user_vocab=z["user_vocab"], item_vocab=z["item_vocab"],
               cate_vocab=z["cate_vocab"], stats=json.loads(str(z["stats_json"])), **splits)

