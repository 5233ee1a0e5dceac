"""PARSRec text format, the per-user split, histories, eval negatives and the binary cache."""
import json
import os

import numpy as np
import pytest

from recsys_jax import files
from recsys_jax.errors import InputError
from recsys_jax.preprocessing import baskets
from recsys_jax.sources import parsrec_text
from recsys_jax.sources.parsrec_text import HEADER, SessionTable, read_parsrec_text, write_parsrec_text

# User 0 has four sessions (listed out of time order), user 7 three, with a gap in user 7's times.
HAND_MADE = """user_id,time,session_length,session_items
0,2,2,5,6
0,0,3,2,3,4
7,10,1,9
0,1,1,7
7,4,2,8,2
0,3,2,3,8
7,5,3,4,5,6
"""


def _write(tmp_path, text: str, name: str = "data.txt") -> str:
  path = tmp_path / name
  path.write_bytes(text.encode())
  return str(path)


def _lines(*rows: str) -> str:
  return HEADER + "\n" + "\n".join(rows) + "\n"


def _sessions(split: baskets.BasketSplit) -> list[list[int]]:
  return [split.session(i).tolist() for i in range(len(split))]


def _histories(split: baskets.BasketSplit) -> list[list[int]]:
  return [split.history(i).tolist() for i in range(len(split))]


# ---- text format --------------------------------------------------------------------------------------

def test_text_round_trip(tmp_path):
  table = SessionTable.from_lengths([3, 3, 3, 0, 0, 0], [0, 1, 2, 5, 6, 7], [1, 3, 2, 2, 1, 4],
                                    [2, 10, 11, 12, 40000, 3, 7, 99, 5, 6, 4, 1234567, 8])
  path = str(tmp_path / "out" / "toy.txt")
  write_parsrec_text(path, table)
  text = open(path).read()
  assert text.splitlines()[:3] == [HEADER, "3,0,1,2", "3,1,3,10,11,12"]
  back = read_parsrec_text(path)
  for field in ("user", "time", "offsets", "items"):
    assert np.array_equal(getattr(back, field), getattr(table, field))
  assert back.user.dtype == np.int32 and back.time.dtype == np.int64 and back.items.dtype == np.int32
  dtype_text = open(tmp_path / "out" / "toy_columns_dtype.json").read()
  assert dtype_text.strip() == ('{"session_length":"int16","session_items":"object","history":"object",'
                                '"time":"int","user_id":"int32"}')
  assert list(json.loads(dtype_text)) == ["session_length", "session_items", "history", "time", "user_id"]
  assert sorted(os.listdir(tmp_path / "out")) == ["toy.txt", "toy_columns_dtype.json"]


def test_reader_accepts_crlf_negative_time_and_no_final_newline(tmp_path):
  path = _write(tmp_path, _lines("1,-5,1,2", "1,0,2,3,4", "1,9,1,5").replace("\n", "\r\n").rstrip())
  table = read_parsrec_text(path)
  assert table.time.tolist() == [-5, 0, 9] and table.items.tolist() == [2, 3, 4, 5]


