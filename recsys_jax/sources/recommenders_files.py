"""Microsoft `recommenders` preprocessed sequential files <-> SequentialDataset.

A folder holds `train_data`, `valid_data`, `test_data` (tab-separated: label, user, item, category,
timestamp, then comma-joined history items, categories and timestamps, oldest first; valid/test in blocks
of one positive then N negatives) and `user_vocab.pkl`, `item_vocab.pkl`, `category_vocab.pkl` (pickled
dict id -> index; ids missing from a vocabulary map to 0).

The writer can only write the history a SequentialDataset keeps, i.e. the last `max_len` entries; upstream
files keep full histories. `recommenders`' own iterator truncates to the last `max_seq_length` entries, so
both give the same model inputs when `max_seq_length <= max_len`, but train-only vocabulary counts
recomputed from written files would differ.
"""
import csv
import os
import pickle
from operator import methodcaller

import numpy as np
import pandas as pd

from recsys_jax import files
from recsys_jax.errors import InputError
from recsys_jax.preprocessing.sequential_dataset import SPLITS, SequentialDataset, SequentialSplit

SPLIT_FILES = {"train": "train_data", "valid": "valid_data", "test": "test_data"}
VOCAB_FILES = {"user": "user_vocab.pkl", "item": "item_vocab.pkl", "cate": "category_vocab.pkl"}
_COLUMNS = ("label", "user", "item", "cate", "time", "hist_item", "hist_cate", "hist_time")
_PICKLE_PROTOCOL = 4  # readable by the Python 3.7 environment `recommenders` 1.1.1 runs in


def read_recommenders_files(folder: str, max_len: int = 50, name: str | None = None) -> SequentialDataset:
  """Builds a SequentialDataset from a `recommenders` folder, keeping the last max_len history entries."""
  if not os.path.isdir(folder):
    raise InputError("folder not found", folder)
  vocabs = {k: _load_vocab(os.path.join(folder, f)) for k, f in VOCAB_FILES.items()}
  splits, stats = {}, {"source": "recommenders", "max_len": max_len}
  for split in SPLITS:
    path = os.path.join(folder, SPLIT_FILES[split])
    splits[split] = _read_split(path, split, max_len, vocabs)
    stats[f"{split}_rows"] = len(splits[split])
    if split != "train":
      stats[f"{split}_negatives"] = splits[split].num_negatives
  arrays = {k: _vocab_array(v) for k, v in vocabs.items()}
  stats.update(n_users=len(arrays["user"]), n_items=len(arrays["item"]), n_categories=len(arrays["cate"]))
  dataset = SequentialDataset(name=name or os.path.basename(os.path.normpath(folder)),
                              user_vocab=arrays["user"], item_vocab=arrays["item"], cate_vocab=arrays["cate"],
                              stats=stats, **splits)
  dataset.check_nonempty(folder)
  return dataset


def write_recommenders_files(dataset: SequentialDataset, folder: str) -> None:
  """Writes the six files (atomically each); histories are the dataset's, i.e. truncated to max_len."""
  vocabs = {"user": dataset.user_vocab, "item": dataset.item_vocab, "cate": dataset.cate_vocab}
  for kind, vocab in vocabs.items():
    bad = [v for v in vocab if any(ch in v for ch in "\t\n\r,")]  # vocabulary-sized, not per row
    if bad:
      raise InputError(f"{kind} ids may not hold tabs, newlines or commas in this format: {bad[:3]}")
  os.makedirs(folder, exist_ok=True)
  for kind, vocab in vocabs.items():
    with files.atomic_path(os.path.join(folder, VOCAB_FILES[kind])) as tmp, open(tmp, "wb") as f:
      pickle.dump({str(v): i for i, v in enumerate(vocab)}, f, protocol=_PICKLE_PROTOCOL)
  for split in SPLITS:
    columns = _split_columns(dataset.split(split), vocabs)
    # One C-level join over [field, tab, field, ..., newline]: several times faster than DataFrame.to_csv.
    parts = np.empty((len(columns[0]), 2 * len(columns)), dtype=object)
    parts[:, 0::2] = np.stack(columns, axis=1)
    parts[:, 1::2] = "\t"
    parts[:, -1] = "\n"
    with files.atomic_path(os.path.join(folder, SPLIT_FILES[split])) as tmp, open(tmp, "w") as f:
      f.write("".join(parts.reshape(-1)))


