"""Sequential preprocessing semantics on a hand-made table, sampling/negative laws, and the source cache."""
import dataclasses
import os

import numpy as np
import pandas as pd
import pytest

from recsys_jax.errors import InputError
from recsys_jax.preprocessing import sequential, sequential_sources
from recsys_jax.preprocessing.sequential import SequentialPrepConfig, preprocess
from recsys_jax.preprocessing.sequential_dataset import SPLITS

# File order is not time order; A's a3 and a4 tie at time 20 and keep file order.
ROWS = [("A", "a1", 30, "x"), ("B", "b1", 10, "y"), ("A", "a2", 10, "x"), ("C", "a1", 5, "x"),
        ("A", "a3", 20, "y"), ("A", "a4", 20, "x"), ("D", "a2", 1, "x"), ("C", "a2", 7, "x"),
        ("A", "a5", 40, "y"), ("D", "a3", 2, "y"), ("D", "a4", 3, "x"), ("E", "a1", 1, "x"),
        ("E", "a1", 2, "x"), ("E", "a2", 3, "x"), ("E", "a3", 4, "y")]
# Sorted: A: a2 a3 a4 a1 a5 (n=5); B: b1 (n=1); C: a1 a2 (n=2); D: a2 a3 a4 (n=3); E: a1 a1 a2 a3 (n=4).


def table(rows=ROWS) -> pd.DataFrame:
  return pd.DataFrame(rows, columns=["user", "item", "time", "cate"])


def decode(ds, split: str) -> dict:
  """Raw ids of a split: users, histories (real entries only), times and candidates."""
  s = ds.split(split)
  return {"user": [ds.user_vocab[u] for u in s.user],
          "hist": [[ds.item_vocab[i] for i in row[:n]] for row, n in zip(s.hist_item, s.hist_len)],
          "hist_cate": [[ds.cate_vocab[c] for c in row[:n]] for row, n in zip(s.hist_cate, s.hist_len)],
          "hist_time": [list(row[:n]) for row, n in zip(s.hist_time, s.hist_len)],
          "time": s.time.tolist(), "pos": [ds.item_vocab[i] for i in s.cand_item[:, 0]]}


@pytest.fixture(scope="module")
def small():
  return preprocess(table(), SequentialPrepConfig(valid_negatives=2, test_negatives=3), "small")


def test_vocabularies_by_train_count_then_first_encounter(small):
  # Train file: (a3 | a2), (a4 | a2 a3), (a1 | a1): a3, a2, a1 twice each (first seen in that order), a4 once.
  assert small.item_vocab.tolist() == ["default_mid", "a3", "a2", "a1", "a4"]
  assert small.cate_vocab.tolist() == ["default_cat", "x", "y"]  # x: 5, y: 2
  assert small.user_vocab.tolist() == ["A", "E"]  # 2 and 1 train rows; no reserved slot


def test_splits_positions_and_histories(small):
  train, valid, test = (decode(small, s) for s in SPLITS)
  # Train holds positions 1..n-3 of users with n >= 4.
  assert train["pos"] == ["a3", "a4", "a1"]
  assert train["hist"] == [["a2"], ["a2", "a3"], ["a1"]]
  assert train["user"] == ["A", "A", "E"]
  assert train["time"] == [20, 20, 2]
  assert train["hist_time"] == [[10], [10, 20], [1]]
  # Valid: position n-2 of users with n >= 3; unknown users map to index 0 (= "A"), as upstream.
  assert valid["hist"] == [["a2", "a3", "a4"], ["a2"], ["a1", "a1"]]
  assert valid["pos"] == ["a1", "a3", "a2"]
  assert small.valid.user.tolist() == [0, 0, 1]
  assert valid["hist_cate"] == [["x", "y", "x"], ["x"], ["x", "x"]]
  # Test: position n-1 of users with n >= 2; a5 is unseen in train -> 0 ("default_mid").
  assert test["pos"] == ["default_mid", "a2", "a4", "a3"]
  assert test["hist"] == [["a2", "a3", "a4", "a1"], ["a1"], ["a2", "a3"], ["a1", "a1", "a2"]]
  assert test["time"] == [40, 7, 3, 4]