GOOD = ("0,0,1,2", "0,1,1,3", "0,2,1,4")
BAD_CASES = [
    ("", 1, "empty file"),
    ("user,time,len,items\n0,0,1,2\n", 1, "expected the header"),
    (HEADER + "\n", 2, "no sessions"),
    (_lines(*GOOD, "1,0,3,2,3"), 5, "session_length is 3 but the line has 2 items"),
    (_lines(*GOOD, "1,0,1,2,3"), 5, "session_length is 1 but the line has 2 items"),
    (_lines(*GOOD, "1,0"), 5, "has 2 fields"),
    (_lines("0,0,1,2", "0,x,1,3", "0,2,1,4"), 3, "non-integer field 'x'"),
    (_lines("0,0,1,2", "0,1,1,3.5", "0,2,1,4"), 3, "non-integer field '3.5'"),
    (_lines("0,0,1,2", "0,1,1,3 ", "0,2,1,4"), 3, "non-integer field"),
    (_lines("0,0,1,2", "0,1,1,-", "0,2,1,4"), 3, "non-integer field '-'"),
    (_lines("0,0,1,2", "0,1,,3", "0,2,1,4"), 3, "empty field"),
    (_lines("0,0,1,2", "0,1,1,3,", "0,2,1,4"), 3, "empty field"),
    (_lines("0,0,1,2", "", "0,2,1,4"), 3, "empty line"),
    (_lines("0,0,1,2", "0,1,1,3", "0,2,1,4", "0,3,1,99999999999999999999"), 5, "has more than 18 digits"),
    (_lines(*GOOD, f"1,0,1,{parsrec_text.MAX_INFERRED_IDS}", "1,1,1,2", "1,2,1,3"), 5,
     f"item id {parsrec_text.MAX_INFERRED_IDS} is out of range; expected item ids >= 2 (0 and 1 are reserved "
     f"for SOB and EOB) and < {parsrec_text.MAX_INFERRED_IDS} (or a larger --num_items): ids index"),
    (_lines(*GOOD, "2000000000,0,1,5"), 5, "user_id 2000000000 is out of range"),
    (_lines(*GOOD, "1,0,2,5,1", "1,1,1,2", "1,2,1,3"), 5, "item id 1 is out of range"),
    (_lines(*GOOD, "1,0,2,5,0", "1,1,1,2", "1,2,1,3"), 5, "item id 0"),
    (_lines(*GOOD, "-1,0,1,5"), 5, "user_id -1 is out of range"),
    (_lines(*GOOD, "1,0,3,5,6,5", "1,1,1,2", "1,2,1,3"), 5, "item 5 appears twice"),
    (_lines("0,0,1,2", "0,1,1,3", "0,2,1,4", "0,1,1,5"), 5, "duplicate session (user_id=0, time=1), first on "
     "line 3"),
    (_lines(*GOOD, "4,0,1,2", "4,1,1,3", "9,0,1,2"), 5, "user 4 has 2 session(s)"),
]


@pytest.mark.parametrize("text,line,needle", BAD_CASES)
def test_reader_reports_bad_input_with_its_line(tmp_path, text, line, needle):
  path = _write(tmp_path, text)
  with pytest.raises(InputError) as err:
    read_parsrec_text(path)
  assert err.value.line == line and err.value.path == path
  assert needle in str(err.value) and f"{path}, line {line}: " in str(err.value)
  assert "\n" not in str(err.value)


def test_reader_checks_num_items_and_missing_file(tmp_path):
  path = _write(tmp_path, _lines("0,0,1,2", "0,1,1,3", "0,2,2,4,10"))
  assert len(read_parsrec_text(path, num_items=11)) == 3
  with pytest.raises(InputError, match=r"< the catalogue size 10 \(--num_items\)") as err:
    read_parsrec_text(path, num_items=10)
  assert err.value.line == 4
  with pytest.raises(InputError, match="file not found"):
    read_parsrec_text(str(tmp_path / "absent.txt"))
  with pytest.raises(InputError, match="is a folder, not a file"):
    read_parsrec_text(str(tmp_path))


def test_reader_is_fast(tmp_path):
  import time
  rng = np.random.default_rng(0)
  lengths = rng.integers(3, 11, 100_000)
  table = SessionTable.from_lengths(np.arange(100_000) // 50, np.arange(100_000) % 50, lengths,
                                    rng.integers(2, 2002, lengths.sum()))
  # Items may repeat inside a random session; make them distinct by construction.
  table.items[:] = 2 + (np.arange(lengths.sum()) % 2000)
  path = str(tmp_path / "big.txt")
  write_parsrec_text(path, table)
  start = time.perf_counter()
  back = read_parsrec_text(path)
  assert time.perf_counter() - start < 3.0  # about 0.15 s on an idle core
  assert np.array_equal(back.items, table.items)


# ---- split and histories ------------------------------------------------------------------------------

