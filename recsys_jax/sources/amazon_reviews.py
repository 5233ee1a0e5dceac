"""Reads Amazon review dumps (McAuley 2014 and 2018 releases) into an interactions DataFrame.

Fast path: compiled byte regexes find `reviewerID`, `asin` and `unixReviewTime` over the whole file at once,
and numpy assigns every match to its line. Only lines the regexes cannot handle (escaped or oddly quoted
values, a missing key, a line that is not a `{...}` object, blank lines) are parsed one by one, with
`json.loads` and an `ast.literal_eval` fallback for the Python-literal files of 2014. The fast path checks
each line's braces and required keys, not the full JSON grammar of the text fields it skips.
"""
import ast
import gzip
import json
import re
import warnings
import zlib
from operator import methodcaller
from typing import Any

import numpy as np
import pandas as pd

from recsys_jax import files
from recsys_jax.errors import InputError

DEFAULT_CATEGORY = "default"
COLUMNS = ("user", "item", "time", "cate")

_NL, _LBRACE, _RBRACE, _CR = 10, ord("{"), ord("}"), 13


def read_amazon_reviews(reviews_path: str, meta_path: str | None = None) -> pd.DataFrame:
  """Returns columns user, item (str), time (int64 unix seconds), cate (str), in file order.

  Args:
    reviews_path: JSON lines (plain or .gz) with `reviewerID`, `asin`, `unixReviewTime`.
    meta_path: optional meta file; an item's category is the last element of its first category path
      (2014 `categories[0][-1]`, 2018 `category[-1]`). Items without one get "default".
  """
  lines = _Lines(reviews_path)
  users = _string_field(lines, "reviewerID")
  items = _string_field(lines, "asin")
  times = _int_field(lines, "unixReviewTime")
  keep = ~lines.blank
  user_codes, user_names = _factorize_bytes(users[keep])
  item_codes, item_names = _factorize_bytes(items[keep])
  if meta_path is None:
    cate = np.full(len(item_codes), DEFAULT_CATEGORY, dtype=object)
  else:
    item_cate = _read_meta(meta_path, item_names)
    cate = item_cate[item_codes]
  return pd.DataFrame({"user": user_names[user_codes], "item": item_names[item_codes],
                       "time": times[keep].astype(np.int64), "cate": cate})


def read_bytes(path: str) -> bytes:
  """The file's bytes, gunzipped when it starts with the gzip magic number."""
  files.require_file(path)
  with open(path, "rb") as f:
    data = f.read()
  if data[:2] == b"\x1f\x8b":
    try:
      data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
      raise InputError(f"corrupt gzip file ({e})", path) from None
  if not data or data.isspace():  # isspace stops at the first other byte; strip() would copy the file
    raise InputError("file is empty", path)
  return data


