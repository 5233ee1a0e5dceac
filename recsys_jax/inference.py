"""Restore a trained sequential CTR model from its workdir and rank items for user histories.

    rec = SequentialRecommender.from_workdir("workdirs/slirec-synthetic-seed42")
    rec.recommend([[("i03_017", 1431000000), ("i03_018", 1431003600)]], k=10)

The workdir holds everything needed (config.json, vocab.npz, the best orbax checkpoint), not the dataset.
Candidates are scored in jitted (histories x item-chunk) blocks, so memory stays bounded for any catalogue.
"""
import json
import os
from typing import Sequence

import jax
import numpy as np

from recsys_jax import files, models
from recsys_jax.errors import InputError
from recsys_jax.preprocessing.sequential_dataset import SequentialSplit
from recsys_jax.tasks.sequential_ctr import pack_positions, time_features
from recsys_jax.training import checkpoints

History = Sequence[tuple[str, int]]  # (raw item id, unix seconds), oldest first


class SequentialRecommender:

  def __init__(self, model, model_config, variables, item_vocab, item_cate, max_len):
    self.model, self.config, self.variables = model, model_config, variables
    self.item_vocab, self.item_cate, self.max_len = item_vocab, item_cate, max_len
    self._index = {item: i for i, item in enumerate(item_vocab)}
    self._score = jax.jit(lambda v, b: model.apply(model_config, v, b, train=False)[0])

  @classmethod
  def from_workdir(cls, workdir: str) -> "SequentialRecommender":
    for name in ("config.json", "vocab.npz", os.path.join("checkpoints", "best")):
      if not os.path.exists(os.path.join(workdir, name)):
        raise InputError(f"no {name}: not the workdir of a finished sequential CTR run", path=workdir)
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
      run = json.load(f)
    model = models.get(run["model"])
    config = model.config_from_json(run["model_config"])
    variables = checkpoints.restore_variables(workdir)
    vocab = files.load_npz(os.path.join(workdir, "vocab.npz"))
    return cls(model, config, variables, vocab["item_vocab"], vocab["item_cate"], int(vocab["max_len"]))

  def encode(self, histories: Sequence[History], now: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Histories -> the task's batch layout (without candidates). Unknown items map to index 0."""
    n, length = len(histories), self.max_len
    hist_item = np.zeros((n, length), np.int32)
    hist_time = np.zeros((n, length), np.int64)
    hist_len = np.zeros(n, np.int32)
    for row, history in enumerate(histories):  # per user, once; not on the scoring hot path
      history = list(history)[-length:]
      if not history:
        raise InputError(f"history {row} is empty; at least one (item, time) pair is needed")
      hist_item[row, :len(history)] = [self._index.get(str(item), 0) for item, _ in history]
      hist_time[row, :len(history)] = [int(t) for _, t in history]
      hist_len[row] = len(history)
    target_time = hist_time[np.arange(n), hist_len - 1] if now is None else np.asarray(now, np.int64)
    split = SequentialSplit(user=np.zeros(n, np.int32), hist_item=hist_item,
                            hist_cate=self.item_cate[hist_item], hist_time=hist_time, hist_len=hist_len,
                            time=target_time, cand_item=np.zeros((n, 1), np.int32),
                            cand_cate=np.zeros((n, 1), np.int32))
    first, to_now = time_features(split)
    mask = (np.arange(length)[None, :] < hist_len[:, None]).astype(np.float32)
    return {"hist_item": hist_item, "hist_cate": split.hist_cate, "hist_mask": mask, "hist_len": hist_len,
            "time_first": first, "time_now": to_now, "weight": np.ones(n, np.float32)}

  def recommend(self, histories: Sequence[History], k: int = 10, now: Sequence[int] | None = None,
                exclude_seen: bool = True, batch_size: int = 32,
                chunk: int = 128) -> list[list[tuple[str, float]]]:
    """Top-k (item id, probability) per history over the whole catalogue (item index 0 excluded)."""
    base = self.encode(histories, now)
    n_items = len(self.item_vocab)
    k = min(k, n_items - 1)
    results = []
    for start in range(0, len(histories), batch_size):
      rows = slice(start, start + batch_size)
      batch = {key: value[rows] for key, value in base.items()}
      b = len(batch["weight"])
      batch = {key: _pad_rows(value, batch_size) for key, value in batch.items()}
      batch.update(pack_positions(batch["hist_mask"]))
      scores = np.full((batch_size, n_items), -np.inf, np.float32)
      for lo in range(1, n_items, chunk):
        items = np.arange(lo, lo + chunk) % n_items  # fixed chunk width: one compilation
        cand = np.broadcast_to(items, (batch_size, chunk)).astype(np.int32)
        logits = np.asarray(self._score(self.variables, {**batch, "cand_item": cand,
                                                          "cand_cate": self.item_cate[cand]}))
        width = min(chunk, n_items - lo)
        scores[:, lo:lo + width] = logits[:, :width]
      scores = scores[:b]
      if exclude_seen:
        np.put_along_axis(scores, batch["hist_item"][:b], -np.inf, axis=1)
        scores[:, 0] = -np.inf
      top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
      probs = 1 / (1 + np.exp(-np.take_along_axis(scores, top, axis=1)))
      results += [[(str(self.item_vocab[i]), float(p)) for i, p in zip(t, pr)] for t, pr in zip(top, probs)]
    return results


def _pad_rows(x: np.ndarray, size: int) -> np.ndarray:
  pad = size - x.shape[0]
  return np.concatenate([x, np.repeat(x[:1], pad, axis=0)]) if pad else x
