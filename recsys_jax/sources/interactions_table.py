"""Reads a generic CSV/TSV interactions table (and an optional item-meta table) into a DataFrame.

The defaults match the ReChorus Amazon files (`train.csv`: user_id, item_id, time; `item_meta.csv`:
item_id, i_category). The separator is a tab when the header holds one, else a comma, unless given.
Timestamps are integer unix seconds or date strings that pandas can parse (naive dates are taken as UTC).
Only the named columns are read: a row with too few fields is reported (its missing values), extra
trailing fields are ignored. Error line numbers count the header as line 1.
"""
import gzip
import os

import numpy as np
import pandas as pd

from recsys_jax import files
from recsys_jax.errors import InputError

DEFAULT_CATEGORY = "default"
COLUMNS = ("user", "item", "time", "cate")


def read_interactions_table(path: str, *, user: str = "user_id", item: str = "item_id", time: str = "time",
                            cate: str | None = None, meta_path: str | None = None, meta_item: str = "item_id",
                            meta_cate: str = "i_category", sep: str | None = None) -> pd.DataFrame:
  """Returns columns user, item (str), time (int64 unix seconds), cate (str), in file order.

  Args:
    path: the interactions table (plain or compressed as pandas infers from the extension).
    user, item, time: its column names.
    cate: an optional category column of the same table.
    meta_path: an optional item table giving each item's category (`meta_item`, `meta_cate` columns);
      items it lacks get "default". Give `cate` or `meta_path`, not both.
    sep: the separator of both tables; detected from each header when None.
  """
  if cate is not None and meta_path is not None:
    raise InputError("give either a category column or an item meta table, not both", path)
  wanted = [user, item, time] + ([cate] if cate is not None else [])
  frame = _read_columns(path, wanted, sep)
  out = pd.DataFrame({"user": _ids(frame, user, path), "item": _ids(frame, item, path)})
  out["time"] = parse_times(frame[time], path, time)
  if cate is not None:
    out["cate"] = frame[cate].fillna(DEFAULT_CATEGORY)
  elif meta_path is not None:
    out["cate"] = _meta_categories(meta_path, meta_item, meta_cate, sep, out["item"])
  else:
    out["cate"] = DEFAULT_CATEGORY
  return out[list(COLUMNS)]


def detect_separator(path: str) -> str:
  """Tab if the header line holds one, else comma."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8", errors="replace") as f:
    header = f.readline()
  return "\t" if "\t" in header else ","


def parse_times(values: pd.Series, path: str, column: str) -> np.ndarray:
  """int64 unix seconds from integer seconds or date strings; InputError naming the first bad row."""
  numeric = pd.to_numeric(values, errors="coerce")
  if pd.notna(numeric.iloc[0]):  # the first row decides between seconds and dates
    seconds = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
    # NaN and values beyond float64's exact integers (which int64 would wrap) fail too.
    _fail_at(~((np.mod(seconds, 1) == 0) & (np.abs(seconds) < 2.0**53)), values, path, column,
             "integer unix seconds")
    return seconds.astype(np.int64)
  stamps = pd.to_datetime(values, errors="coerce", utc=True)
  retry = stamps.isna().to_numpy() & values.notna().to_numpy()
  if retry.any():  # rows in another format than the first one: parse them one by one
    stamps[retry] = pd.to_datetime(values[retry], errors="coerce", utc=True, format="mixed")
  _fail_at(stamps.isna().to_numpy(), values, path, column, "a date or integer unix seconds")
  return ((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)


def _fail_at(bad: np.ndarray, values: pd.Series, path: str, column: str, expected: str) -> None:
  if bad.any():
    row = int(np.argmax(bad))
    if pd.isna(values.iloc[row]):  # an empty field, or a row with fewer fields than the header
      raise InputError(f"missing {column} value (an empty field or a short row): expected {expected}", path,
                       row + 2)
    raise InputError(f"unparsable {column} {values.iloc[row]!r}: expected {expected}", path, row + 2)


def _read_columns(path: str, wanted: list[str], sep: str | None) -> pd.DataFrame:
  """The named columns as strings; InputError listing the columns found when one is missing."""
  files.require_file(path)
  if os.path.getsize(path) == 0:
    raise InputError("file is empty", path)
  sep = sep or detect_separator(path)
  try:
    header = list(pd.read_csv(path, sep=sep, nrows=0).columns)
  except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
    raise InputError(f"cannot read the header ({e})", path, 1) from None
  missing = [c for c in wanted if c not in header]
  if missing:
    raise InputError(f"missing column(s) {missing}; columns found: {header} (separator {sep!r})", path, 1)
  try:
    frame = pd.read_csv(path, sep=sep, usecols=wanted, dtype=str, keep_default_na=False, na_values=[""])
  except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as e:
    raise InputError(f"cannot parse the table ({e})", path) from None
  if len(frame) == 0:
    raise InputError("the table has a header but no rows", path)
  return frame


def _ids(frame: pd.DataFrame, column: str, path: str) -> pd.Series:
  values = frame[column]
  missing = values.isna().to_numpy()
  if missing.any():
    row = int(np.argmax(missing))
    raise InputError(f"missing {column} value", path, row + 2)
  return values


def _meta_categories(path: str, item_col: str, cate_col: str, sep: str | None, items: pd.Series) -> pd.Series:
  """Each row's item category from the meta table (last line wins); "default" for unknown items."""
  meta = _read_columns(path, [item_col, cate_col], sep)
  meta = meta.dropna(subset=[item_col]).drop_duplicates(subset=[item_col], keep="last")
  lookup = pd.Series(meta[cate_col].fillna(DEFAULT_CATEGORY).to_numpy(), index=pd.Index(meta[item_col]))
  codes, uniques = pd.factorize(items, sort=False)
  matched = lookup.index.get_indexer(pd.Index(uniques))
  if not (matched >= 0).any():
    raise InputError(f"no meta row matches any of the {len(uniques)} items of the interactions "
                     f"(e.g. item {uniques[0]!r}, meta {item_col} {meta[item_col].iloc[0]!r})", path)
  per_item = np.where(matched >= 0, lookup.to_numpy(dtype=object)[np.maximum(matched, 0)], DEFAULT_CATEGORY)
  return pd.Series(per_item[codes], index=items.index, dtype=str)
