"""Converters from real basket tables (one row per purchased item) to the PARSRec text format.

One session per basket, items in cart order, duplicates within a basket dropped (keeping the first), items
remapped to dense ids >= 2 (sorted by original id; 0/1 stay reserved for SOB/EOB) and users to dense ids
0..U-1 (sorted by original id). Defaults: baskets of every length are kept (min_basket_len=1,
max_basket_len=None); with max_basket_len set, longer baskets are dropped, or cut to their first
max_basket_len items with truncate_long=True. Users left with fewer than 3 baskets are dropped (each needs a
train, a valid and a test session). Every drop is counted in the returned stats.

Written beside `<name>.txt`: `<name>_columns_dtype.json`, `<name>_item_ids.csv` (item_id,original_id) and
`<name>_user_ids.csv` (user_id,original_id).
"""
import os

import numpy as np
import pandas as pd

from recsys_jax import files
from recsys_jax.errors import InputError
from recsys_jax.sources.interactions_table import parse_times
from recsys_jax.sources.parsrec_text import MIN_SESSIONS_PER_USER, SessionTable, write_parsrec_text

INSTACART_COLUMNS = ("user_id", "order_id", "order_number", "product_id", "add_to_cart_order")
# The 2017 release ships orders and their lines apart: orders.csv and order_products__{prior,train}.csv.
ORDERS_COLUMNS = ("order_id", "user_id", "order_number")
LINES_COLUMNS = ("order_id", "product_id", "add_to_cart_order")
RELEASE_LINES = ("order_products__prior.csv", "order_products__train.csv")


def convert_instacart_orders(input_path: str, output_path: str, *, min_basket_len: int = 1,
                             max_basket_len: int | None = None, truncate_long: bool = False,
                             min_sessions: int = MIN_SESSIONS_PER_USER, drop_last_user: bool = False) -> dict:
  """Converts Instacart order lines (one row per product in an order) to the PARSRec text format.

  One session per `order_id`, time = `order_number`, items in `add_to_cart_order`.

  Args:
    input_path: one of
      - a CSV (optionally .gz) of joined order lines, with at least the columns of `INSTACART_COLUMNS`;
      - a release `order_products__*.csv[.gz]` (no user_id, order_number): joined on order_id with the
        `orders.csv[.gz]` of its folder;
      - a folder holding the release: orders.csv with every order_products__prior.csv and
        order_products__train.csv present (each optionally .gz).
    output_path: the `<name>.txt` to write.
    min_basket_len: baskets with fewer distinct items are dropped.
    max_basket_len: baskets with more distinct items are dropped (or cut, see truncate_long); None: no cap.
    truncate_long: cut long baskets to their first max_basket_len items instead of dropping them.
    min_sessions: users with fewer remaining baskets are dropped.
    drop_last_user: drop the user of the last order line read (of the last file); a sample cut at a fixed
      line count may end inside that user's last basket.

  Returns:
    Counts of what was read, kept and dropped, and the files read (`input_files`).
  """
  ints, read = _instacart_lines(input_path)
  keep = np.ones(len(ints["user_id"]), bool)
  dropped_last = 0
  if drop_last_user and len(keep):
    keep = ints["user_id"] != ints["user_id"][-1]
    dropped_last = 1
  table, item_ids, user_ids, stats = sessions_from_columns(
      ints["user_id"][keep], ints["order_id"][keep], ints["product_id"][keep],
      time=ints["order_number"][keep], order=ints["add_to_cart_order"][keep], min_basket_len=min_basket_len,
      max_basket_len=max_basket_len, truncate_long=truncate_long, min_sessions=min_sessions, time_as="value",
      source=input_path)
  stats = {"rows_in": len(keep), "users_dropped_last": dropped_last, **stats, "input_files": read}
  write_converted(output_path, table, item_ids, user_ids)
  return stats


def _instacart_lines(path: str) -> tuple[dict[str, np.ndarray], list[str]]:
  """`INSTACART_COLUMNS` as int64 arrays from any layout `convert_instacart_orders` takes, and the files read."""
  if os.path.isdir(path):
    orders, lines = instacart_release_files(path)
    if orders is None or not lines:
      raise InputError(f"no {'orders.csv' if orders is None else ' or '.join(RELEASE_LINES)} (nor .gz) in "
                       "the folder; expected the Instacart release: orders.csv and order_products__prior.csv "
                       "and/or order_products__train.csv", path)
    return _join_orders(orders, lines), [orders, *lines]
  header = _read_header(path, INSTACART_COLUMNS, ",")
  if {"user_id", "order_number"} & set(header):  # joined order lines
    frame = _read_csv(path, INSTACART_COLUMNS, ",")
    return {c: _integer_column(frame, c, path) for c in INSTACART_COLUMNS}, [path]
  orders, lines = instacart_release_files(path)
  if orders is None:
    raise InputError(f"no user_id, order_number columns and no orders.csv (nor .gz) beside the file; expected "
                     f"joined order lines ({', '.join(INSTACART_COLUMNS)}) or an order_products file with the "
                     f"release's orders.csv in its folder (found {', '.join(map(str, header[:12]))})", path, 1)
  return _join_orders(orders, lines), [orders, *lines]


