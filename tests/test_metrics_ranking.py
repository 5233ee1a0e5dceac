"""Tests for the sequential CTR ranking metrics against hand-made cases, sklearn and a numpy reference."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from recsys_jax.metrics import ranking

RTOL = 1e-5

# ---------------------------------------------------------------------------------------------------------
# Plain-numpy reference implementations (loops on purpose: they are the spec, not the fast path).
# ---------------------------------------------------------------------------------------------------------


def ref_auc(labels: np.ndarray, scores: np.ndarray) -> float:
  """Pairwise AUC: fraction of (positive, negative) pairs ordered correctly, ties 1/2."""
  pos = scores[labels > 0]
  neg = scores[labels <= 0]
  total = 0.0
  for p in pos:
    total += np.sum(p > neg) + 0.5 * np.sum(p == neg)
  return total / (len(pos) * len(neg))


def ref_ranks(scores: np.ndarray) -> np.ndarray:
  """1-based ranks: 1 + #strictly greater + #equal in an earlier column."""
  ranks = np.zeros(len(scores), dtype=np.int64)
  for i, s in enumerate(scores):
    ranks[i] = 1 + np.sum(scores > s) + np.sum(scores[:i] == s)
  return ranks


def ref_group_auc(labels: np.ndarray, scores: np.ndarray) -> float:
  values = [ref_auc(y, s) for y, s in zip(labels, scores) if 0 < np.sum(y > 0) < len(y)]
  return float(np.mean(values)) if values else math.nan


def ref_mrr(labels: np.ndarray, scores: np.ndarray) -> float:
  values = []
  for y, s in zip(labels, scores):
    if np.sum(y) == 0:
      continue
    r = ref_ranks(s)
    values.append(sum(y[i] / r[i] for i in range(len(y))) / np.sum(y))
  return float(np.mean(values))


def ref_dcg(gains_in_rank_order: np.ndarray, k: int) -> float:
  return sum((2.0**g - 1.0) / math.log2(r + 2) for r, g in enumerate(gains_in_rank_order[:k]))