def naive_recommenders(rows, max_len):
  """A line-by-line transcription of upstream's instance/split/history/vocab steps (no negatives)."""
  users = {}
  for user, item, time, cate in rows:
    users.setdefault(user, []).append((item, time, cate))
  lines = {"train": [], "valid": [], "test": []}
  for user, seq in users.items():
    seq = sorted(seq, key=lambda r: r[1])
    for i, (item, time, cate) in enumerate(seq):
      split = "train" if i < len(seq) - 2 else "valid" if i == len(seq) - 2 else "test"
      if i > 0:
        lines[split].append((user, item, cate, time, seq[:i]))
  counts = {"user": {}, "item": {}, "cate": {}}
  for user, item, cate, _, hist in lines["train"]:
    for kind, key in (("user", user), ("item", item), ("cate", cate)):
      counts[kind][key] = counts[kind].get(key, 0) + 1
    for h_item, _, h_cate in hist:
      counts["item"][h_item] = counts["item"].get(h_item, 0) + 1
      counts["cate"][h_cate] = counts["cate"].get(h_cate, 0) + 1
  # sorted(..., reverse=True) is stable, as upstream relies on.
  vocab = {k: [key for key, _ in sorted(c.items(), key=lambda kv: kv[1], reverse=True)]
           for k, c in counts.items()}
  decoded = {split: [(item, [h[0] for h in hist][-max_len:], [h[1] for h in hist][-max_len:])
                     for _, item, _, _, hist in ls] for split, ls in lines.items()}
  return vocab, decoded


def test_matches_a_naive_transcription_of_upstream():
  rng = np.random.default_rng(3)
  rows = [(f"u{rng.integers(60)}", f"i{min(rng.geometric(0.08), 40)}", int(rng.integers(0, 30)), "")
          for _ in range(900)]
  rows = [(u, i, t, f"c{int(i[1:]) % 7}") for u, i, t, _ in rows]
  ds = preprocess(table(rows), SequentialPrepConfig(max_len=6, valid_negatives=1, test_negatives=1), "n")
  vocab, decoded = naive_recommenders(rows, 6)
  assert ds.user_vocab.tolist() == vocab["user"]
  assert ds.item_vocab.tolist()[1:] == vocab["item"] and ds.cate_vocab.tolist()[1:] == vocab["cate"]
  for split in SPLITS:
    got = decode(ds, split)
    known = set(vocab["item"])
    def known_or_0(i):
      return i if i in known else "default_mid"
    expected = [(known_or_0(i), [known_or_0(h) for h in hist], times) for i, hist, times in decoded[split]]
    assert list(zip(got["pos"], got["hist"], got["hist_time"])) == expected, split


def test_padding_shapes_and_dtypes(small):
  for name in SPLITS:
    s = small.split(name)
    assert s.hist_item.shape == (len(s), 50) and s.hist_item.dtype == np.int32
    assert s.hist_time.dtype == np.int64 and s.time.dtype == np.int64
    pad = np.arange(50) >= s.hist_len[:, None]
    assert not s.hist_item[pad].any() and not s.hist_cate[pad].any() and not s.hist_time[pad].any()
  assert small.train.cand_item.shape == (3, 1)
  assert small.valid.cand_item.shape == (3, 3) and small.test.cand_item.shape == (4, 4)


def test_stats_count_dropped_users(small):
  st = small.stats
  assert st["users_total"] == 5 and st["interactions_total"] == 15
  assert st["users_dropped"] == 1            # B: a single interaction, no instance
  assert st["users_without_valid_row"] == 2  # B, C
  assert st["users_without_train_row"] == 3  # B, C, D
  assert (st["train_rows"], st["valid_rows"], st["test_rows"]) == (3, 3, 4)
  assert st["n_items"] == 5 and st["n_categories"] == 3 and st["sample_rate"] is None


