"""PARSRec's leave-last-session-out split, user histories, fixed eval negatives and the binary cache.

Per user, sessions in time order: the last goes to test, the second-last to valid, the rest to train. A
session's history is the concatenation, in time order, of the items of the same user's sessions with time
in [t - history_len, t) (all earlier sessions when history_len is None), as the original `build_history`;
so the test history includes the valid session. Splits keep (user, time) order; batching may re-sort by
length. Valid/test sessions carry `num_negatives` ids drawn without replacement from [1, num_items) minus
the session's items (EOB=1 may be drawn, as in the original), fixed by the seed.

The cache is a folder of `.npy` files plus `manifest.json`, written into a temporary folder and renamed into
place, and memory-mapped on load.
"""
import dataclasses
import json
import os
import shutil
import tempfile
import time

import numpy as np

from recsys_jax import files
from recsys_jax.errors import InputError
from recsys_jax.sources.parsrec_text import MIN_SESSIONS_PER_USER, SessionTable, read_parsrec_text

SPLITS = ("train", "valid", "test")
_FIELDS = ("user", "time", "session_offsets", "session_items", "history_offsets", "history_items",
           "negatives")
_CACHE_FORMAT = 1  # bump when the cached layout or the split semantics change


@dataclasses.dataclass
class BasketSplit:
  """One split's sessions and histories, flattened with offsets."""
  user: np.ndarray             # (N,) int32
  time: np.ndarray             # (N,) int64
  session_offsets: np.ndarray  # (N+1,) int64 into session_items
  session_items: np.ndarray    # (total,) int32, each session's items in file order
  history_offsets: np.ndarray  # (N+1,) int64 into history_items
  history_items: np.ndarray    # (total_h,) int32, the user's earlier items in time order
  negatives: np.ndarray        # (N, K) int32 fixed eval negatives; (N, 0) for train

  def __len__(self) -> int:
    return int(self.user.shape[0])

  @property
  def num_negatives(self) -> int:
    return int(self.negatives.shape[1])

  def session_lengths(self) -> np.ndarray:
    return np.diff(self.session_offsets)

  def history_lengths(self) -> np.ndarray:
    return np.diff(self.history_offsets)

  def session(self, i: int) -> np.ndarray:
    return np.asarray(self.session_items[self.session_offsets[i]:self.session_offsets[i + 1]])

  def history(self, i: int) -> np.ndarray:
    return np.asarray(self.history_items[self.history_offsets[i]:self.history_offsets[i + 1]])

  def session_matrix(self, index: np.ndarray | None = None, width: int | None = None) -> np.ndarray:
    """(n, width) int32 sessions, right-padded with 0 (SOB); width defaults to the longest selected."""
    index = np.arange(len(self)) if index is None else np.asarray(index)
    lengths = self.session_lengths()[index]
    width = int(lengths.max(initial=0)) if width is None else width
    if lengths.max(initial=0) > width:
      raise ValueError(f"a session has {lengths.max()} items, more than width={width}")
    return _padded(self.session_items, self.session_offsets[index], lengths, width)

  def history_matrix(self, index: np.ndarray | None = None, width: int | None = None) -> np.ndarray:
    """(n, width) int32: the last `width` history items (all when None), left-aligned, padded with 0."""
    index = np.arange(len(self)) if index is None else np.asarray(index)
    lengths = self.history_lengths()[index]
    width = int(lengths.max(initial=0)) if width is None else width
    kept = np.minimum(lengths, width)
    return _padded(self.history_items, self.history_offsets[index + 1] - kept, kept, width)

  def take(self, index: np.ndarray) -> "BasketSplit":
    """A new split holding rows `index` (copied into memory)."""
    index = np.asarray(index)
    s_items, s_off = _ragged_gather(self.session_items, self.session_offsets[index],
                                    self.session_lengths()[index])
    h_items, h_off = _ragged_gather(self.history_items, self.history_offsets[index],
                                    self.history_lengths()[index])
    return BasketSplit(user=np.asarray(self.user[index]), time=np.asarray(self.time[index]),
                       session_offsets=s_off, session_items=s_items, history_offsets=h_off,
                       history_items=h_items, negatives=np.asarray(self.negatives[index]))