class _Lines:
  """A file's bytes with numpy line boundaries, a per-line parse cache and the set of blank lines."""

  def __init__(self, path: str):
    self.path = path
    self.data = read_bytes(path)
    self.buf = np.frombuffer(self.data, dtype=np.uint8)
    newlines = np.flatnonzero(self.buf == _NL)
    self.starts = np.concatenate([[0], newlines + 1])
    self.ends = np.concatenate([newlines, [len(self.data)]])
    if self.starts[-1] == len(self.data):  # the usual trailing newline does not open a line
      self.starts, self.ends = self.starts[:-1], self.ends[:-1]
    self.n = len(self.starts)
    self.blank = np.zeros(self.n, dtype=bool)
    self.shaped = self._shaped_like_objects()
    self.quote = self._quote_style()
    self._parsed: dict[int, dict] = {}

  def _shaped_like_objects(self) -> np.ndarray:
    """True where the line is exactly `{...}` (an optional trailing CR allowed)."""
    ends = self.ends.copy()
    nonempty = ends > self.starts
    ends[nonempty & (self.buf[np.maximum(ends - 1, 0)] == _CR)] -= 1
    ok = ends > self.starts
    ok[ok] &= (self.buf[self.starts[ok]] == _LBRACE) & (self.buf[ends[ok] - 1] == _RBRACE)
    return ok

  def _quote_style(self) -> bytes:
    """Python-literal dumps quote keys with ' and JSON with "; the first object line tells which."""
    first = int(np.argmax(self.shaped))
    head = self.data[self.starts[first]:self.ends[first]]
    return b"'" if head.startswith(b"{'") else b'"'

  def find(self, pattern: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Runs a one-group regex over the file: (found per line, first group per line as bytes, object array)."""
    # Consuming the rest of the line allows at most one match per line, so n matches are one per line.
    values = re.compile(pattern + rb"[^\n]*").findall(self.data)
    if len(values) == self.n:
      out = np.empty(self.n, dtype=object)
      out[:] = values
      return self.shaped.copy(), out
    return self._find_by_position(pattern)

  def _find_by_position(self, pattern: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Slower variant of `find` that assigns each match to its line by position."""
    matches = list(re.compile(pattern).finditer(self.data))
    # map + methodcaller iterate in C: no Python bytecode per match.
    starts = np.fromiter(map(methodcaller("start"), matches), dtype=np.int64, count=len(matches))
    values = np.empty(len(matches), dtype=object)
    values[:] = list(map(methodcaller("group", 1), matches))
    line = np.searchsorted(self.starts, starts, side="right") - 1
    first = np.ones(len(line), dtype=bool)
    first[1:] = line[1:] != line[:-1]
    found = np.zeros(self.n, dtype=bool)
    found[line[first]] = True
    out = np.empty(self.n, dtype=object)
    out[line[first]] = values[first]
    return found & self.shaped, out

  def parse(self, i: int) -> dict | None:
    """Line i (0-based) as a dict, None when blank; InputError when malformed."""
    if i in self._parsed:
      return self._parsed[i]
    text = self.data[self.starts[i]:self.ends[i]].decode("utf-8", errors="replace").strip()
    if not text:
      self.blank[i] = True
      self._parsed[i] = None
      return None
    obj = _parse_object(text)
    if not isinstance(obj, dict):
      raise InputError("malformed line: expected a JSON object or a Python dict literal", self.path, i + 1)
    self._parsed[i] = obj
    return obj

  def slow_values(self, missing: np.ndarray, key: str) -> list[tuple[int, Any]]:
    """(line, value) of a required key for the lines the fast path missed; raises where it is absent."""
    out = []
    for i in np.flatnonzero(missing):  # only lines the regex could not handle
      obj = self.parse(int(i))
      if obj is None:
        continue
      if key not in obj:
        found = sorted(map(str, obj))[:12]
        raise InputError(f"missing key {key!r} (keys found: {found})", self.path, int(i) + 1)
      out.append((int(i), obj[key]))
    return out


def _parse_object(text: str) -> Any:
  try:
    return json.loads(text)
  except ValueError:
    pass
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")  # invalid escapes in old dumps are harmless here
      return ast.literal_eval(text)
  except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
    return None


def _key_prefix(quote: bytes, key: str) -> bytes:
  return quote + re.escape(key.encode()) + quote + rb"\s*:\s*"


def _string_field(lines: _Lines, key: str) -> np.ndarray:
  """Per-line bytes value of a required string key (object array)."""
  q = lines.quote
  found, values = lines.find(_key_prefix(q, key) + q + rb"([^\n\\" + q + rb"]*)" + q)
  for i, v in lines.slow_values(~found, key):
    if not isinstance(v, (str, int)) or isinstance(v, bool):
      raise InputError(f"key {key!r} should be a string, got {v!r}", lines.path, i + 1)
    values[i] = str(v).encode("utf-8")
  return values


def _int_field(lines: _Lines, key: str) -> np.ndarray:
  """Per-line integer value of a required key; integral floats and digit strings are accepted."""
  found, raw = lines.find(_key_prefix(lines.quote, key) + rb"(-?\d+)(?=\s*[,}])")
  out = np.zeros(lines.n, dtype=np.int64)
  out[found] = np.fromiter(map(int, raw[found]), dtype=np.int64, count=int(found.sum()))
  for i, v in lines.slow_values(~found, key):
    out[i] = _as_int(v, key, lines.path, i + 1)
  return out


def _as_int(value: Any, key: str, path: str, line: int) -> int:
  if isinstance(value, bool):
    value = None
  elif isinstance(value, str):
    try:
      value = float(value.strip()) if value.strip() else None
    except ValueError:
      value = None
  if isinstance(value, float) and value.is_integer():
    value = int(value)
  if not isinstance(value, int):
    raise InputError(f"unparsable {key} {value!r}: expected integer unix seconds", path, line)
  return value


def _factorize_bytes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Codes in first-appearance order and the decoded unique names (object array of str)."""
  codes, uniques = pd.factorize(values, sort=False)
  names = np.empty(len(uniques), dtype=object)
  names[:] = [u.decode("utf-8", errors="replace") for u in uniques]  # one per distinct id, not per row
  return codes, names


def _read_meta(path: str, item_names: np.ndarray) -> np.ndarray:
  """The category of each item in `item_names` (object array of str), "default" where meta has none."""
  lines = _Lines(path)
  asins = _string_field(lines, "asin")
  q = lines.quote
  # 2014: 'categories': [['A', 'B'], ...] captures "['A', 'B'";
  # 2018: "category": ["A", "B"] captures '"A", "B"'.
  found, content = lines.find(q + rb"categor(?:ies|y)" + q + rb"\s*:\s*\[([^\]\n]*)\]")
  category = np.full(lines.n, None, dtype=object)
  if found.any():
    codes, uniques = pd.factorize(content[found], sort=False)
    parsed = np.empty(len(uniques), dtype=object)
    parsed[:] = [_last_of_first_path(u) for u in uniques]  # one per distinct path, not per line
    category[found] = parsed[codes]
    found[found] = parsed[codes] != _UNPARSED
  for i in np.flatnonzero(~found):  # only lines the regex could not handle
    obj = lines.parse(int(i))
    category[i] = None if obj is None else _category_of(obj)
  keep = ~lines.blank
  codes, names = _factorize_bytes(asins[keep])
  # Later meta lines win, as a dict built from the file would have it.
  meta = pd.Series(category[keep], index=names[codes])
  meta = meta[~meta.index.duplicated(keep="last")]
  matched = meta.index.get_indexer(pd.Index(item_names))
  if not (matched >= 0).any():
    raise InputError(f"no meta line matches any of the {len(item_names)} review items "
                     f"(e.g. review asin {item_names[0]!r}, meta asin {names[0]!r})", path)
  got = meta.to_numpy(dtype=object)[np.maximum(matched, 0)]
  ok = (matched >= 0) & pd.notna(got)
  out = np.full(len(item_names), DEFAULT_CATEGORY, dtype=object)
  out[ok] = got[ok]
  return out


_UNPARSED = "\x00unparsed"


def _last_of_first_path(content: bytes) -> str | None:
  """Category from a captured list body; _UNPARSED when the capture cannot be parsed on its own."""
  text = content.decode("utf-8", errors="replace").strip()
  nested = text.startswith("[")
  body = "[" + (text[1:] if nested else text) + "]"
  try:
    values = json.loads(body)
  except ValueError:
    values = _parse_object(body)
  if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
    return _UNPARSED
  return values[-1] if values else None


def _category_of(obj: dict) -> str | None:
  """categories[0][-1] (2014) or category[-1] (2018); None when absent or empty."""
  value = obj.get("categories", obj.get("category"))
  if not isinstance(value, list) or not value:
    return None
  path = value[0] if isinstance(value[0], list) else value  # 2014 nests paths, 2018 is one flat path
  if path and isinstance(path[-1], str):
    return path[-1]
  return None