def test_truncation_keeps_last_entries_left_aligned():
  ds = preprocess(table(), SequentialPrepConfig(max_len=2, valid_negatives=1, test_negatives=1), "t")
  test = decode(ds, "test")
  assert test["hist"] == [["a4", "a1"], ["a1"], ["a2", "a3"], ["a1", "a2"]]
  assert ds.test.hist_len.tolist() == [2, 1, 2, 2]
  assert ds.test.hist_time[0].tolist() == [20, 30]


def test_negatives_valid_distinct_and_categorised(small):
  item_cate = {"a1": "x", "a2": "x", "a3": "y", "a4": "x", "a5": "y", "b1": "y"}
  for split in ("valid", "test"):
    s = small.split(split)
    negatives = s.cand_item[:, 1:]
    for raw_pos, row in zip(decode(small, split)["pos"], negatives):
      names = [small.item_vocab[i] for i in row]
      assert raw_pos not in [n for n in names if n != "default_mid"]
    # Categories of negatives follow the item (unknown items keep their category when it is in vocab).
    assert set(s.cand_cate[:, 1:][negatives > 0].tolist()) <= {1, 2}
    for item_index, cate_index in zip(negatives[negatives > 0], s.cand_cate[:, 1:][negatives > 0]):
      assert small.cate_vocab[cate_index] == item_cate[small.item_vocab[item_index]]


def test_negatives_never_positive_nor_repeated_on_raw_codes():
  rng = np.random.default_rng(0)
  pool = rng.integers(0, 12, 5000)  # popularity via repetition
  positives = rng.integers(0, 12, 3000)
  negatives = sequential._draw_negatives(rng, pool, positives, 9, "t")
  assert negatives.shape == (3000, 9)
  assert not (negatives == positives[:, None]).any()
  assert all(len(set(row)) == 9 for row in negatives.tolist())


def test_negatives_are_popularity_weighted():
  # Every user: h (a/b/c for 1000/2000/3000 users), W (train), V (valid), T (test).
  heads = ["a"] * 1000 + ["b"] * 2000 + ["c"] * 3000
  rows = [(f"u{k}", it, t, "x") for k, h in enumerate(heads) for t, it in enumerate([h, "W", "V", "T"])]
  ds = preprocess(table(rows), SequentialPrepConfig(valid_negatives=1, test_negatives=1), "w")
  names = np.array(ds.item_vocab)
  # The pool is every interaction: W, V, T 6000 each, a 1000, b 2000, c 3000. Rejecting the positive leaves
  # W and the other held-out item 1/3 each (V and T are not in the train vocabulary: default_mid), a 1/18...
  for split in ("valid", "test"):
    negatives = names[ds.split(split).cand_item[:, 1]]
    for name, p in (("default_mid", 1 / 3), ("W", 1 / 3), ("a", 1 / 18), ("b", 1 / 9), ("c", 1 / 6)):
      share = np.mean(negatives == name)
      assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / 6000), (split, name, share)


def test_negative_law_on_raw_codes():
  rng = np.random.default_rng(1)
  pool = np.repeat(np.arange(5), [5000, 1000, 2000, 3000, 4000])
  positives = np.zeros(20000, dtype=np.int64)
  negatives = sequential._draw_negatives(rng, pool, positives, 2, "t")
  # Two successive draws without replacement from {1: 1, 2: 2, 3: 3, 4: 4}, excluding the positive 0.
  w = np.array([1, 2, 3, 4]) / 10
  first = np.bincount(negatives[:, 0], minlength=5)[1:] / 20000
  pair_set = np.bincount(negatives.reshape(-1), minlength=5)[1:] / 20000
  inclusion = w + np.array([sum(w[j] * w[i] / (1 - w[j]) for j in range(4) if j != i) for i in range(4)])
  assert np.allclose(first, w, atol=0.015) and np.allclose(pair_set, inclusion, atol=0.015)