def ref_ndcg(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
  values = []
  for y, s in zip(labels, scores):
    if np.sum(y) == 0:
      continue
    r = ref_ranks(s)
    in_rank_order = np.zeros(len(y))
    in_rank_order[r - 1] = y
    values.append(ref_dcg(in_rank_order, k) / ref_dcg(np.sort(y)[::-1], k))
  return float(np.mean(values))


def ref_hit(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
  values = []
  for y, s in zip(labels, scores):
    if np.sum(y) == 0:
      continue
    r = ref_ranks(s)
    values.append(float(any(y[i] > 0 and r[i] <= k for i in range(len(y)))))
  return float(np.mean(values))


def one_group(pos_col: int, scores: list[float]) -> tuple[np.ndarray, np.ndarray]:
  """A (1, C) group with a single positive at `pos_col`."""
  labels = np.zeros((1, len(scores)), np.float32)
  labels[0, pos_col] = 1.0
  return labels, np.asarray([scores], np.float32)


def all_group_metrics(labels: np.ndarray, scores: np.ndarray, k: int) -> tuple[float, float, float]:
  """MRR, NDCG@k and HR@k of the jnp implementation."""
  return (float(ranking.mean_mrr(labels, scores)), float(ranking.ndcg_at_k(labels, scores, k)),
          float(ranking.hit_at_k(labels, scores, k)))


# ---------------------------------------------------------------------------------------------------------
# Hand-made cases with known answers.
# ---------------------------------------------------------------------------------------------------------


def test_positive_ranked_first():
  labels, scores = one_group(2, [0.1, 0.2, 0.9, 0.3, 0.4])
  assert float(ranking.mean_mrr(labels, scores)) == pytest.approx(1.0)
  assert float(ranking.ndcg_at_k(labels, scores, 2)) == pytest.approx(1.0)
  assert float(ranking.hit_at_k(labels, scores, 1)) == 1.0
  assert float(ranking.group_auc(labels, scores)) == pytest.approx(1.0)


def test_positive_ranked_third():
  labels, scores = one_group(0, [0.5, 0.9, 0.1, 0.7, 0.2])
  assert float(ranking.mean_mrr(labels, scores)) == pytest.approx(1 / 3, rel=RTOL)
  assert float(ranking.ndcg_at_k(labels, scores, 2)) == 0.0
  assert float(ranking.ndcg_at_k(labels, scores, 4)) == pytest.approx(0.5, rel=RTOL)
  assert float(ranking.hit_at_k(labels, scores, 2)) == 0.0
  assert float(ranking.hit_at_k(labels, scores, 4)) == 1.0
  assert float(ranking.group_auc(labels, scores)) == pytest.approx(0.5)


def test_ties_are_broken_by_column_order():
  # Positive in column 2 ties with columns 0 and 1 and is beaten by 0.9: rank 1 + 1 + 2 = 4.
  labels, scores = one_group(2, [0.5, 0.5, 0.5, 0.1, 0.9])
  mrr, ndcg4, hr4 = all_group_metrics(labels, scores, 4)
  assert mrr == pytest.approx(0.25, rel=RTOL)
  assert ndcg4 == pytest.approx(1 / math.log2(5), rel=RTOL)
  assert hr4 == 1.0
  assert float(ranking.hit_at_k(labels, scores, 2)) == 0.0
  # Against negatives [0.5, 0.5, 0.1, 0.9]: 1/2 + 1/2 + 1 + 0 over 4 pairs.
  assert float(ranking.group_auc(labels, scores)) == pytest.approx(0.5, rel=RTOL)
  # The first of the tied columns takes the best tied rank: 2.
  labels, scores = one_group(0, [0.5, 0.5, 0.5, 0.1, 0.9])
  assert float(ranking.mean_mrr(labels, scores)) == pytest.approx(0.5, rel=RTOL)
  assert float(ranking.hit_at_k(labels, scores, 2)) == 1.0


def test_all_equal_scores():
  scores = [0.3] * 5
  for col in range(5):
    labels, s = one_group(col, scores)
    assert float(ranking.group_auc(labels, s)) == pytest.approx(0.5)
    assert float(ranking.mean_mrr(labels, s)) == pytest.approx(1 / (col + 1), rel=RTOL)
    assert float(ranking.auc(labels, s)) == pytest.approx(0.5)


def test_several_positives_per_group():
  # Ranks of the positives: 1 and 3 of 5.
  labels = np.array([[1, 0, 1, 0, 0]], np.float32)
  scores = np.array([[0.9, 0.8, 0.7, 0.1, 0.05]], np.float32)
  assert float(ranking.mean_mrr(labels, scores)) == pytest.approx((1 + 1 / 3) / 2, rel=RTOL)
  ideal = 1 + 1 / math.log2(3)
  assert float(ranking.ndcg_at_k(labels, scores, 3)) == pytest.approx((1 + 0.5) / ideal, rel=RTOL)
  assert float(ranking.ndcg_at_k(labels, scores, 1)) == pytest.approx(1.0)
  # 0.9 beats all three negatives, 0.7 beats two of them.
  assert float(ranking.group_auc(labels, scores)) == pytest.approx(5 / 6, rel=RTOL)


def test_groups_lacking_a_class_are_excluded():
  labels = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 1], [0, 1, 0]], np.float32)
  scores = np.array([[0.9, 0.1, 0.2], [0.5, 0.4, 0.3], [0.1, 0.2, 0.3], [0.9, 0.1, 0.2]], np.float32)
  # Groups 0 and 3 are valid for AUC (1.0 and 0.0); group 2 (all positive) counts for the rank metrics.
  assert float(ranking.group_auc(labels, scores)) == pytest.approx(0.5)
  # Reciprocal ranks: 1, (1 + 1/2 + 1/3) / 3 and 1/3.
  assert float(ranking.mean_mrr(labels, scores)) == pytest.approx((1 + 11 / 18 + 1 / 3) / 3, rel=RTOL)
  assert float(ranking.hit_at_k(labels, scores, 1)) == pytest.approx(2 / 3, rel=RTOL)
  # Same (4, 3) shape as above so no new compile: no group has both classes, then no group has a positive.
  assert math.isnan(float(ranking.group_auc(labels[[1, 2, 1, 2]], scores)))
  assert math.isnan(float(ranking.mean_mrr(np.zeros_like(labels), scores)))


def test_pooled_auc_nan_with_one_class():
  scores = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]], np.float32)
  assert math.isnan(float(ranking.auc(np.ones((1, 5)), scores)))
  assert math.isnan(float(ranking.auc(np.zeros((1, 5)), scores)))