def instacart_release_files(path: str) -> tuple[str | None, list[str]]:
  """(the orders file or None, the order-lines files) of a release folder, or of one order-lines file with
  the orders file beside it; each may be .gz."""
  if os.path.isdir(path):
    lines = [p for p in (_release_file(path, name) for name in RELEASE_LINES) if p is not None]
    return _release_file(path, "orders.csv"), lines
  return _release_file(os.path.dirname(os.path.abspath(path)), "orders.csv"), [path]


def _release_file(folder: str, name: str) -> str | None:
  """`name` or `name.gz` in folder, whichever exists first; None if neither."""
  for candidate in (name, name + ".gz"):
    path = os.path.join(folder, candidate)
    if os.path.isfile(path):
      return path
  return None


def _join_orders(orders_path: str, lines_paths: list[str]) -> dict[str, np.ndarray]:
  """Release order lines (all files, in order) with the user_id and order_number of their order_id."""
  frame = _read_csv(orders_path, ORDERS_COLUMNS, ",")
  orders = {c: _integer_column(frame, c, orders_path) for c in ORDERS_COLUMNS}
  index = pd.Index(orders["order_id"])
  twice = index.duplicated()
  if twice.any():
    k = int(np.argmax(twice))
    raise InputError(f"order_id {index[k]} appears again; expected one row per order", orders_path, k + 2)
  parts = []
  for path in lines_paths:
    frame = _read_csv(path, LINES_COLUMNS, ",")
    lines = {c: _integer_column(frame, c, path) for c in LINES_COLUMNS}
    at = index.get_indexer(lines["order_id"])
    absent = at < 0
    if absent.any():
      k = int(np.argmax(absent))
      raise InputError(f"order_id {lines['order_id'][k]} is not in {orders_path}; expected every order of the "
                       "order lines there", path, k + 2)
    parts.append({**lines, "user_id": orders["user_id"][at], "order_number": orders["order_number"][at]})
  return {c: np.concatenate([p[c] for p in parts]) for c in INSTACART_COLUMNS}


def convert_basket_table(input_path: str, output_path: str, *, user_col: str, basket_col: str, item_col: str,
                         time_col: str | None = None, order_col: str | None = None, sep: str = ",",
                         time_as: str = "rank", min_basket_len: int = 1, max_basket_len: int | None = None,
                         truncate_long: bool = False, min_sessions: int = MIN_SESSIONS_PER_USER) -> dict:
  """Converts a generic (user, basket, item) table to the PARSRec text format.

  A basket is a (user, basket_col) pair; basket_col may itself be a time stamp. Baskets are ordered per
  user by the smallest `time_col` value of their rows: numbers, or date/time strings (taken as unix seconds,
  naive ones as UTC; the first row decides which). Without time_col they keep the file order of their first
  rows, whatever basket_col holds: to order baskets by a date basket_col, give it as time_col too. Items
  follow `order_col` (file order without it). Users and items may be any values (strings included).

  Args:
    time_as: "rank" writes time = 0..n-1 per user in basket order; "value" writes the basket's integer
      time_col value, unix seconds for dates (it must then be unique per user).
    Others: as `convert_instacart_orders`.
  """
  if time_as not in ("rank", "value"):
    raise InputError(f"time_as={time_as!r}; expected 'rank' or 'value'", input_path)
  if time_as == "value" and time_col is None:
    raise InputError("time_as='value' needs a time_col", input_path)
  columns = [user_col, basket_col, item_col] + [c for c in (time_col, order_col) if c is not None]
  frame = _read_csv(input_path, tuple(dict.fromkeys(columns)), sep)
  for col in (user_col, basket_col, item_col):
    _check_present(frame, col, input_path)
  time = None if time_col is None else _time_column(frame, time_col, input_path)
  order = None if order_col is None else _numeric_column(frame, order_col, input_path)
  table, item_ids, user_ids, stats = sessions_from_columns(
      frame[user_col].to_numpy(), frame[basket_col].to_numpy(), frame[item_col].to_numpy(), time=time,
      order=order, min_basket_len=min_basket_len, max_basket_len=max_basket_len, truncate_long=truncate_long,
      min_sessions=min_sessions, time_as=time_as, source=input_path)
  write_converted(output_path, table, item_ids, user_ids)
  return {"rows_in": len(frame), **stats}