def test_seed_reproducible_and_changes_draws():
  config = SequentialPrepConfig(valid_negatives=2, test_negatives=3, seed=7)
  a, b = preprocess(table(), config, "s"), preprocess(table(), config, "s")
  c = preprocess(table(), dataclasses.replace(config, seed=8), "s")
  for split in SPLITS:
    assert np.array_equal(a.split(split).cand_item, b.split(split).cand_item)
  assert not all(np.array_equal(a.split(s).cand_item, c.split(s).cand_item) for s in ("valid", "test"))


def test_item_sampling_law_and_filter():
  rng = np.random.default_rng(0)
  item = np.concatenate([np.zeros(1000, dtype=np.int64), np.arange(1, 100)])  # 100 items, item 0 is hot
  hot = sum(0 in sequential._sample_items(item, 0.01, rng, "t") for _ in range(400))
  assert abs(hot / 400 - 1000 / 1099) < 0.05  # one draw proportional to the interaction count
  sample = sequential._sample_items(item, 0.5, rng, "t")
  assert len(sample) == len(set(sample.tolist())) == 50


def test_sample_rate_keeps_only_sampled_items():
  rows = [(f"u{u}", f"i{(u * 7 + k) % 40}", k, "x") for u in range(200) for k in range(6)]
  ds = preprocess(table(rows), SequentialPrepConfig(sample_rate=0.5), "s")
  assert ds.stats["items_sampled"] == 20 and ds.stats["sample_rate"] == 0.5
  assert ds.stats["interactions_after_sampling"] < 1200
  assert len(ds.item_vocab) - 1 <= 20


@pytest.mark.parametrize("rows,message", [(ROWS[:3], "train split is empty"), ([], "no interactions")])
def test_empty_split_or_table(rows, message):
  with pytest.raises(InputError, match=message):
    preprocess(table(rows), SequentialPrepConfig(), "e")


def test_bad_config_and_columns():
  with pytest.raises(InputError, match="sample_rate"):
    preprocess(table(), SequentialPrepConfig(sample_rate=0.0), "c")
  with pytest.raises(InputError, match="keeps int"):
    preprocess(table(), SequentialPrepConfig(sample_rate=0.1), "c")  # int(6 * 0.1) = 0 items
  with pytest.raises(InputError, match="lack columns"):
    preprocess(table().drop(columns="cate"), SequentialPrepConfig(), "c")
  with pytest.raises(InputError, match="distinct negatives"):
    preprocess(table(), SequentialPrepConfig(test_negatives=6), "c")


# --- the cached entry point -------------------------------------------------------------------------------


def write_table(path, rows=ROWS) -> str:
  table(rows).rename(columns={"user": "uid", "item": "iid", "time": "ts"}).to_csv(path, sep="\t", index=False)
  return str(path)


def load(data_path, cache_dir, config=SequentialPrepConfig(valid_negatives=2, test_negatives=3)):
  # The command line's keys: "category"/"meta_category" alias "cate"/"meta_cate"; None keeps a default.
  return sequential_sources.load_sequential_dataset(
      "interactions", data_path=data_path, meta_path=None, config=config, cache_dir=str(cache_dir),
      columns={"user": "uid", "item": "iid", "time": "ts", "category": "cate", "meta_category": None})


def test_cache_reused_then_invalidated(tmp_path, monkeypatch):
  calls = []
  real = sequential_sources.preprocess
  monkeypatch.setattr(sequential_sources, "preprocess", lambda *a: calls.append(1) or real(*a))
  data = write_table(tmp_path / "t.tsv")
  first = load(data, tmp_path / "cache")
  second = load(data, tmp_path / "cache")
  assert len(calls) == 1 and len(os.listdir(tmp_path / "cache")) == 1
  for split in SPLITS:
    for field in ("user", "hist_item", "hist_cate", "hist_time", "hist_len", "time", "cand_item",
                  "cand_cate"):
      assert np.array_equal(getattr(first.split(split), field), getattr(second.split(split), field))
  assert second.item_vocab.tolist() == first.item_vocab.tolist() and second.stats == first.stats
  load(data, tmp_path / "cache", SequentialPrepConfig(valid_negatives=2, test_negatives=3, seed=1))
  assert len(calls) == 2 and len(os.listdir(tmp_path / "cache")) == 2
  write_table(tmp_path / "t.tsv", ROWS + [("E", "a4", 9, "x")])  # a changed file is a new source
  os.utime(data, ns=(1, 1))
  load(data, tmp_path / "cache")
  assert len(calls) == 3 and len(os.listdir(tmp_path / "cache")) == 3


