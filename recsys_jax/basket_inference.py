"""Restore a trained PARSRec run from its workdir and complete given partial baskets.

    completer = BasketCompleter.from_workdir("workdirs/parsrec-synthetic-seed42")
    table = read_parsrec_text("baskets.txt", num_items=completer.num_items, min_sessions_per_user=1)
    completions = completer.complete(table, k=10)

Each user's last session in the table is the basket so far, its items in the order they were placed; the
user's earlier sessions are the history, within the run's history window, as in training. The model places
the listed items step by step (teacher forcing), then ranks every id for the next step, leaving out SOB, EOB
and the basket's own items. That step's attention over the basket's items comes with the ranking: it says
which of them the recommendation rests on.
"""
import dataclasses
import json
import os

import jax
import numpy as np

from recsys_jax import models
from recsys_jax.errors import InputError
from recsys_jax.preprocessing.baskets import last_sessions
from recsys_jax.sources.parsrec_text import SessionTable
from recsys_jax.tasks.basket_completion import history_bag
from recsys_jax.training import checkpoints


@dataclasses.dataclass
class Completions:
  """One row per completed basket, in (user, time) order."""
  user: np.ndarray          # (n,) int
  time: np.ndarray          # (n,) int
  basket: list[np.ndarray]  # the items placed so far
  items: np.ndarray         # (n, k) recommended ids, best first
  probability: np.ndarray   # (n, k) the model's softmax probability of each, over all ids
  attention: list[np.ndarray]  # per basket, the next step's attention weights over its items (sum 1)


class BasketCompleter:

  def __init__(self, model, config, variables, history_len: int | None):
    self.config, self.variables, self.history_len = config, variables, history_len
    self._apply = jax.jit(lambda v, batch: model.apply(config, v, batch, train=False)[0])

  @classmethod
  def from_workdir(cls, workdir: str, checkpoint: str = "best") -> "BasketCompleter":
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
      raise InputError("no config.json: not the workdir of a run of experiments/run.py", path=workdir)
    with open(path, encoding="utf-8") as f:
      run = json.load(f)
    if run.get("task") != "basket_completion":
      raise InputError(f"holds a {run.get('model')!r} run; expected a basket completion run (--model=parsrec)",
                       path=workdir)
    model = models.get(run["model"])
    # Every id is ranked; the evaluation's sampled negatives play no part here.
    config = dataclasses.replace(model.config_from_json(run["model_config"]), full_ranking=True)
    history_len = _history_len(workdir, run)
    return cls(model, config, checkpoints.restore_variables(workdir, checkpoint), history_len)

  @property
  def num_users(self) -> int:
    return self.config.num_users

  @property
  def num_items(self) -> int:
    return self.config.num_items

  def complete(self, table: SessionTable, k: int = 10, batch_size: int = 256,
               source: str | None = None) -> Completions:
    """Top-k next items for each user's last session of `table` (rows in file order, for error lines)."""
    beyond = table.user >= self.num_users
    if beyond.any():
      row = int(np.argmax(beyond))
      raise InputError(f"user_id {table.user[row]} is unknown to the model; expected user ids < "
                       f"{self.num_users}, the trained run's users", source, row + 2)
    if int(table.items.max(initial=0)) >= self.num_items:
      raise InputError(f"item ids must be < {self.num_items}, the trained run's catalogue", source)
    queries = last_sessions(table, history_len=self.history_len, source=source)
    lengths = queries.session_lengths()
    n, k = len(queries), min(k, self.num_items - 2 - int(lengths.max()))  # only ids that may be recommended
    items = np.zeros((n, k), np.int64)
    probability = np.zeros((n, k), np.float32)
    attention = []
    for lo in range(0, n, batch_size):
      index = np.arange(lo, min(lo + batch_size, n))
      scores, weights = self._next_step(queries, index, lengths[index], batch_size)
      # The basket's own items, SOB and EOB cannot be recommended.
      logits = np.where(np.arange(self.num_items) >= 2, scores, -np.inf)
      np.put_along_axis(logits, queries.session_matrix(index), -np.inf, axis=1)
      top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
      shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
      items[index] = top
      probability[index] = np.take_along_axis(shifted, top, axis=1) / shifted.sum(axis=1, keepdims=True)
      attention += [weights[r, :lengths[i]] for r, i in enumerate(index)]
    return Completions(user=queries.user, time=queries.time, basket=[queries.session(i) for i in range(n)],
                       items=items, probability=probability, attention=attention)

  def _next_step(self, queries, index: np.ndarray, lengths: np.ndarray,
                 batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores over all ids (m, I) and attention over the key slots (m, W) of the step after each basket."""
    m = index.shape[0]
    width = int(lengths.max()) + 1  # one step beyond the longest basket
    session = np.zeros((batch_size, width), np.int32)
    session[:m] = queries.session_matrix(index, width)
    length = np.zeros(batch_size, np.int32)
    length[:m] = lengths
    history = np.zeros(batch_size * self.num_items, np.float32)
    position, value = history_bag(queries, index, self.num_items)
    history[position] = value
    user = np.zeros(batch_size, np.int32)
    user[:m] = queries.user[index]
    batch = {"user": user, "session": session, "length": length, "history": history.reshape(batch_size, -1),
             "weight": (np.arange(batch_size) < m).astype(np.float32), "in_order": np.ones(batch_size, bool)}
    out = jax.device_get(self._apply(self.variables, batch))
    rows = np.arange(m)
    return (np.asarray(out["scores"][lengths, rows], np.float32),
            np.asarray(out["attention"][lengths, rows], np.float32))


def _history_len(workdir: str, run: dict) -> int | None:
  """The run's history window: in config.json, or for runs older than that, in results.json's data stats."""
  identity = run.get("data_identity", {})
  if "history_len" in identity:
    return identity["history_len"]
  path = os.path.join(workdir, "results.json")
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      stats = json.load(f).get("data", {}).get("stats", {})
    if "history_len" in stats:
      return stats["history_len"]
  raise InputError("records no history window (--history_len): not a finished basket completion run",
                   path=workdir)
