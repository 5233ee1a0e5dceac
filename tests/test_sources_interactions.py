"""Generic interactions table reader: column mapping, separators, timestamps, meta table, bad inputs."""

import numpy as np
import pytest

from recsys_jax.errors import InputError
from recsys_jax.sources.interactions_table import read_interactions_table

from helpers import fixture, write as _write


def write(tmp_path, text: str, name: str = "t.csv") -> str:
  return _write(tmp_path, text, name)


def test_csv_with_meta_table():
  frame = read_interactions_table(fixture("interactions.csv"), meta_path=fixture("item_meta.csv"))
  assert list(frame.columns) == ["user", "item", "time", "cate"]
  assert frame["user"].tolist() == ["u1", "u1", "u2", "u2"]
  assert frame["item"].tolist() == ["i1", "i2", "i1", "i3"]
  assert frame["time"].dtype == np.int64
  assert frame["time"].tolist() == [1393545600, 1393632000, 1393718400, 1393804800]
  assert frame["cate"].tolist() == ["c1", "c2", "c1", "default"]  # i3 has no meta row


def test_tsv_mapped_columns_dates_and_category_column():
  frame = read_interactions_table(fixture("interactions_dates.tsv"), user="uid", item="iid", time="ts",
                                  cate="genre")
  # 2014-02-28, 2014-03-01 12:00 (naive = UTC), 2014-03-02T00:00Z, 2014-03-03.
  assert frame["time"].tolist() == [1393545600, 1393675200, 1393718400, 1393804800]
  assert frame["cate"].tolist() == ["g1", "g2", "g1", "default"]


def test_without_category_every_item_is_default():
  frame = read_interactions_table(fixture("interactions.csv"))
  assert set(frame["cate"]) == {"default"}


def test_explicit_separator(tmp_path):
  path = write(tmp_path, "a;b;c\nu;i;5\n")
  frame = read_interactions_table(path, user="a", item="b", time="c", sep=";")
  assert frame.iloc[0].tolist() == ["u", "i", 5, "default"]


def test_ids_stay_strings(tmp_path):
  frame = read_interactions_table(write(tmp_path, "user_id,item_id,time\n007,10,1\n7,10.0,2\n"))
  assert frame["user"].tolist() == ["007", "7"]
  assert frame["item"].tolist() == ["10", "10.0"]


def test_wrong_column_lists_columns_found():
  with pytest.raises(InputError, match=r"missing column\(s\) \['user_id'\].*'uid', 'iid', 'ts', 'genre'"):
    read_interactions_table(fixture("interactions_dates.tsv"), item="iid", time="ts")


def test_wrong_meta_column():
  with pytest.raises(InputError, match="columns found.*'i_category'") as e:
    read_interactions_table(fixture("interactions.csv"), meta_path=fixture("item_meta.csv"), meta_cate="cat")
  assert e.value.path.endswith("item_meta.csv")


@pytest.mark.parametrize("times,row_line", [(["1", "2", "soon"], 4), (["1", "2.5", "3"], 3),
                                            (["2014-01-01", "2014-01-02", "not a date"], 4),
                                            (["2014-01-01", "", "2014-01-03"], 3),
                                            (["1", "2", "99999999999999999999999"], 4), (["1", "nan", "3"], 3)])
def test_unparsable_timestamp_reports_row(tmp_path, times, row_line):
  text = "user_id,item_id,time\n" + "".join(f"u,i,{t}\n" for t in times)
  with pytest.raises(InputError, match="unparsable time|missing time value") as e:
    read_interactions_table(write(tmp_path, text))
  assert e.value.line == row_line


def test_missing_id_reports_row(tmp_path):
  with pytest.raises(InputError, match="missing item_id") as e:
    read_interactions_table(write(tmp_path, "user_id,item_id,time\nu,i,1\nu,,2\n"))
  assert e.value.line == 3


def test_meta_matching_no_item(tmp_path):
  meta = write(tmp_path, "item_id,i_category\nzz,c\n", "meta.csv")
  with pytest.raises(InputError, match="no meta row matches"):
    read_interactions_table(fixture("interactions.csv"), meta_path=meta)


def test_missing_file(tmp_path):
  with pytest.raises(InputError, match="not found"):
    read_interactions_table(str(tmp_path / "none.csv"))


@pytest.mark.parametrize("text,message", [("", "empty"), ("user_id,item_id,time\n", "no rows")])
def test_empty_file_or_header_only(tmp_path, text, message):
  with pytest.raises(InputError, match=message):
    read_interactions_table(write(tmp_path, text))


def test_short_row_reports_line(tmp_path):
  with pytest.raises(InputError, match=r"missing time value \(an empty field or a short row\)") as e:
    read_interactions_table(write(tmp_path, "user_id,item_id,time\nu,i,1\nu,i\n"))
  assert e.value.line == 3


def test_category_column_and_meta_are_exclusive():
  with pytest.raises(InputError, match="not both"):
    read_interactions_table(fixture("interactions.csv"), cate="x", meta_path=fixture("item_meta.csv"))


def test_real_grocery(shared_dataset):
  frame = read_interactions_table(shared_dataset("amazon-grocery", "train.csv"),
                                  meta_path=shared_dataset("amazon-grocery", "item_meta.csv"))
  assert len(frame) == 121892
  assert frame["user"].nunique() == 14681
  assert frame["item"].nunique() == 8687
  assert 40 <= frame["cate"].nunique() <= 57
  assert "default" not in set(frame["cate"])  # every item has a meta row
  assert frame["time"].min() > 0