def test_synthetic_source_uses_generator_with_seed(tmp_path, monkeypatch):
  import recsys_jax.synthetic.sequential as synthetic_sequential
  seen = {}

  def fake_generate(**kwargs):
    seen.update(kwargs)
    return table()

  monkeypatch.setattr(synthetic_sequential, "generate", fake_generate)
  config = SequentialPrepConfig(valid_negatives=1, test_negatives=1, seed=5)
  ds = sequential_sources.load_sequential_dataset("synthetic", data_path=None, meta_path=None, columns={},
                                                  config=config, cache_dir=str(tmp_path),
                                                  synthetic_options={"num_users": 9})
  assert seen == {"num_users": 9, "seed": 5}
  assert ds.name == "synthetic" and len(ds.test) == 4


def test_synthetic_source_real_generator(tmp_path):
  config = SequentialPrepConfig(max_len=10)
  kwargs = dict(data_path=None, meta_path=None, columns={}, config=config, cache_dir=str(tmp_path))
  options = {"num_users": 40}
  ds = sequential_sources.load_sequential_dataset("synthetic", synthetic_options=options, **kwargs)
  again = sequential_sources.load_sequential_dataset("synthetic", synthetic_options=options, **kwargs)
  assert len(ds.test) == 40 and ds.max_len == 10
  assert np.array_equal(ds.valid.cand_item, again.valid.cand_item)
  assert len(os.listdir(tmp_path)) == 1


def test_source_errors(tmp_path):
  kwargs = dict(meta_path=None, columns={}, config=SequentialPrepConfig(), cache_dir=str(tmp_path))
  with pytest.raises(InputError, match="valid datasets: synthetic, amazon, interactions, recommenders"):
    sequential_sources.load_sequential_dataset("movielens", data_path="x", **kwargs)
  with pytest.raises(InputError, match="--data_path"):
    sequential_sources.load_sequential_dataset("amazon", data_path=None, **kwargs)
  with pytest.raises(InputError, match="not found"):
    sequential_sources.load_sequential_dataset("amazon", data_path=str(tmp_path / "none.json"), **kwargs)
  kwargs["columns"] = {"usr": "u"}
  with pytest.raises(InputError, match="unknown column keys"):
    sequential_sources.load_sequential_dataset("interactions", data_path=str(tmp_path), **kwargs)


def test_real_musical_instruments_end_to_end(shared_dataset, tmp_path):
  path = shared_dataset("amazon-musical-instruments", "Musical_Instruments.json.gz")
  ds = sequential_sources.load_sequential_dataset("amazon", data_path=path, meta_path=None, columns={},
                                                  config=SequentialPrepConfig(), cache_dir=str(tmp_path))
  # 5-core: all 1,429 users have >= 5 reviews, so each gives one valid and one test row.
  assert (len(ds.train), len(ds.valid), len(ds.test)) == (10261 - 3 * 1429, 1429, 1429)
  assert ds.name == "Musical_Instruments" and ds.cate_vocab.tolist() == ["default_cat", "default"]
  assert ds.valid.cand_item.shape == (1429, 5) and ds.test.cand_item.shape == (1429, 10)


def test_real_grocery(shared_dataset):
  from recsys_jax.sources.interactions_table import read_interactions_table
  frame = read_interactions_table(shared_dataset("amazon-grocery", "train.csv"),
                                  meta_path=shared_dataset("amazon-grocery", "item_meta.csv"))
  ds = preprocess(frame, SequentialPrepConfig(sample_rate=0.1), "grocery")
  assert ds.stats["items_sampled"] == 868
  assert 0 < len(ds.train) and len(ds.valid) <= len(ds.test) <= 14681
  assert ds.stats["users_after_sampling"] - ds.stats["users_dropped"] == len(ds.test)
