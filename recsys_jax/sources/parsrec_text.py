"""The PARSRec session text format: writer and validating, vectorised reader.

The format (as the original repository documents it) is a header line
`user_id,time,session_length,session_items` followed by one session per line, `u,t,L,i1,...,iL`. Item ids
0 and 1 are reserved for SOB and EOB, so real items are >= 2. Beside `<name>.txt` sits
`<name>_columns_dtype.json`, the dtype map the original binary converter reads.

Line numbers in errors are 1-based and count the header as line 1.
"""
import dataclasses
import json
import os

import numpy as np

from recsys_jax import files
from recsys_jax.errors import InputError

HEADER = "user_id,time,session_length,session_items"
# Key order matters to the original converter (it reorders columns by it), so it is written unsorted.
COLUMNS_DTYPE = {"session_length": "int16", "session_items": "object", "history": "object", "time": "int",
                 "user_id": "int32"}
MIN_SESSIONS_PER_USER = 3  # train, valid and test each take at least one session of every user
_MAX_DIGITS = 18  # int64 holds every 18-digit number, so no overflow check is needed below that
# Ids index embedding tables sized by the largest id: a larger inferred catalogue means sparse raw ids.
MAX_INFERRED_IDS = 1 << 24
_REMAP_HINT = "ids index the embedding tables; map raw ids to 0..n-1 first (experiments/convert_baskets.py does)"


@dataclasses.dataclass
class SessionTable:
  """Sessions in file order, flattened: session k holds items[offsets[k]:offsets[k+1]]."""
  user: np.ndarray     # (N,) int32
  time: np.ndarray     # (N,) int64
  offsets: np.ndarray  # (N+1,) int64
  items: np.ndarray    # (total,) int32

  def __len__(self) -> int:
    return int(self.user.shape[0])

  def lengths(self) -> np.ndarray:
    return np.diff(self.offsets)

  def session(self, k: int) -> np.ndarray:
    return self.items[self.offsets[k]:self.offsets[k + 1]]

  @classmethod
  def from_lengths(cls, user: np.ndarray, time: np.ndarray, lengths: np.ndarray,
                   items: np.ndarray) -> "SessionTable":
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] != len(items) or not len(user) == len(time) == len(lengths):
      raise ValueError(f"{len(user)} users, {len(time)} times, {len(lengths)} lengths summing to "
                       f"{offsets[-1]}, {len(items)} items: the sizes disagree")
    return cls(user=np.asarray(user, np.int32), time=np.asarray(time, np.int64), offsets=offsets,
               items=np.asarray(items, np.int32))


def dtype_json_path(text_path: str) -> str:
  """`<dir>/<name>_columns_dtype.json` for `<dir>/<name>.txt`."""
  stem = os.path.splitext(os.path.basename(text_path))[0]
  return os.path.join(os.path.dirname(os.path.abspath(text_path)), stem + "_columns_dtype.json")


def format_sessions(table: SessionTable) -> str:
  """The whole file as one string, built without a per-session Python loop."""
  lengths = table.lengths()
  n = len(table)
  fields = lengths + 3
  starts = np.zeros(n, np.int64)
  np.cumsum(fields[:-1], out=starts[1:])
  tokens = np.empty(int(fields.sum()), np.int64)
  is_item = np.ones(tokens.shape[0], bool)
  for j, col in enumerate((table.user, table.time, lengths)):
    tokens[starts + j] = col
    is_item[starts + j] = False
  tokens[is_item] = table.items
  seps = np.full(tokens.shape[0], ",", dtype="<U1")
  seps[starts + fields - 1] = "\n"
  parts = [None] * (2 * tokens.shape[0])
  parts[0::2] = tokens.astype(str).tolist()
  parts[1::2] = seps.tolist()
  return HEADER + "\n" + "".join(parts)


def write_parsrec_text(path: str, table: SessionTable, *, write_dtype_json: bool = True) -> None:
  """Writes `table` atomically in the PARSRec text format, plus the dtype json beside it."""
  files.write_text(path, format_sessions(table))
  if write_dtype_json:
    files.write_text(dtype_json_path(path), json.dumps(COLUMNS_DTYPE, separators=(",", ":")) + "\n")