def test_k_larger_than_candidates_and_bad_k():
  labels, scores = one_group(0, [0.1, 0.9, 0.5, 0.0, 0.0])
  assert float(ranking.ndcg_at_k(labels, scores, 10)) == pytest.approx(0.5, rel=RTOL)
  assert float(ranking.hit_at_k(labels, scores, 10)) == 1.0
  with pytest.raises(ValueError):
    ranking.ndcg_at_k(labels, scores, 0)
  with pytest.raises(ValueError):
    ranking.hit_at_k(labels, scores, -1)


# ---------------------------------------------------------------------------------------------------------
# Against sklearn and the numpy reference on random data.
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decimals", [1, 2, 6])
def test_auc_matches_sklearn_with_ties(decimals):
  rng = np.random.default_rng(decimals)
  labels = (rng.random(5000) < 0.3).astype(np.float32)
  # Rounding creates many ties; the label shifts scores so the AUC is far from 0.5.
  scores = np.round(np.clip(rng.random(5000) * 0.8 + 0.2 * labels, 0, 1), decimals).astype(np.float32)
  got = float(ranking.auc(labels, scores))
  np.testing.assert_allclose(got, roc_auc_score(labels, scores), rtol=RTOL)
  np.testing.assert_allclose(got, ref_auc(labels, scores), rtol=RTOL)


def test_auc_one_million_rows_float32():
  rng = np.random.default_rng(7)
  n = 1_000_000
  labels = (rng.random(n) < 0.2).astype(np.float32)
  scores = np.round(rng.random(n) * 0.7 + 0.3 * labels, 3).astype(np.float32)
  got = ranking.auc(labels.reshape(-1, 5), scores.reshape(-1, 5))
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), roc_auc_score(labels, scores), rtol=RTOL)


def test_logloss_matches_sklearn():
  rng = np.random.default_rng(3)
  labels = (rng.random(4000) < 0.4).astype(np.float32)
  scores = rng.random(4000).astype(np.float32)
  # Include exact 0 and 1 predictions (both right and wrong) and values next to 1 so the clipping matters.
  scores[:4] = [0.0, 1.0, 0.0, 1.0]
  labels[:4] = [1.0, 0.0, 0.0, 1.0]
  scores[4:8] = np.nextafter(np.float32(1), np.float32(0))
  clipped = np.clip(scores.astype(np.float64), 1e-11, 1 - 1e-11)
  expected = log_loss(labels, clipped, labels=[0, 1])
  np.testing.assert_allclose(float(ranking.logloss(labels, scores)), expected, rtol=RTOL)


# One shape for every seed: each new shape costs a jit compile (a new k does not).
@pytest.mark.parametrize("seed,groups,cols", [(0, 100, 8), (1, 100, 8)])
def test_group_metrics_match_reference(seed, groups, cols):
  rng = np.random.default_rng(seed)
  labels = (rng.random((groups, cols)) < 0.35).astype(np.float32)
  labels[np.arange(groups), rng.integers(0, cols, groups)] = 1.0  # at least one positive per group
  scores = np.round(rng.random((groups, cols)), 1).astype(np.float32)  # plenty of ties
  np.testing.assert_allclose(float(ranking.group_auc(labels, scores)), ref_group_auc(labels, scores),
                             rtol=RTOL)
  np.testing.assert_allclose(float(ranking.mean_mrr(labels, scores)), ref_mrr(labels, scores), rtol=RTOL)
  for k in (1, 2, 4, 6, 10):  # k = 10 > C = 8 covers a k beyond the group size
    np.testing.assert_allclose(float(ranking.ndcg_at_k(labels, scores, k)), ref_ndcg(labels, scores, k),
                               rtol=RTOL)
    np.testing.assert_allclose(float(ranking.hit_at_k(labels, scores, k)), ref_hit(labels, scores, k),
                               rtol=RTOL)