@dataclasses.dataclass
class BasketDataset:
  name: str
  train: BasketSplit
  valid: BasketSplit
  test: BasketSplit
  num_users: int  # max user id + 1 (user ids index the embedding table)
  num_items: int  # max item id + 1, counting 0 (SOB / padding) and 1 (EOB)
  stats: dict

  def split(self, name: str) -> BasketSplit:
    return getattr(self, name)

  @property
  def max_session_len(self) -> int:
    return max(int(self.split(s).session_lengths().max(initial=0)) for s in SPLITS)


def _padded(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
  out = np.zeros((lengths.shape[0], width), np.int32)
  col = np.arange(width)
  mask = col < lengths[:, None]
  out[mask] = values[(starts[:, None] + col)[mask]]
  return out


def _ragged_gather(values: np.ndarray, starts: np.ndarray,
                   lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Concatenates values[starts[k]:starts[k]+lengths[k]] over k, without a Python loop."""
  offsets = np.zeros(lengths.shape[0] + 1, np.int64)
  np.cumsum(lengths, out=offsets[1:])
  index = np.arange(offsets[-1], dtype=np.int64) + np.repeat(starts - offsets[:-1], lengths)
  return np.asarray(values[index], np.int32), offsets


def sample_negatives(offsets: np.ndarray, items: np.ndarray, num_items: int, num_negatives: int,
                     rng: np.random.Generator) -> np.ndarray:
  """(n, K) ids drawn uniformly without replacement from [1, num_items) minus each session's items.

  Rejection with redraw: draw K ids per row, redraw those inside the session or repeated in the row, until
  none are left. Rows whose pool is under 2K would converge slowly, so they rank random keys over all ids
  instead. Both rules are invariant under relabelling the pool, so each row is a uniform K-subset.
  """
  n = offsets.shape[0] - 1
  lengths = np.diff(offsets)
  pool = num_items - 1 - lengths  # session items are distinct ids >= 2, all inside [1, num_items)
  if num_negatives == 0 or n == 0:
    return np.zeros((n, num_negatives), np.int32)
  if pool.min() < num_negatives:
    raise InputError(f"a session leaves only {pool.min()} candidate negative ids in [1, {num_items}); "
                     f"num_negatives={num_negatives} needs at least that many")
  row_of = np.repeat(np.arange(n, dtype=np.int64), lengths)
  # The sentinel keeps the lookups below in range even when every session is empty.
  session_keys = np.append(np.sort(row_of * num_items + items), np.iinfo(np.int64).max)
  out = np.zeros((n, num_negatives), np.int64)
  dense = pool < 2 * num_negatives
  sparse_rows = np.flatnonzero(~dense)
  cand = rng.integers(1, num_items, size=(sparse_rows.shape[0], num_negatives))
  rows = np.arange(sparse_rows.shape[0])
  while rows.shape[0]:
    sub = cand[rows]
    keys = sparse_rows[rows, None] * num_items + sub
    bad = session_keys[np.searchsorted(session_keys, keys)] == keys
    order = np.argsort(sub, axis=1, kind="stable")
    ranked = np.take_along_axis(sub, order, axis=1)
    repeat = ranked[:, 1:] == ranked[:, :-1]  # keeps the first occurrence, redraws the later ones
    r, c = np.nonzero(repeat)
    bad[r, order[:, 1:][r, c]] = True
    r, c = np.nonzero(bad)
    sub[r, c] = rng.integers(1, num_items, size=r.shape[0])
    cand[rows] = sub
    rows = rows[np.unique(r)]
  out[sparse_rows] = cand
  dense_rows = np.flatnonzero(dense)
  if dense_rows.shape[0]:
    keys = rng.random((dense_rows.shape[0], num_items))
    keys[:, 0] = np.inf
    in_dense = np.isin(row_of, dense_rows)
    keys[np.searchsorted(dense_rows, row_of[in_dense]), items[in_dense]] = np.inf
    out[dense_rows] = np.argpartition(keys, num_negatives - 1, axis=1)[:, :num_negatives]
  return out.astype(np.int32)


def split_sessions(table: SessionTable, *, name: str, history_len: int | None = None, num_negatives: int = 99,
                   seed: int = 0, num_items: int | None = None, source: str | None = None) -> BasketDataset:
  """Splits sessions per user by time, builds histories and draws the fixed eval negatives."""
  if num_negatives < 0:
    raise InputError(f"num_negatives={num_negatives}; expected >= 0", source)
  if len(table) == 0:
    raise InputError("no sessions; expected at least one user with 3 sessions", source)
  max_item = int(table.items.max(initial=1))
  num_items = max_item + 1 if num_items is None else num_items
  if max_item >= num_items:
    raise InputError(f"item id {max_item} >= num_items={num_items}", source)
  s = _by_user_and_time(table, history_len, source)
  if s.per_user.min() < MIN_SESSIONS_PER_USER:
    k = int(np.argmax(s.per_user < MIN_SESSIONS_PER_USER))
    raise InputError(f"user {s.user[k]} has {s.per_user[k]} session(s); expected at least "
                     f"{MIN_SESSIONS_PER_USER} (train, valid, test)", source)
  rng = np.random.default_rng(seed)
  splits = {}
  for split, rows in (("train", np.flatnonzero(s.from_end >= 2)), ("valid", np.flatnonzero(s.from_end == 1)),
                      ("test", np.flatnonzero(s.from_end == 0))):
    splits[split] = s.rows(rows, num_items, 0 if split == "train" else num_negatives, rng)
  lengths = np.diff(s.offsets)
  stats = {
      "sessions": int(s.user.shape[0]), "users": int(s.new_user.sum()), "num_users": int(s.user.max()) + 1,
      "num_items": num_items, "item_ids_used": int(np.unique(s.items).shape[0]),
      "purchases": int(s.items.shape[0]),
      "mean_session_length": float(lengths.mean()), "max_session_length": int(lengths.max()),
      "history_len": history_len, "num_negatives": num_negatives, "seed": seed,
      **{f"{k}_sessions": len(splits[k]) for k in SPLITS},
      **{f"{k}_items": int(splits[k].session_items.shape[0]) for k in SPLITS},
      **{f"{k}_history_items": int(splits[k].history_items.shape[0]) for k in SPLITS},
  }
  return BasketDataset(name=name, num_users=int(s.user.max()) + 1, num_items=num_items, stats=stats, **splits)


def last_sessions(table: SessionTable, *, history_len: int | None = None, source: str | None = None) -> BasketSplit:
  """Each user's last session, with the history built as for training (no negatives): the baskets to complete."""
  if len(table) == 0:
    raise InputError("no sessions; expected at least one", source)
  s = _by_user_and_time(table, history_len, source)
  return s.rows(np.flatnonzero(s.from_end == 0), 0, 0, None)


@dataclasses.dataclass
class _Sorted:
  """Sessions sorted by (user, time), with each one's first history session and its rank from the user's end."""
  user: np.ndarray
  time: np.ndarray
  items: np.ndarray
  offsets: np.ndarray
  new_user: np.ndarray
  per_user: np.ndarray     # the user's session count, per session
  from_end: np.ndarray     # 0 for the user's last session, 1 for the second-last, ...
  first: np.ndarray        # index of the first session in the history window

  def rows(self, rows: np.ndarray, num_items: int, num_negatives: int,
           rng: np.random.Generator | None) -> BasketSplit:
    s_items, s_off = _ragged_gather(self.items, self.offsets[rows], self.offsets[rows + 1] - self.offsets[rows])
    first = self.first[rows]
    h_items, h_off = _ragged_gather(self.items, self.offsets[first], self.offsets[rows] - self.offsets[first])
    negatives = sample_negatives(s_off, s_items, num_items, num_negatives, rng)
    return BasketSplit(user=self.user[rows].astype(np.int32), time=self.time[rows].astype(np.int64),
                       session_offsets=s_off, session_items=s_items, history_offsets=h_off,
                       history_items=h_items, negatives=negatives)


def _by_user_and_time(table: SessionTable, history_len: int | None, source: str | None) -> _Sorted:
  if history_len is not None and history_len < 0:
    raise InputError(f"history_len={history_len}; expected None (all earlier sessions) or >= 0", source)
  order = np.lexsort((table.time, table.user))
  user, time = table.user[order], table.time[order]
  items, offsets = _ragged_gather(table.items, table.offsets[order], table.lengths()[order])
  new_user = np.concatenate([[True], user[1:] != user[:-1]])
  if np.any(~new_user & (np.concatenate([[False], time[1:] == time[:-1]]))):
    raise InputError("duplicate (user_id, time) sessions; expected unique pairs", source)
  user_start = np.maximum.accumulate(np.where(new_user, np.arange(user.shape[0]), 0))
  user_end = np.append(np.flatnonzero(new_user)[1:], user.shape[0])[np.cumsum(new_user) - 1]
  return _Sorted(user=user, time=time, items=items, offsets=offsets, new_user=new_user,
                 per_user=user_end - user_start, from_end=user_end - 1 - np.arange(user.shape[0]),
                 first=_history_start(user, time, user_start, history_len))


def _history_start(user: np.ndarray, time: np.ndarray, user_start: np.ndarray,
                   history_len: int | None) -> np.ndarray:
  """Index of the first session of the same user with time >= t - history_len (rows sorted by user, time)."""
  if history_len is None or history_len > int(time.max()) - int(time.min()):
    return user_start
  # Search a single sorted key, (user rank, time rank), for (user rank, rank of t - history_len).
  distinct = np.unique(time)
  user_rank = np.cumsum(np.concatenate([[0], user[1:] != user[:-1]]))
  stride = distinct.shape[0] + 1
  key = user_rank * stride + np.searchsorted(distinct, time)
  query = user_rank * stride + np.searchsorted(distinct, time - history_len)
  return np.searchsorted(key, query)


def cache_folder(text_path: str, cache_dir: str, *, history_len: int | None, num_negatives: int, seed: int,
                 num_items: int | None = None) -> str:
  """`<cache_dir>/<name>-<config key>`; the key covers the source path and every split setting."""
  name = os.path.splitext(os.path.basename(text_path))[0]
  key = files.config_key(_cache_config(text_path, history_len, num_negatives, seed, num_items))
  return os.path.join(cache_dir, f"{name}-{key}")


def _cache_config(text_path: str, history_len: int | None, num_negatives: int, seed: int,
                  num_items: int | None) -> dict:
  return {"format": _CACHE_FORMAT, "source": os.path.abspath(text_path), "history_len": history_len,
          "num_negatives": num_negatives, "seed": seed, "num_items": num_items}


def load_basket_dataset(text_path: str, *, history_len: int | None = None, num_negatives: int = 99,
                        seed: int = 0, cache_dir: str, rebuild: bool = False,
                        num_items: int | None = None) -> BasketDataset:
  """Reads a PARSRec text file through its binary cache, building the cache when missing or stale.

  Args:
    text_path: the PARSRec text file.
    history_len: history window in time units (None: all earlier sessions).
    num_negatives: fixed negatives per valid/test session.
    seed: seeds the negatives.
    cache_dir: where cache folders live.
    rebuild: rebuild even if a fresh cache exists (the `--convert_dataset2binary` flag).
    num_items: the id range (max id + 1); by default the file's max id + 1.
  """
  files.require_file(text_path, "a PARSRec session file")
  name = os.path.splitext(os.path.basename(text_path))[0]
  config = _cache_config(text_path, history_len, num_negatives, seed, num_items)
  folder = cache_folder(text_path, cache_dir, history_len=history_len, num_negatives=num_negatives, seed=seed,
                        num_items=num_items)
  fingerprint = files.file_fingerprint(text_path)  # taken before reading: a later edit reads as stale
  if not rebuild:
    dataset = _load_cache(folder, config, fingerprint)
    if dataset is not None:
      dataset.stats["cache"] = "reused"
      return dataset
  table = read_parsrec_text(text_path, num_items=num_items)
  dataset = split_sessions(table, name=name, history_len=history_len, num_negatives=num_negatives, seed=seed,
                           num_items=num_items, source=text_path)
  _write_cache(dataset, folder, {"config": config, "source_fingerprint": fingerprint})
  loaded = _load_cache(folder, config, fingerprint)
  if loaded is None:  # e.g. the source changed while it was being read
    raise InputError(f"the cache just written to {folder} does not match the source; was it modified "
                     "during the conversion?", text_path)
  loaded.stats["cache"] = "built"
  return loaded


def _write_cache(dataset: BasketDataset, folder: str, manifest: dict) -> None:
  """Writes into a temporary sibling folder and renames it into place: never a partial cache."""
  parent = os.path.dirname(os.path.abspath(folder))
  os.makedirs(parent, exist_ok=True)
  _remove_abandoned(parent, os.path.basename(folder))
  tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-" + os.path.basename(folder) + "-")
  os.chmod(tmp, files.FOLDER_MODE)  # mkdtemp makes it private; the cache is shared like its parent
  try:
    shapes = {}
    for split in SPLITS:
      for field in _FIELDS:
        array = np.ascontiguousarray(getattr(dataset.split(split), field))
        np.save(os.path.join(tmp, f"{split}_{field}.npy"), array)
        shapes[f"{split}/{field}"] = [list(array.shape), array.dtype.str]
    files.write_json(os.path.join(tmp, "manifest.json"), {
        **manifest, "name": dataset.name, "num_users": dataset.num_users, "num_items": dataset.num_items,
        "stats": dataset.stats, "arrays": shapes})
    old = None
    if os.path.exists(folder):
      old = tempfile.mkdtemp(dir=parent, prefix=".old-" + os.path.basename(folder) + "-")
      os.replace(folder, os.path.join(old, "cache"))
    try:
      os.replace(tmp, folder)
    except OSError:
      # Another process renamed its (equivalent) cache into place first; keep that one.
      if not os.path.isdir(folder):
        raise
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)


def _remove_abandoned(parent: str, name: str, min_age_seconds: float = 3600.0) -> None:
  """Deletes temporary folders of `name` left by a killed conversion; a younger one may be another run's."""
  now = time.time()
  for entry in os.listdir(parent):
    path = os.path.join(parent, entry)
    if entry.startswith((f".tmp-{name}-", f".old-{name}-")) and now - os.path.getmtime(path) > min_age_seconds:
      shutil.rmtree(path, ignore_errors=True)


def _load_cache(folder: str, config: dict, fingerprint: dict) -> BasketDataset | None:
  """The memory-mapped dataset, or None when the cache is missing, stale or damaged."""
  manifest_path = os.path.join(folder, "manifest.json")
  try:
    with open(manifest_path, encoding="utf-8") as f:
      manifest = json.load(f)
  except (OSError, ValueError):
    return None
  if manifest.get("config") != config or manifest.get("source_fingerprint") != fingerprint:
    return None
  splits = {}
  try:
    for split in SPLITS:
      arrays = {}
      for field in _FIELDS:
        array = np.load(os.path.join(folder, f"{split}_{field}.npy"), mmap_mode="r", allow_pickle=False)
        if [list(array.shape), array.dtype.str] != manifest["arrays"][f"{split}/{field}"]:
          return None
        arrays[field] = array
      splits[split] = BasketSplit(**arrays)
  except (OSError, ValueError, KeyError):
    return None
  stats = dict(manifest["stats"], cache_folder=folder)
  return BasketDataset(name=manifest["name"], num_users=manifest["num_users"],
                       num_items=manifest["num_items"], stats=stats, **splits)