def test_split_semantics_and_histories(tmp_path):
  table = read_parsrec_text(_write(tmp_path, HAND_MADE))
  ds = baskets.split_sessions(table, name="hand", num_negatives=3, seed=0)
  assert ds.num_users == 8 and ds.num_items == 10
  assert ds.train.user.tolist() == [0, 0, 7] and ds.train.time.tolist() == [0, 1, 4]
  assert _sessions(ds.train) == [[2, 3, 4], [7], [8, 2]]
  assert ds.valid.user.tolist() == [0, 7] and ds.valid.time.tolist() == [2, 5]
  assert _sessions(ds.valid) == [[5, 6], [4, 5, 6]]
  assert _sessions(ds.test) == [[3, 8], [9]] and ds.test.time.tolist() == [3, 10]
  assert _histories(ds.train) == [[], [2, 3, 4], []]
  assert _histories(ds.valid) == [[2, 3, 4, 7], [8, 2]]
  assert _histories(ds.test) == [[2, 3, 4, 7, 5, 6], [8, 2, 4, 5, 6]]  # test history holds the valid session
  assert ds.train.negatives.shape == (3, 0) and ds.valid.negatives.shape == (2, 3)
  assert ds.train.session_lengths().tolist() == [3, 1, 2] and ds.test.history_lengths().tolist() == [6, 5]
  assert ds.stats["train_sessions"] == 3 and ds.stats["users"] == 2 and ds.max_session_len == 3


def test_history_window_in_time_units(tmp_path):
  table = read_parsrec_text(_write(tmp_path, HAND_MADE))
  ds = baskets.split_sessions(table, name="hand", history_len=1, num_negatives=0)
  assert _histories(ds.test) == [[5, 6], [4, 5, 6]][:1] + [[]]  # user 7: time 10 - 1 = 9 > 5
  assert _histories(ds.valid) == [[7], [8, 2]]
  ds = baskets.split_sessions(table, name="hand", history_len=6, num_negatives=0)
  assert _histories(ds.test)[1] == [8, 2, 4, 5, 6]  # times 4 and 5 lie in [10 - 6, 10)
  ds = baskets.split_sessions(table, name="hand", history_len=0, num_negatives=0)
  assert sum(len(h) for h in _histories(ds.test)) == 0


def test_histories_match_a_plain_reference():
  rng = np.random.default_rng(1)
  users = np.repeat(np.arange(30), rng.integers(3, 9, 30))
  times = rng.permutation(users.shape[0]) * 3  # distinct, shuffled, with gaps
  lengths = rng.integers(1, 5, users.shape[0])
  items = 2 + np.concatenate([rng.choice(50, n, replace=False) for n in lengths])
  table = SessionTable.from_lengths(users, times, lengths, items)
  for history_len in (None, 7, 40):
    ds = baskets.split_sessions(table, name="r", history_len=history_len, num_negatives=5)
    for split in (ds.train, ds.valid, ds.test):
      for i in range(len(split)):
        u, t = split.user[i], split.time[i]
        earlier = [k for k in np.argsort(table.time) if table.user[k] == u and table.time[k] < t
                   and (history_len is None or table.time[k] >= t - history_len)]
        expected = [x for k in earlier for x in table.session(k).tolist()]
        assert split.history(i).tolist() == expected


def test_matrices_and_take(tmp_path):
  ds = baskets.split_sessions(read_parsrec_text(_write(tmp_path, HAND_MADE)), name="hand", num_negatives=2)
  assert ds.train.session_matrix().tolist() == [[2, 3, 4], [7, 0, 0], [8, 2, 0]]
  assert ds.train.session_matrix(np.array([2]), width=4).tolist() == [[8, 2, 0, 0]]
  with pytest.raises(ValueError):
    ds.train.session_matrix(width=2)
  assert ds.test.history_matrix(width=3).tolist() == [[7, 5, 6], [4, 5, 6]]
  assert ds.valid.history_matrix().tolist() == [[2, 3, 4, 7], [8, 2, 0, 0]]
  sub = ds.test.take(np.array([1]))
  assert _sessions(sub) == [[9]] and _histories(sub) == [[8, 2, 4, 5, 6]]
  assert np.array_equal(sub.negatives, ds.test.negatives[1:])