class _DataOnlyUnpickler(pickle.Unpickler):
  """Refuses any class, so a vocabulary pickle cannot run code: dict/str/int need none."""

  def find_class(self, module: str, name: str):
    raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_vocab(path: str) -> dict[str, int]:
  if not os.path.isfile(path):
    raise InputError("vocabulary file not found", path)
  try:
    with open(path, "rb") as f:
      vocab = _DataOnlyUnpickler(f).load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
    raise InputError(f"not a pickled dict of id -> index ({e})", path) from None
  if not isinstance(vocab, dict) or not all(isinstance(k, str) and type(v) is int and v >= 0
                                            for k, v in vocab.items()):
    raise InputError("not a pickled dict of str id -> non-negative int index", path)
  if not vocab:
    raise InputError("the vocabulary is empty", path)
  # Indices size the embedding tables: recommenders writes them dense (index 0 may be overwritten).
  top_id, top = max(vocab.items(), key=lambda kv: kv[1])
  if top > len(vocab):
    raise InputError(f"index {top} of id {top_id!r} is out of range; expected indices below {len(vocab) + 1} "
                     f"for {len(vocab)} ids (dense, as recommenders writes them)", path)
  return vocab


def _vocab_array(vocab: dict[str, int]) -> np.ndarray:
  """index -> id; an index no id maps to (upstream can overwrite index 0) gets a placeholder name."""
  names = np.array([f"<unused:{i}>" for i in range(max(vocab.values()) + 1)], dtype=object)
  names[np.fromiter(vocab.values(), dtype=np.int64, count=len(vocab))] = list(vocab.keys())
  return names.astype(str)


def _lookup(values: np.ndarray, vocab: dict[str, int]) -> np.ndarray:
  """int32 index of each id, 0 for unknown ids (dict lookups per distinct id, not per row)."""
  codes, uniques = pd.factorize(values, sort=False)
  index = np.fromiter((vocab.get(u, 0) for u in uniques), dtype=np.int32, count=len(uniques))
  return index[codes]


def _read_table(path: str) -> pd.DataFrame:
  files.require_file(path)
  if os.path.getsize(path) == 0:
    raise InputError("file is empty", path)
  _check_field_counts(path)
  try:
    return pd.read_csv(path, sep="\t", header=None, names=list(_COLUMNS), dtype=str, quoting=csv.QUOTE_NONE,
                       na_filter=False, skip_blank_lines=False)
  except (pd.errors.ParserError, UnicodeDecodeError) as e:
    raise InputError(f"cannot parse ({e})", path) from None


def _check_field_counts(path: str) -> None:
  """Every line has 7 tabs; pandas would pad a short line with empty fields, which are legal here."""
  with open(path, "rb") as f:
    buf = np.frombuffer(f.read(), dtype=np.uint8)
  newlines = np.flatnonzero(buf == ord("\n"))
  n_lines = len(newlines) + (len(buf) > 0 and buf[-1] != ord("\n"))
  tabs = np.bincount(np.searchsorted(newlines, np.flatnonzero(buf == ord("\t"))), minlength=n_lines)
  bad = tabs != len(_COLUMNS) - 1
  if bad.any():
    line = int(np.argmax(bad))
    raise InputError(f"expected 8 tab-separated columns {list(_COLUMNS)}, found {tabs[line] + 1}",
                     path, line + 1)


def _read_split(path: str, split: str, max_len: int, vocabs: dict[str, dict[str, int]]) -> SequentialSplit:
  frame = _read_table(path)
  label = frame["label"].to_numpy(dtype=object)
  bad = (label != "0") & (label != "1")
  if bad.any():
    raise InputError(f"label must be 0 or 1, got {label[np.argmax(bad)]!r}", path, int(np.argmax(bad)) + 1)
  positive = label == "1"
  if split == "train":
    if not positive.all():
      raise InputError("train lines must be positives (label 1); train negatives are drawn per batch",
                       path, int(np.argmax(~positive)) + 1)
    block = 1
  else:
    block = _block_size(positive, path)
  time = _to_int(frame["time"].to_numpy(dtype=object), path, "timestamp")
  user = frame["user"].to_numpy(dtype=object)
  heads = np.arange(0, len(frame), block)
  same = (user == np.repeat(user[heads], block)) & (time == np.repeat(time[heads], block))
  if not same.all():
    raise InputError("a negative line's user or timestamp differs from its block's positive line",
                     path, int(np.argmax(~same)) + 1)
  hist_item, hist_cate, hist_time, hist_len = _histories(frame.iloc[heads], heads, max_len, vocabs, path)
  items = _lookup(frame["item"].to_numpy(dtype=object), vocabs["item"]).reshape(-1, block)
  cates = _lookup(frame["cate"].to_numpy(dtype=object), vocabs["cate"]).reshape(-1, block)
  return SequentialSplit(user=_lookup(user[heads], vocabs["user"]), hist_item=hist_item, hist_cate=hist_cate,
                         hist_time=hist_time, hist_len=hist_len, time=time[heads], cand_item=items,
                         cand_cate=cates)