def read_parsrec_text(path: str, *, num_items: int | None = None,
                      min_sessions_per_user: int = MIN_SESSIONS_PER_USER,
                      allow_empty_last: bool = False) -> SessionTable:
  """Reads and validates a PARSRec text file; raises `InputError` naming the first bad line.

  Args:
    path: the text file.
    num_items: if given, every item id must be < num_items (ids count SOB=0 and EOB=1).
    min_sessions_per_user: each user needs this many sessions (3: one each for train, valid, test).
    allow_empty_last: accept `u,t,0` as a user's last session: a basket to complete that has no item yet.
  """
  files.require_file(path, f"a PARSRec session file with header '{HEADER}'")
  with open(path, "rb") as f:
    data = f.read()
  if not data.strip():
    raise InputError(f"empty file; expected the header '{HEADER}' and one session per line", path, 1)
  data = data.replace(b"\r\n", b"\n")
  newline = data.find(b"\n")
  header = (data if newline < 0 else data[:newline]).decode("utf-8", "replace").strip().lstrip("\ufeff")
  if header != HEADER:
    raise InputError(f"expected the header '{HEADER}', found '{header[:80]}'", path, 1)
  body = b"" if newline < 0 else data[newline + 1:].rstrip(b"\n")
  if not body.strip():
    raise InputError("no sessions after the header; expected lines 'user_id,time,session_length,item,...'",
                     path, 2)
  values, line_counts = _parse_integers(body, path)
  return _validate(values, line_counts, path, num_items, min_sessions_per_user, allow_empty_last)


def _parse_integers(body: bytes, path: str) -> tuple[np.ndarray, np.ndarray]:
  """Parses comma-separated integer lines into a flat int64 array plus the field count of each line."""
  b = np.frombuffer(body + b"\n", np.uint8)
  is_nl = b == ord("\n")
  is_sep = is_nl | (b == ord(","))
  is_digit = (b >= ord("0")) & (b <= ord("9"))
  is_minus = b == ord("-")
  line_of = np.cumsum(is_nl) - is_nl  # 0-based data line of every byte; a newline belongs to its line
  prev_sep = np.concatenate([[True], is_sep[:-1]])
  next_sep = np.concatenate([is_sep[1:], [True]])

  def fail_at(pos: int, what: str) -> None:
    start = body.rfind(b"\n", 0, pos) + 1
    end = body.find(b"\n", pos)
    line_text = body[start:None if end < 0 else end].decode("utf-8", "replace")
    field_start = max(body.rfind(b",", start, pos), start - 1) + 1
    field_end = min(i for i in (body.find(b",", pos), end, len(body)) if i >= 0)
    field = body[field_start:field_end].decode("utf-8", "replace")
    if what == "empty" and not line_text:
      raise InputError("empty line; expected 'user_id,time,session_length,item,...'", path,
                       int(line_of[pos]) + 2)
    if what == "empty":
      raise InputError(f"empty field in '{line_text[:80]}'; expected comma-separated integers", path,
                       int(line_of[pos]) + 2)
    if what == "long":
      raise InputError(f"integer field '{field[:40]}' has more than {_MAX_DIGITS} digits; expected at most "
                       f"{_MAX_DIGITS} (and ids below {MAX_INFERRED_IDS}: {_REMAP_HINT})", path,
                       int(line_of[pos]) + 2)
    raise InputError(f"non-integer field '{field[:40]}'; expected comma-separated integers", path,
                     int(line_of[pos]) + 2)

  # A '-' is only a sign: first in its field and followed by a digit.
  bad = ~(is_digit | is_sep | is_minus) | (is_minus & (~prev_sep | next_sep))
  if bad.any():
    fail_at(int(np.argmax(bad)), "bad")
  empty = is_sep & prev_sep  # ',,' or a line starting or ending with ',' or a blank line
  if empty.any():
    fail_at(int(np.argmax(empty)), "empty")
  starts = np.flatnonzero(~is_sep & prev_sep)
  ends = np.flatnonzero(~is_sep & next_sep)
  too_long = (ends - starts + 1 - is_minus[starts]) > _MAX_DIGITS
  if too_long.any():
    fail_at(int(starts[np.argmax(too_long)]), "long")
  # Sum digit * 10^(distance to the field end) per field; every field holds at least one digit.
  digit_pos = np.flatnonzero(is_digit)
  field_of_digit = np.cumsum(~is_sep & prev_sep)[digit_pos] - 1
  powers = 10 ** np.arange(_MAX_DIGITS, dtype=np.int64)
  contrib = (b[digit_pos].astype(np.int64) - ord("0")) * powers[ends[field_of_digit] - digit_pos]
  first_digit = np.searchsorted(field_of_digit, np.arange(starts.shape[0]))
  values = np.add.reduceat(contrib, first_digit)
  values[is_minus[starts]] *= -1
  line_counts = np.bincount(line_of[starts], minlength=int(is_nl.sum()))
  return values, line_counts