def test_split_rejects_users_with_too_few_sessions():
  table = SessionTable.from_lengths([0, 0, 0, 1, 1], [0, 1, 2, 0, 1], [1] * 5, [2, 3, 4, 5, 6])
  with pytest.raises(InputError, match="user 1 has 2 session"):
    baskets.split_sessions(table, name="x")


# ---- negatives ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_items,k", [(2002, 99), (60, 20), (40, 30)])  # sparse, mixed and dense paths
def test_negatives_are_valid_unique_and_seeded(num_items, k):
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 10, 400)
  items = np.concatenate([2 + rng.choice(num_items - 2, n, replace=False) for n in lengths])
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  neg = baskets.sample_negatives(offsets, items, num_items, k, np.random.default_rng(5))
  assert neg.shape == (400, k) and neg.dtype == np.int32
  assert neg.min() >= 1 and neg.max() < num_items
  for i in range(400):
    assert len(set(neg[i].tolist())) == k
    assert not set(neg[i].tolist()) & set(items[offsets[i]:offsets[i + 1]].tolist())
  assert np.array_equal(neg, baskets.sample_negatives(offsets, items, num_items, k, np.random.default_rng(5)))
  other = baskets.sample_negatives(offsets, items, num_items, k, np.random.default_rng(6))
  assert not np.array_equal(neg, other)
  assert (neg == 1).any()  # EOB may be drawn, as in the original


def test_negatives_are_uniform():
  offsets = np.arange(0, 4001, 2)
  items = np.tile([2, 3], 2000)
  neg = baskets.sample_negatives(offsets, items, 12, 4, np.random.default_rng(0))
  counts = np.bincount(neg.reshape(-1), minlength=12)
  assert counts[0] == counts[2] == counts[3] == 0
  expected = 2000 * 4 / 9  # ids 1 and 4..11
  assert np.all(np.abs(counts[[1] + list(range(4, 12))] - expected) < 5 * np.sqrt(expected))


def test_too_few_negative_candidates():
  with pytest.raises(InputError, match="num_negatives=5"):
    baskets.sample_negatives(np.array([0, 3]), np.array([2, 3, 4]), 7, 5, np.random.default_rng(0))


# ---- binary cache -------------------------------------------------------------------------------------

def _load(path, cache, **kw):
  kw = {"history_len": None, "num_negatives": 3, "seed": 1, **kw}
  return baskets.load_basket_dataset(path, cache_dir=str(cache), **kw)


def test_cache_round_trip_reuse_and_rebuild(tmp_path):
  path = _write(tmp_path, HAND_MADE, "hand.txt")
  cache = tmp_path / "cache"
  built = _load(path, cache)
  assert built.stats["cache"] == "built" and built.name == "hand"
  folder = built.stats["cache_folder"]
  assert os.path.basename(folder).startswith("hand-") and os.path.dirname(folder) == str(cache)
  expected = baskets.split_sessions(read_parsrec_text(path), name="hand", num_negatives=3, seed=1)
  reused = _load(path, cache)
  assert reused.stats["cache"] == "reused"
  assert isinstance(reused.test.history_items, np.memmap)
  for split in baskets.SPLITS:
    for field in baskets._FIELDS:
      a, b = getattr(expected.split(split), field), getattr(reused.split(split), field)
      assert np.array_equal(a, b) and a.dtype == b.dtype, (split, field)
  assert (reused.num_users, reused.num_items) == (8, 10)
  assert _load(path, cache, rebuild=True).stats["cache"] == "built"
  other = _load(path, cache, num_negatives=2)
  assert other.stats["cache_folder"] != folder and other.valid.negatives.shape == (2, 2)
  assert not [p for p in os.listdir(cache) if p.startswith(".")]