def _block_size(positive: np.ndarray, path: str) -> int:
  """1 + N from the label pattern 1 0..0 1 0..0 ...; InputError at the first line that breaks it."""
  n = len(positive)
  heads = np.flatnonzero(positive)
  if len(heads) == 0 or heads[0] != 0:
    raise InputError("valid/test files start each block with a positive line (label 1)", path, 1)
  block = int(heads[1]) if len(heads) > 1 else n
  expected = np.zeros(n, dtype=bool)
  expected[::block] = True
  if n % block or (positive != expected).any():
    line = int(np.argmax(positive != expected)) + 1 if (positive != expected).any() else n
    raise InputError(f"irregular blocks: expected 1 positive + {block - 1} negatives per block "
                     f"(from the first block) over {n} lines", path, line)
  return block


def _to_int(values: np.ndarray, path: str, what: str, lines: np.ndarray | None = None) -> np.ndarray:
  """int64 of decimal strings (floats such as "1.2e9" accepted); InputError at the first bad one."""
  try:
    return np.fromiter(map(int, values), dtype=np.int64, count=len(values))  # C-level map, the usual case
  except ValueError:
    pass
  numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
  # NaN, inf and values beyond float64's exact integers (which int64 would wrap) are unparsable too.
  bad = ~(np.abs(numbers) < 2.0**53)
  if bad.any():
    row = int(np.argmax(bad))
    line = int(lines[row]) if lines is not None else row + 1
    raise InputError(f"unparsable {what} {values[row]!r}", path, line)
  return numbers.astype(np.int64)


def _histories(heads: pd.DataFrame, lines: np.ndarray, max_len: int, vocabs: dict[str, dict[str, int]],
               path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Splits the comma-joined history columns of the block heads; keeps the last max_len, left-aligned."""
  tokens, lengths = {}, {}
  for column in ("hist_item", "hist_cate", "hist_time"):
    values = heads[column].to_numpy(dtype=object)
    # map/methodcaller run in C; one split of the joined column instead of one per line.
    counts = np.fromiter(map(methodcaller("count", ","), values), dtype=np.int64, count=len(values))
    lengths[column] = np.where(values == "", 0, counts + 1)
    joined = ",".join(values[lengths[column] > 0])
    tokens[column] = np.array(joined.split(",") if joined else [], dtype=object)
  ragged = (lengths["hist_item"] != lengths["hist_cate"]) | (lengths["hist_item"] != lengths["hist_time"])
  if ragged.any():
    raise InputError("history items, categories and timestamps differ in length", path,
                     int(lines[np.argmax(ragged)]) + 1)
  length = lengths["hist_item"]
  ends = np.cumsum(length)
  flat = [_lookup(tokens["hist_item"], vocabs["item"]), _lookup(tokens["hist_cate"], vocabs["cate"]),
          _to_int(tokens["hist_time"], path, "history timestamp", np.repeat(lines, length) + 1)]
  hist_len = np.minimum(length, max_len).astype(np.int32)
  steps = np.arange(max_len)
  keep = steps < hist_len[:, None]
  pad = len(tokens["hist_item"])
  index = np.where(keep, (ends - hist_len)[:, None] + steps, pad)  # the last max_len tokens of each line
  hist_item, hist_cate, hist_time = (np.append(a, 0).astype(d)[index]
                                     for a, d in zip(flat, (np.int32, np.int32, np.int64)))
  return hist_item, hist_cate, hist_time, hist_len


def _joined(tokens: np.ndarray, length: np.ndarray) -> np.ndarray:
  """Per-row comma-joined strings of a flat token array split by `length` (rows of length 0 give "")."""
  out = np.full(len(length), "", dtype=object)
  rows = np.flatnonzero(length > 0)
  if len(rows):
    seps = np.full(len(tokens), ",", dtype=object)
    seps[np.cumsum(length[rows]) - 1] = "\n"  # row boundaries, safe: ids hold no newline (checked)
    parts = np.empty(2 * len(tokens), dtype=object)
    parts[0::2], parts[1::2] = tokens, seps
    out[rows] = "".join(parts)[:-1].split("\n")
  return out


def _split_columns(split: SequentialSplit, vocabs: dict[str, np.ndarray]) -> list[np.ndarray]:
  """The 8 string columns (object arrays) of one split file; each row gives 1 + K lines, positive first."""
  n, block = split.cand_item.shape
  mask = np.arange(split.hist_item.shape[1]) < split.hist_len[:, None]
  names = {k: v.astype(object) for k, v in vocabs.items()}  # shared str objects, no per-line copies
  label = np.full((n, block), "0", dtype=object)
  label[:, 0] = "1"
  per_row = [names["user"][split.user], split.time.astype(str).astype(object),
             _joined(names["item"][split.hist_item[mask]], split.hist_len),
             _joined(names["cate"][split.hist_cate[mask]], split.hist_len),
             _joined(split.hist_time[mask].astype(str).astype(object), split.hist_len)]
  user, time, hist_item, hist_cate, hist_time = (np.repeat(c, block) for c in per_row)
  return [label.reshape(-1), user, names["item"][split.cand_item.reshape(-1)],
          names["cate"][split.cand_cate.reshape(-1)], time, hist_item, hist_cate, hist_time]