def sessions_from_columns(user: np.ndarray, basket: np.ndarray, item: np.ndarray, *,
                          time: np.ndarray | None = None, order: np.ndarray | None = None,
                          min_basket_len: int = 1, max_basket_len: int | None = None,
                          truncate_long: bool = False, min_sessions: int = MIN_SESSIONS_PER_USER,
                          time_as: str = "rank", source: str | None = None
                          ) -> tuple[SessionTable, np.ndarray, np.ndarray, dict]:
  """Builds sessions from one row per purchased item; returns (table, item_ids, user_ids, stats).

  `item_ids[k]` is the original id of dense item k + 2, `user_ids[u]` the original id of dense user u.
  """
  if min_basket_len < 1 or (max_basket_len is not None and max_basket_len < min_basket_len):
    raise InputError(f"basket length bounds [{min_basket_len}, {max_basket_len}]; expected "
                     "1 <= min_basket_len <= max_basket_len", source)
  n = len(user)
  if n == 0:
    raise InputError("no rows; expected one row per purchased item", source)
  u_code, user_orig = pd.factorize(user, sort=True)
  i_code, item_orig = pd.factorize(item, sort=True)
  b_code, b_uniques = pd.factorize(basket)
  basket_of, _ = pd.factorize(u_code.astype(np.int64) * len(b_uniques) + b_code)  # a (user, basket) pair
  row = np.arange(n)
  key = row if time is None else np.asarray(time)
  basket_time = pd.Series(key).groupby(basket_of).min().to_numpy()  # group k is basket k: codes are dense
  within = row if order is None else np.asarray(order)
  rows = np.lexsort((row, within, basket_of, basket_time[basket_of], u_code))
  u_code, i_code, basket_of = u_code[rows], i_code[rows], basket_of[rows]
  stats = {"users_in": int(np.unique(u_code).shape[0]), "baskets_in": int(basket_time.shape[0])}

  # Keep the first occurrence of an item in a basket (rows are in cart order now).
  _, first = np.unique(basket_of.astype(np.int64) * (i_code.max() + 1) + i_code, return_index=True)
  keep = np.zeros(n, bool)
  keep[first] = True
  stats["duplicate_rows_dropped"] = int(n - first.shape[0])
  u_code, i_code, basket_of = u_code[keep], i_code[keep], basket_of[keep]

  # Basket lengths and the bounds.
  start = np.concatenate([[True], basket_of[1:] != basket_of[:-1]])
  run = np.cumsum(start) - 1
  length = np.bincount(run)
  pos = np.arange(run.shape[0]) - np.flatnonzero(start)[run]
  too_long = np.zeros_like(length, bool) if max_basket_len is None else length > max_basket_len
  ok = length >= min_basket_len
  if truncate_long:
    keep = ok[run] & (pos < (max_basket_len or length.max()))
  else:
    ok &= ~too_long
    keep = ok[run]
  stats["baskets_dropped_length"] = int((~ok).sum())
  stats["baskets_truncated"] = int((ok & too_long).sum()) if truncate_long else 0

  # Users left with too few baskets.
  basket_user = u_code[start]
  per_user = np.bincount(basket_user[ok], minlength=u_code.max() + 1)
  few = (per_user < min_sessions) & (np.bincount(basket_user, minlength=u_code.max() + 1) > 0)
  stats["users_dropped_few_baskets"] = int(few.sum())
  stats["baskets_dropped_with_users"] = int((ok & few[basket_user]).sum())
  keep &= ~few[u_code]
  if not keep.any():
    raise InputError(f"no basket is left after filtering ({stats}); expected users with at least "
                     f"{min_sessions} baskets of {min_basket_len}..{max_basket_len or 'any'} items", source)
  u_code, i_code, run, basket_of = u_code[keep], i_code[keep], run[keep], basket_of[keep]

  start = np.concatenate([[True], run[1:] != run[:-1]])
  s_user = u_code[start]
  if time_as == "value":
    s_time = basket_time[basket_of[start]]
    if not np.all(np.isfinite(s_time)) or np.any(s_time != np.round(s_time)):
      raise InputError("time values must be integers for time_as='value'", source)
    same = (s_user[1:] == s_user[:-1]) & (s_time[1:] == s_time[:-1])
    if same.any():
      raise InputError(f"two baskets of one user share time {s_time[1:][same][0]}; expected unique "
                       "(user, time) pairs (use time_as='rank')", source)
  else:
    first_of_user = np.concatenate([[True], s_user[1:] != s_user[:-1]])
    idx = np.arange(s_user.shape[0])
    s_time = idx - np.maximum.accumulate(np.where(first_of_user, idx, 0))
  dense_user, user_ids = pd.factorize(pd.Series(s_user), sort=True)
  dense_item, item_ids = pd.factorize(pd.Series(i_code), sort=True)
  lengths = np.bincount(np.cumsum(start) - 1)
  table = SessionTable.from_lengths(dense_user, s_time.astype(np.int64), lengths, dense_item + 2)
  stats.update(users=int(user_ids.shape[0]), baskets=len(table), items=int(item_ids.shape[0]),
               purchases=int(lengths.sum()), mean_basket_length=float(lengths.mean()),
               max_basket_length=int(lengths.max()), num_items=int(item_ids.shape[0]) + 2)
  original_items = np.asarray(item_orig)[np.asarray(item_ids)]
  return table, original_items, np.asarray(user_orig)[np.asarray(user_ids)], stats


