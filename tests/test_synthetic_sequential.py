"""Tests for the synthetic sequential interaction generator."""
import time

import numpy as np
import pandas as pd
import pytest

from recsys_jax.errors import InputError
from recsys_jax.synthetic import sequential

SMALL = dict(num_users=300, seed=7)


@pytest.fixture(scope="module")
def default_df() -> pd.DataFrame:
  return sequential.generate()


def _pairs(df: pd.DataFrame):
  """Consecutive same-user pairs: (gap seconds, prev cate, next cate, prev item, next item)."""
  user = df["user"].to_numpy()
  same = user[1:] == user[:-1]
  gap = np.diff(df["time"].to_numpy())[same]
  idx = np.flatnonzero(same)
  cate, item = df["cate"].to_numpy(), df["item"].to_numpy()
  return gap, cate[idx], cate[idx + 1], item[idx], item[idx + 1]


def test_deterministic_for_seed_and_different_for_another():
  a = sequential.generate(**SMALL)
  b = sequential.generate(**SMALL)
  c = sequential.generate(num_users=300, seed=8)
  pd.testing.assert_frame_equal(a, b)
  assert not (len(a) == len(c) and (a["item"].to_numpy() == c["item"].to_numpy()).all())
  assert not a["time"].equals(c["time"])


def test_columns_dtypes_and_ids():
  df = sequential.generate(**SMALL)
  assert list(df.columns) == ["user", "item", "time", "cate"]
  assert df["time"].dtype == np.int64
  for col in ("user", "item", "cate"):
    assert pd.api.types.is_string_dtype(df[col])
  assert df["user"].str.fullmatch(r"u\d{4}").all()
  assert df["item"].str.fullmatch(r"i\d{2}_\d{3}").all()
  assert df["cate"].str.fullmatch(r"c\d{2}").all()
  # The item id carries its category: i03_017 belongs to c03.
  assert (df["item"].str[1:3] == df["cate"].str[1:3]).all()
  assert df["user"].iloc[0] == "u0001"
  assert df["time"].min() >= sequential.START_TIME
  assert df["time"].min() < sequential.START_TIME + 365 * 86400


def test_lengths_grouping_and_time_order():
  df = sequential.generate(num_users=400, min_length=5, max_length=12, seed=3)
  user = df["user"].to_numpy()
  # Grouped: each user occupies one contiguous block.
  starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
  assert len(starts) == df["user"].nunique() == 400
  lengths = np.diff(np.r_[starts, len(df)])
  assert lengths.min() >= 5 and lengths.max() <= 12
  assert len(np.unique(lengths)) > 4  # lengths really vary
  same = user[1:] == user[:-1]
  assert (np.diff(df["time"].to_numpy())[same] > 0).all()


def test_short_gap_keeps_category(default_df):
  gap, c0, c1, _, _ = _pairs(default_df)
  short = gap < sequential.SHORT_GAP_THRESHOLD
  assert 0.5 < short.mean() < 0.7
  assert (c0 == c1)[short].mean() > 0.7
  assert (c0 == c1)[~short].mean() < 0.4


def test_short_gap_follows_successor(default_df):
  succ = sequential.successors(seed=42)
  gap, c0, c1, i0, i1 = _pairs(default_df)
  # Ids are "iCC_JJJ": category CC, index JJJ within the category.
  c_idx = pd.Series(i0).str[1:3].astype(int).to_numpy()
  j0 = pd.Series(i0).str[4:].astype(int).to_numpy()
  j1 = pd.Series(i1).str[4:].astype(int).to_numpy()
  is_succ = (succ[c_idx, j0] == j1) & (c0 == c1)
  short = gap < sequential.SHORT_GAP_THRESHOLD
  same = c0 == c1
  assert is_succ[short & same].mean() > 0.5
  assert is_succ[~short & same].mean() < 0.1  # popularity draw: near chance
  # The successor table is one cycle per category: a permutation with no fixed points.
  n = succ.shape[1]
  assert (np.sort(succ, axis=1) == np.arange(n)).all()
  assert (succ != np.arange(n)).all()


def test_user_preferences_are_concentrated(default_df):
  stats = sequential.describe(default_df)
  assert stats["mean_top_category_share"] > 4 / 20
  # A flatter Dirichlet gives flatter users: the knob really drives the preference.
  flat = sequential.describe(sequential.generate(num_users=500, dirichlet_alpha=50.0, p_short=0.0))
  assert flat["mean_top_category_share"] < stats["mean_top_category_share"] - 0.15


def test_item_popularity_is_skewed(default_df):
  stats = sequential.describe(default_df)
  assert stats["top10pct_item_share"] > 0.25
  flat = sequential.describe(sequential.generate(num_users=500, zipf_exponent=0.0))
  assert flat["top10pct_item_share"] < 0.2


def test_describe_default_size(default_df):
  stats = sequential.describe(default_df)
  assert stats["users"] == 2000 and stats["categories"] == 20 and stats["items"] == 800
  assert 17 < stats["mean_length"] < 21
  assert 28000 < stats["train_instances"] < 36000
  assert stats["interactions"] == len(default_df)
  assert stats["top_next_item_share_short_same_cate"] > 0.5


def test_no_short_structure_without_short_gaps():
  df = sequential.generate(num_users=500, p_short=0.0, seed=1)
  gap, c0, c1, _, _ = _pairs(df)
  assert (gap >= sequential.SHORT_GAP_THRESHOLD).mean() > 0.95
  assert (c0 == c1).mean() < 0.4


def test_bad_knobs_raise():
  with pytest.raises(InputError):
    sequential.generate(min_length=10, max_length=5)
  with pytest.raises(InputError):
    sequential.generate(p_short=1.5)
  with pytest.raises(InputError):
    sequential.generate(long_gap_mean=0)


def test_generation_time_default_size():
  start = time.perf_counter()
  sequential.generate()
  elapsed = time.perf_counter() - start
  print(f"generate() default size: {elapsed:.3f} s")
  assert elapsed < 10.0


def test_process_is_documented():
  text = sequential.GENERATIVE_PROCESS
  for word in ("Dirichlet", "successor", "short", "long", "popularity", "p_stay", "p_successor"):
    assert word in text