def _validate(values: np.ndarray, line_counts: np.ndarray, path: str, num_items: int | None,
              min_sessions: int, allow_empty_last: bool) -> SessionTable:
  """Checks the parsed fields line by line (vectorised) and builds the table."""
  line_no = np.arange(line_counts.shape[0]) + 2
  short = line_counts < (3 if allow_empty_last else 4)
  if short.any():
    k = int(np.argmax(short))
    expected = ("(a basket to complete may be empty: 'user_id,time,0')" if allow_empty_last
                else "with at least one item")
    raise InputError(f"has {line_counts[k]} fields; expected 'user_id,time,session_length,item,...' {expected}",
                     path, int(line_no[k]))
  first = np.zeros(line_counts.shape[0], np.int64)
  np.cumsum(line_counts[:-1], out=first[1:])
  user, time, length = values[first], values[first + 1], values[first + 2]
  wrong = line_counts != length + 3
  if wrong.any():
    k = int(np.argmax(wrong))
    raise InputError(f"session_length is {length[k]} but the line has {line_counts[k] - 3} items; expected "
                     "session_length + 3 fields", path, int(line_no[k]))
  bad_user = (user < 0) | (user >= MAX_INFERRED_IDS)
  if bad_user.any():
    k = int(np.argmax(bad_user))
    raise InputError(f"user_id {user[k]} is out of range; expected 0 <= user_id < {MAX_INFERRED_IDS}: "
                     f"{_REMAP_HINT}", path, int(line_no[k]))
  is_item = np.ones(values.shape[0], bool)
  for j in range(3):
    is_item[first + j] = False
  items = values[is_item]
  item_line = np.repeat(line_no, length)
  limit = MAX_INFERRED_IDS if num_items is None else num_items
  bad_item = (items < 2) | (items >= limit)
  if bad_item.any():
    k = int(np.argmax(bad_item))
    expected = "item ids >= 2 (0 and 1 are reserved for SOB and EOB)"
    if num_items is not None:
      expected += f" and < the catalogue size {num_items} (--num_items)"
    elif items[k] >= limit:
      expected += f" and < {MAX_INFERRED_IDS} (or a larger --num_items): {_REMAP_HINT}"
    raise InputError(f"item id {items[k]} is out of range; expected {expected}", path, int(item_line[k]))
  table = SessionTable.from_lengths(user, time, length, items)
  _check_duplicate_items(table, item_line, path)
  _check_unique_sessions(table, line_no, path)
  _check_empty_sessions_are_last(table, line_no, path)
  _check_sessions_per_user(table, line_no, path, min_sessions)
  return table


def _check_duplicate_items(table: SessionTable, item_line: np.ndarray, path: str) -> None:
  # Duplicates within a basket break the step that removes each target from the remaining set.
  session_of = np.repeat(np.arange(len(table), dtype=np.int64), table.lengths())
  order = np.lexsort((table.items, session_of))
  same = (np.diff(session_of[order]) == 0) & (np.diff(table.items[order]) == 0)
  if same.any():
    k = order[1:][same]
    k = k[np.argmin(item_line[k])]
    raise InputError(f"item {table.items[k]} appears twice in the session; expected distinct items", path,
                     int(item_line[k]))


def _check_empty_sessions_are_last(table: SessionTable, line_no: np.ndarray, path: str) -> None:
  # An empty session is a basket still to be filled: as history it would say nothing and hide a mistake.
  empty = table.lengths() == 0
  if not empty.any():
    return
  _, user_index = np.unique(table.user, return_inverse=True)
  last_time = np.full(int(user_index.max()) + 1, np.iinfo(np.int64).min)
  np.maximum.at(last_time, user_index, table.time)
  early = empty & (table.time < last_time[user_index])
  if early.any():
    k = int(np.argmax(early))
    raise InputError(f"session_length is 0 but user {table.user[k]} has a later session; expected items here "
                     "(only a user's last session, the basket to complete, may be empty)", path, int(line_no[k]))


def _check_unique_sessions(table: SessionTable, line_no: np.ndarray, path: str) -> None:
  order = np.lexsort((line_no, table.time, table.user))
  dup = (np.diff(table.user[order]) == 0) & (np.diff(table.time[order]) == 0)
  if dup.any():
    later = order[1:][dup]
    earlier = order[:-1][dup]
    j = int(np.argmin(line_no[later]))
    k, e = later[j], earlier[j]
    raise InputError(f"duplicate session (user_id={table.user[k]}, time={table.time[k]}), first on line "
                     f"{line_no[e]}; expected unique (user_id, time) pairs", path, int(line_no[k]))


def _check_sessions_per_user(table: SessionTable, line_no: np.ndarray, path: str, min_sessions: int) -> None:
  if min_sessions <= 1:
    return
  users, first_index, counts = np.unique(table.user, return_index=True, return_counts=True)
  few = counts < min_sessions
  if few.any():
    k = int(np.argmin(np.where(few, first_index, np.iinfo(np.int64).max)))
    raise InputError(f"user {users[k]} has {counts[k]} session(s) (first on this line); expected at least "
                     f"{min_sessions} per user (train, valid, test)", path, int(line_no[first_index[k]]))