def single_positive_groups(seed: int, decimals: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """20,000 groups of 1 positive (in a random column) + 4 negatives, and each positive's 1-based rank."""
  rng = np.random.default_rng(seed)
  groups, cols = 20_000, 5
  pos_col = rng.integers(0, cols, groups)
  labels = np.zeros((groups, cols), np.float32)
  labels[np.arange(groups), pos_col] = 1.0
  scores = rng.random((groups, cols)).astype(np.float32)
  if decimals is not None:
    scores = np.round(scores, decimals).astype(np.float32)
  pos_score = scores[np.arange(groups), pos_col][:, None]
  earlier = np.arange(cols)[None, :] < pos_col[:, None]
  rank = 1 + np.sum(scores > pos_score, axis=1) + np.sum((scores == pos_score) & earlier, axis=1)
  return labels, scores, rank


def test_random_ranking_sanity():
  labels, scores, _ = single_positive_groups(11, decimals=None)
  metrics = ranking.sequential_ctr_metrics(labels, scores, ks=(2, 4, 6))
  assert metrics["mean_mrr"] == pytest.approx(sum(1 / r for r in range(1, 6)) / 5, abs=0.01)  # 0.457
  assert metrics["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 5, abs=0.01)  # 0.326
  assert metrics["hr@2"] == pytest.approx(0.4, abs=0.01)
  assert metrics["hr@4"] == pytest.approx(0.8, abs=0.01)
  assert metrics["hr@6"] == 1.0
  assert metrics["group_auc"] == pytest.approx(0.5, abs=0.01)
  assert metrics["auc"] == pytest.approx(0.5, abs=0.01)


# ---------------------------------------------------------------------------------------------------------
# The numpy entry point and jit compatibility.
# ---------------------------------------------------------------------------------------------------------


def test_sequential_ctr_metrics_keys_and_values():
  # Same shape and ks as the sanity test, so the jitted program is reused; rounding makes ties.
  labels, scores, rank = single_positive_groups(5, decimals=1)
  metrics = ranking.sequential_ctr_metrics(labels, scores, ks=(2, 4, 6))
  assert list(metrics) == ["auc", "logloss", "group_auc", "mean_mrr", "ndcg@2", "hr@2", "ndcg@4", "hr@4",
                           "ndcg@6", "hr@6"]
  assert all(type(v) is float for v in metrics.values())
  np.testing.assert_allclose(metrics["auc"], roc_auc_score(labels.ravel(), scores.ravel()), rtol=RTOL)
  clipped = np.clip(scores.ravel().astype(np.float64), 1e-11, 1 - 1e-11)
  np.testing.assert_allclose(metrics["logloss"], log_loss(labels.ravel(), clipped), rtol=RTOL)
  # With one positive per group, the group metrics follow from the positive's rank alone.
  pos_score = np.sum(scores * labels, axis=1, keepdims=True)
  beaten = np.sum(scores < pos_score, axis=1) + 0.5 * (np.sum(scores == pos_score, axis=1) - 1)
  np.testing.assert_allclose(metrics["group_auc"], np.mean(beaten / 4), rtol=RTOL)
  np.testing.assert_allclose(metrics["mean_mrr"], np.mean(1 / rank), rtol=RTOL)
  for k in (2, 4, 6):
    np.testing.assert_allclose(metrics[f"ndcg@{k}"], np.mean((rank <= k) / np.log2(rank + 1)), rtol=RTOL)
    np.testing.assert_allclose(metrics[f"hr@{k}"], np.mean(rank <= k), rtol=RTOL)
  with pytest.raises(ValueError):
    ranking.sequential_ctr_metrics(labels.ravel(), scores.ravel())
  with pytest.raises(ValueError):
    ranking.sequential_ctr_metrics(labels, scores, ks=(0,))


def test_metrics_compose_under_jit_in_float32():
  labels, scores = one_group(0, [0.5, 0.9, 0.1, 0.7, 0.2])

  @jax.jit
  def everything(y, s):
    return jnp.stack([ranking.auc(y, s), ranking.logloss(y, s), ranking.group_auc(y, s),
                      ranking.mean_mrr(y, s), ranking.ndcg_at_k(y, s, k=4), ranking.hit_at_k(y, s, k=2)])

  out = everything(jnp.asarray(labels), jnp.asarray(scores))
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out)[[0, 2, 3, 4, 5]], [0.5, 0.5, 1 / 3, 0.5, 0.0], rtol=RTOL)


def test_k_can_be_traced():
  rng = np.random.default_rng(9)
  labels = (rng.random((200, 5)) < 0.35).astype(np.float32)
  labels[:, 0] = 1.0
  scores = np.round(rng.random((200, 5)), 1).astype(np.float32)
  traced = jax.jit(ranking.ndcg_at_k)
  for k in (1, 3):
    np.testing.assert_allclose(float(traced(labels, scores, jnp.int32(k))), ref_ndcg(labels, scores, k),
                               rtol=RTOL)