def write_converted(output_path: str, table: SessionTable, item_ids: np.ndarray,
                    user_ids: np.ndarray) -> None:
  """Writes the text file, its dtype json and the two id maps, each atomically."""
  write_parsrec_text(output_path, table)
  stem = os.path.join(os.path.dirname(os.path.abspath(output_path)),
                      os.path.splitext(os.path.basename(output_path))[0])
  for suffix, name, ids, first in (("_item_ids.csv", "item_id", item_ids, 2), ("_user_ids.csv", "user_id",
                                                                                user_ids, 0)):
    frame = pd.DataFrame({name: np.arange(first, first + len(ids)), "original_id": ids})
    files.write_text(stem + suffix, frame.to_csv(index=False))


def _read_header(path: str, columns: tuple[str, ...], sep: str) -> pd.Index:
  """The header's column names; `columns` (the ones wanted) only word the errors."""
  files.require_file(path, f"a table with columns {', '.join(columns)}")
  try:
    return pd.read_csv(path, sep=sep, nrows=0).columns
  except (pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as e:
    raise InputError(f"cannot read a header ({type(e).__name__}); expected columns {', '.join(columns)}",
                     path, 1) from None


def _read_csv(path: str, columns: tuple[str, ...], sep: str) -> pd.DataFrame:
  header = _read_header(path, columns, sep)
  missing = [c for c in columns if c not in header]
  if missing:
    raise InputError(f"missing column(s) {', '.join(missing)}; expected {', '.join(columns)} in the header "
                     f"(found {', '.join(map(str, header[:12]))})", path, 1)
  # Blank lines are kept as all-missing rows so row k stays file line k + 2.
  try:
    return pd.read_csv(path, sep=sep, usecols=list(columns), skip_blank_lines=False, low_memory=False)
  except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as e:
    raise InputError(f"cannot parse the table: {str(e).splitlines()[0][:160]}", path) from None


def _check_present(frame: pd.DataFrame, col: str, path: str) -> None:
  missing = frame[col].isna().to_numpy()
  if missing.any():
    k = int(np.argmax(missing))
    raise InputError(f"empty {col}; expected a value in every row", path, k + 2)


def _numeric_column(frame: pd.DataFrame, col: str, path: str) -> np.ndarray:
  values = pd.to_numeric(frame[col], errors="coerce").to_numpy(np.float64)
  bad = ~np.isfinite(values)
  if bad.any():
    k = int(np.argmax(bad))
    raise InputError(f"{col} is {frame[col].iloc[k]!r}; expected a number", path, k + 2)
  return values


def _time_column(frame: pd.DataFrame, col: str, path: str) -> np.ndarray:
  """Numbers as they are, else date/time strings as unix seconds; the first row decides, as in `parse_times`."""
  if pd.to_numeric(frame[col].iloc[:1], errors="coerce").notna().all():
    return _numeric_column(frame, col, path)
  return parse_times(frame[col], path, col)


def _integer_column(frame: pd.DataFrame, col: str, path: str) -> np.ndarray:
  values = _numeric_column(frame, col, path)
  bad = values != np.round(values)
  if bad.any():
    k = int(np.argmax(bad))
    raise InputError(f"{col} is {frame[col].iloc[k]!r}; expected an integer", path, k + 2)
  return values.astype(np.int64)
