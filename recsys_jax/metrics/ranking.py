"""Ranking metrics for the sequential CTR task (SLi-Rec, A2SVD), as jitted jnp functions.

They reproduce Microsoft `recommenders`' `deeprec_utils.cal_metric`: `auc` and `logloss` pool every row, and
the group metrics (`group_auc`, `mean_mrr`, `ndcg@k`, `hr@k`) average a per-group value over impression
groups, given as arrays of shape (G, C): one row per group (typically 1 positive + N negatives).

Conventions:
  * Scores are probabilities (the caller applies the sigmoid); labels are 0/1 (a label > 0 counts as positive;
    NDCG uses the raw label in its gain 2^y - 1).
  * AUC counts a tied positive/negative pair as 1/2, like `sklearn.metrics.roc_auc_score`. The pooled AUC
    is NaN when only one class is present (sklearn raises there).
  * Groups lacking a positive (or, for `group_auc`, lacking either class) are left out of the mean over
    groups; `recommenders` raises an error on such groups instead. A metric with no usable group is NaN.
  * Ties in the rank metrics (MRR, NDCG, HR) are broken by column order: an item's rank is
    1 + #items with a strictly greater score + #items with an equal score in an earlier column, i.e. its
    position in a stable descending sort.
  * All functions are jitted and work in float32. `k` in `ndcg_at_k` / `hit_at_k` may be a Python int or a
    traced integer (a new k does not recompile); `sequential_ctr_metrics` runs every metric in one program.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

# Predictions are clipped to [_EPS, 1 - _EPS] for the log loss, as in `recommenders`.
_EPS = 1e-11


def _auc_1d(labels: jnp.ndarray, scores: jnp.ndarray) -> jnp.ndarray:
  """ROC AUC of one vector (ties 1/2): the Mann-Whitney U from average ranks, divided by P * N.

  The rank-sum form `sum(pos ranks) - P(P+1)/2` is rewritten as, per positive, the number of negatives
  ranked below it plus half the negatives in its tie group: those counts are integers below 2^24, so they
  stay exact in float32, where a raw sum of ranks over ~1M rows (~1e12) would not.
  """
  n = scores.shape[0]
  order = jnp.argsort(scores)
  s = scores[order]
  pos = labels[order] > 0
  neg = (~pos).astype(jnp.int32)
  neg_incl = jnp.cumsum(neg)
  neg_excl = neg_incl - neg
  idx = jnp.arange(n, dtype=jnp.int32)
  # Tie groups are runs of equal sorted scores; find each run's first and last index with running max/min.
  starts = jnp.concatenate([jnp.ones((1,), bool), s[1:] != s[:-1]])
  ends = jnp.concatenate([s[1:] != s[:-1], jnp.ones((1,), bool)])
  first = jax.lax.cummax(jnp.where(starts, idx, 0))
  last = jax.lax.cummin(jnp.where(ends, idx, n - 1), reverse=True)
  neg_below = neg_excl[first]
  neg_tied = neg_incl[last] - neg_below
  n_neg = jnp.sum(neg).astype(jnp.float32)
  n_pos = n - n_neg
  # Divide per positive before summing so the sum stays O(n) rather than O(n^2) in magnitude.
  per_pos = (neg_below.astype(jnp.float32) + 0.5 * neg_tied.astype(jnp.float32)) / n_neg
  u = jnp.sum(jnp.where(pos, per_pos, 0.0))
  return jnp.where((n_pos > 0) & (n_neg > 0), u / n_pos, jnp.nan)


def _as_f32(x: jnp.ndarray) -> jnp.ndarray:
  return jnp.asarray(x, jnp.float32)


def _auc_impl(labels: jnp.ndarray, scores: jnp.ndarray) -> jnp.ndarray:
  return _auc_1d(_as_f32(labels).reshape(-1), _as_f32(scores).reshape(-1))


def _logloss_impl(labels: jnp.ndarray, scores: jnp.ndarray) -> jnp.ndarray:
  y = _as_f32(labels).reshape(-1)
  p = _as_f32(scores).reshape(-1)
  # 1 - 1e-11 rounds to 1 in float32, so clip p and 1 - p separately (same bound, no log(0)).
  log_p = jnp.log(jnp.clip(p, _EPS, 1.0))
  log_q = jnp.log(jnp.clip(1.0 - p, _EPS, 1.0))
  return -jnp.mean(y * log_p + (1.0 - y) * log_q)


def _masked_mean(values: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
  """Mean of `values` over rows where `valid`; NaN when no row is valid."""
  count = jnp.sum(valid)
  total = jnp.sum(jnp.where(valid, values, 0.0))
  return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


def _group_auc_impl(labels: jnp.ndarray, scores: jnp.ndarray) -> jnp.ndarray:
  y = _as_f32(labels)
  per_group = jax.vmap(_auc_1d)(y, _as_f32(scores))
  n_pos = jnp.sum(y > 0, axis=1)
  valid = (n_pos > 0) & (n_pos < y.shape[1])
  return _masked_mean(per_group, valid)


@jax.jit
def auc(labels: jnp.ndarray, scores: jnp.ndarray) -> jnp.ndarray:
  """ROC AUC over all rows pooled (any shape), ties counting 1/2; NaN if a class is missing."""
  return _auc_impl(labels, scores)


@jax.jit
def logloss(labels: jnp.ndarray, scores: jnp.ndarray) -> jnp.ndarray:
  """Mean binary cross-entropy over all rows, predictions clipped to [1e-11, 1 - 1e-11]."""
  return _logloss_impl(labels, scores)


@jax.jit
def group_auc(labels: jnp.ndarray, scores: jnp.ndarray) -> jnp.ndarray:
  """Mean per-group ROC AUC over (G, C) groups, ties 1/2; groups lacking either class are excluded."""
  return _group_auc_impl(labels, scores)


def _check_k(k: int | jnp.ndarray) -> None:
  """Rejects a concrete k below 1; a traced k (inside a caller's jit) cannot be checked here."""
  if isinstance(k, (int, np.integer)) and k < 1:
    raise ValueError(f"k must be a positive integer, got {k!r}")


def _labels_by_rank(labels: jnp.ndarray, scores: jnp.ndarray) -> jnp.ndarray:
  """Labels of each (G, C) group reordered by score descending, ties kept in column order."""
  # argsort is stable, and negating keeps equal scores equal, so ties keep their column order.
  order = jnp.argsort(-_as_f32(scores), axis=1, stable=True)
  return jnp.take_along_axis(_as_f32(labels), order, axis=1)


def _mrr_impl(labels: jnp.ndarray, scores: jnp.ndarray) -> jnp.ndarray:
  y = (_labels_by_rank(labels, scores) > 0).astype(jnp.float32)
  ranks = jnp.arange(1, y.shape[1] + 1, dtype=jnp.float32)
  n_pos = jnp.sum(y, axis=1)
  per_group = jnp.sum(y / ranks, axis=1) / jnp.maximum(n_pos, 1.0)
  return _masked_mean(per_group, n_pos > 0)


def _ndcg_impl(labels: jnp.ndarray, scores: jnp.ndarray, k: int | jnp.ndarray) -> jnp.ndarray:
  y_ranked = _labels_by_rank(labels, scores)
  ranks = jnp.arange(1, y_ranked.shape[1] + 1, dtype=jnp.float32)
  # Masking ranks above k (rather than slicing) lets k be traced, so a new k needs no recompile.
  discount = jnp.where(ranks <= k, 1.0 / jnp.log2(ranks + 1.0), 0.0)
  dcg = jnp.sum((jnp.exp2(y_ranked) - 1.0) * discount, axis=1)
  # The ideal ordering puts the largest labels first.
  y_ideal = -jnp.sort(-_as_f32(labels), axis=1)
  idcg = jnp.sum((jnp.exp2(y_ideal) - 1.0) * discount, axis=1)
  valid = jnp.any(_as_f32(labels) > 0, axis=1)
  return _masked_mean(dcg / jnp.where(idcg > 0, idcg, 1.0), valid)


def _hit_impl(labels: jnp.ndarray, scores: jnp.ndarray, k: int | jnp.ndarray) -> jnp.ndarray:
  y_ranked = _labels_by_rank(labels, scores)
  ranks = jnp.arange(1, y_ranked.shape[1] + 1)
  hit = jnp.any((y_ranked > 0) & (ranks <= k), axis=1).astype(jnp.float32)
  valid = jnp.any(_as_f32(labels) > 0, axis=1)
  return _masked_mean(hit, valid)


@jax.jit
def mean_mrr(labels: jnp.ndarray, scores: jnp.ndarray) -> jnp.ndarray:
  """Mean over groups of `sum_r y_r / r / sum y` (rank r from 1); groups without positives are excluded."""
  return _mrr_impl(labels, scores)


_ndcg_jit = jax.jit(_ndcg_impl)
_hit_jit = jax.jit(_hit_impl)


def ndcg_at_k(labels: jnp.ndarray, scores: jnp.ndarray, k: int | jnp.ndarray) -> jnp.ndarray:
  """Mean over groups of DCG@k / ideal DCG@k with gains 2^y - 1; groups without positives are excluded.

  `k` may be a Python int (checked to be >= 1; k > C means all C) or a traced integer.
  """
  _check_k(k)
  return _ndcg_jit(labels, scores, k)


def hit_at_k(labels: jnp.ndarray, scores: jnp.ndarray, k: int | jnp.ndarray) -> jnp.ndarray:
  """Fraction of groups with a positive among the top k; groups without positives are excluded."""
  _check_k(k)
  return _hit_jit(labels, scores, k)


@functools.partial(jax.jit, static_argnames=("ks",))
def _all_metrics(labels: jnp.ndarray, scores: jnp.ndarray, ks: tuple[int, ...]) -> dict[str, jnp.ndarray]:
  # One jitted program for every metric: one compile per (shape, ks) instead of one per metric and k.
  out = {
      "auc": _auc_impl(labels, scores),
      "logloss": _logloss_impl(labels, scores),
      "group_auc": _group_auc_impl(labels, scores),
      "mean_mrr": _mrr_impl(labels, scores),
  }
  for k in ks:
    out[f"ndcg@{k}"] = _ndcg_impl(labels, scores, k)
    out[f"hr@{k}"] = _hit_impl(labels, scores, k)
  return out


def sequential_ctr_metrics(labels: np.ndarray, scores: np.ndarray,
                           ks: tuple[int, ...] = (2, 4, 6)) -> dict[str, float]:
  """All sequential CTR metrics of (G, C) labels and probability scores, as Python floats.

  Keys: `auc`, `logloss`, `group_auc`, `mean_mrr`, then `ndcg@{k}` and `hr@{k}` for each k in `ks`.
  """
  labels = np.asarray(labels, np.float32)
  scores = np.asarray(scores, np.float32)
  if labels.ndim != 2 or labels.shape != scores.shape:
    raise ValueError(f"labels and scores must share a (G, C) shape, got {labels.shape} and {scores.shape}")
  ks = tuple(int(k) for k in ks)
  for k in ks:
    _check_k(k)
  out = _all_metrics(jnp.asarray(labels), jnp.asarray(scores), ks)
  return {name: float(out[name]) for name in ("auc", "logloss", "group_auc", "mean_mrr")} | {
      name: float(out[name]) for k in ks for name in (f"ndcg@{k}", f"hr@{k}")}