def test_stale_cache_is_rebuilt(tmp_path):
  path = _write(tmp_path, HAND_MADE, "hand.txt")
  cache = tmp_path / "cache"
  _load(path, cache)
  _write(tmp_path, HAND_MADE.replace("7,10,1,9", "7,10,1,11"), "hand.txt")
  fresh = _load(path, cache)
  assert fresh.stats["cache"] == "built" and _sessions(fresh.test)[1] == [11] and fresh.num_items == 12
  os.utime(path, ns=(1, 1))  # same content, new mtime: the fingerprint no longer matches
  assert _load(path, cache).stats["cache"] == "built"
  os.remove(os.path.join(fresh.stats["cache_folder"], "train_history_items.npy"))  # a damaged cache
  assert _load(path, cache).stats["cache"] == "built"
  manifest_path = os.path.join(fresh.stats["cache_folder"], "manifest.json")
  manifest = json.load(open(manifest_path))
  manifest["config"]["seed"] = 2  # a manifest written for another config
  open(manifest_path, "w").write(json.dumps(manifest))
  assert _load(path, cache).stats["cache"] == "built"
  assert _load(path, cache).stats["cache"] == "reused"
  # Same size, modification time set back (as cp -p or rsync do): the change time still tells.
  stat = os.stat(path)
  _write(tmp_path, HAND_MADE.replace("7,10,1,9", "7,10,1,10"), "hand.txt")
  os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  edited = _load(path, cache)
  assert edited.stats["cache"] == "built" and _sessions(edited.test)[1] == [10]
  assert oct(os.stat(edited.stats["cache_folder"]).st_mode & 0o777) == oct(files.FOLDER_MODE)


def test_folders_of_a_killed_conversion_are_removed_once_old(tmp_path):
  path = _write(tmp_path, HAND_MADE, "hand.txt")
  cache = tmp_path / "cache"
  folder = os.path.basename(_load(path, cache).stats["cache_folder"])
  old, young = cache / f".tmp-{folder}-killed", cache / f".old-{folder}-running"
  old.mkdir()
  young.mkdir()
  os.utime(old, (1, 1))
  _load(path, cache, rebuild=True)
  assert not old.exists() and young.exists()


def test_no_partial_cache_after_an_error(tmp_path, monkeypatch):
  cache = tmp_path / "cache"
  bad = _write(tmp_path, HAND_MADE + "9,0,1,1\n", "bad.txt")
  with pytest.raises(InputError, match="line 9"):
    _load(bad, cache)
  assert not cache.exists() or not os.listdir(cache)

  path = _write(tmp_path, HAND_MADE, "hand.txt")
  first = _load(path, cache)
  real_save, calls = np.save, []

  def failing_save(file, arr, *a, **kw):
    calls.append(file)
    if len(calls) == 5:
      raise OSError("disk full")
    return real_save(file, arr, *a, **kw)

  monkeypatch.setattr(baskets.np, "save", failing_save)
  with pytest.raises(OSError, match="disk full"):
    _load(path, cache, rebuild=True)
  monkeypatch.undo()
  assert os.listdir(cache) == [os.path.basename(first.stats["cache_folder"])]  # the old cache survives
  assert _load(path, cache).stats["cache"] == "reused"
  calls.clear()
  monkeypatch.setattr(baskets.np, "save", failing_save)
  with pytest.raises(OSError, match="disk full"):
    _load(path, cache, seed=9)  # a new cache folder that fails half-way never appears
  assert os.listdir(cache) == [os.path.basename(first.stats["cache_folder"])]


def test_loader_missing_file(tmp_path):
  with pytest.raises(InputError, match="file not found"):
    _load(str(tmp_path / "nope.txt"), tmp_path / "cache")
  assert not (tmp_path / "cache").exists()


def test_dtype_json_path():
  assert parsrec_text.dtype_json_path("/a/b/syn.txt") == "/a/b/syn_columns_dtype.json"
