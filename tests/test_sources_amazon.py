"""Amazon review reader: both schemas, meta files, gzip, the per-line fallback and every bad input."""
import gzip

import numpy as np
import pytest

from recsys_jax.errors import InputError
from recsys_jax.sources.amazon_reviews import read_amazon_reviews

from helpers import fixture, write as _write


def write(tmp_path, text: str, name: str = "reviews.json") -> str:
  return _write(tmp_path, text, name)


def line(user: str = "U1", item: str = "I1", time: str = "100") -> str:
  return f'{{"reviewerID": "{user}", "asin": "{item}", "reviewText": "x", "unixReviewTime": {time}}}'


def test_2014_json_with_literal_meta():
  frame = read_amazon_reviews(fixture("amazon_2014.json"), fixture("amazon_2014_meta.json"))
  assert list(frame.columns) == ["user", "item", "time", "cate"]
  assert frame["user"].tolist() == ["U1", "U2", "U1", "U3", "U2"]
  assert frame["item"].tolist() == ["I2", "I1", "I1", "I3", "I4"]
  assert frame["time"].dtype == np.int64
  assert frame["time"].tolist() == [1393545600, 1363392000, 1300000000, 1400000000, 1410000000]
  # categories[0][-1]; I3 has an empty path list and I4 no meta line: both default.
  assert frame["cate"].tolist() == ["Kids' & Family", "Movies", "Movies", "default", "default"]


def test_2014_python_literal_reviews_including_slow_path_line():
  frame = read_amazon_reviews(fixture("amazon_2014_literal.json"), fixture("amazon_2014_meta.json"))
  assert frame["user"].tolist() == ["U1", "U2", "U'3", "U1"]  # U'3 is double-quoted: parsed per line
  assert frame["item"].tolist() == ["I2", "I1", "I3", "I1"]
  assert frame["time"].tolist() == [1393545600, 1363392000, 1400000000, 1300000000]
  assert frame["cate"].tolist() == ["Kids' & Family", "Movies", "default", "Movies"]


def test_2018_json_with_meta_and_gzip_equal_plain():
  plain = read_amazon_reviews(fixture("amazon_2018.json"), fixture("amazon_2018_meta.json"))
  zipped = read_amazon_reviews(fixture("amazon_2018.json.gz"), fixture("amazon_2018_meta.json"))
  assert plain.equals(zipped)
  assert plain["user"].tolist() == ["R1", "R2", "R1", "R3"]
  assert plain["item"].tolist() == ["P1", "P2", "P3", "P1"]
  # category[-1]; P2 has an empty list; P3's name holds a bracket, which the per-line fallback handles.
  assert plain["cate"].tolist() == ["Comedy", "default", "Drama [Classic]", "Comedy"]


def test_without_meta_every_item_is_default():
  frame = read_amazon_reviews(fixture("amazon_2018.json"))
  assert set(frame["cate"]) == {"default"}


def test_blank_lines_crlf_and_digit_string_time(tmp_path):
  text = line("A", "X", "5") + "\r\n\r\n" + line("B", "Y", '"7"') + "\r\n" + line("C", "Z", "9.0") + "\r\n"
  frame = read_amazon_reviews(write(tmp_path, text))
  assert frame["user"].tolist() == ["A", "B", "C"]
  assert frame["time"].tolist() == [5, 7, 9]


def test_value_with_escape_uses_fallback(tmp_path):
  text = line("A", "X") + "\n" + '{"reviewerID": "B\\"q", "asin": "Y", "unixReviewTime": 3}\n'
  frame = read_amazon_reviews(write(tmp_path, text))
  assert frame["user"].tolist() == ["A", 'B"q']


def test_key_text_inside_a_value_is_not_a_key(tmp_path):
  text = ('{"summary": "\\"asin\\": \\"FAKE\\"", "reviewerID": "A", "asin": "REAL", "unixReviewTime": 1}\n'
          + line("B", "Y") + "\n")
  assert read_amazon_reviews(write(tmp_path, text))["item"].tolist() == ["REAL", "Y"]


def test_missing_file(tmp_path):
  with pytest.raises(InputError, match="not found") as e:
    read_amazon_reviews(str(tmp_path / "nope.json"))
  assert e.value.path.endswith("nope.json")


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file(tmp_path, text):
  with pytest.raises(InputError, match="empty"):
    read_amazon_reviews(write(tmp_path, text))


def test_empty_gzip_file(tmp_path):
  path = tmp_path / "r.json.gz"
  path.write_bytes(gzip.compress(b""))
  with pytest.raises(InputError, match="empty"):
    read_amazon_reviews(str(path))


def test_malformed_line_reports_line_number(tmp_path):
  text = "\n".join([line(), "", line(), '{"reviewerID": "U1", "asin": "I1", "unixRevi', line()]) + "\n"
  with pytest.raises(InputError, match="malformed") as e:
    read_amazon_reviews(write(tmp_path, text))
  assert e.value.line == 4
  assert "line 4" in str(e.value)


def test_not_an_object_line(tmp_path):
  with pytest.raises(InputError, match="malformed") as e:
    read_amazon_reviews(write(tmp_path, line() + "\n[1, 2]\n"))
  assert e.value.line == 2


def test_missing_required_key(tmp_path):
  text = line() + "\n" + '{"reviewerID": "U1", "asin": "I1", "overall": 5.0}\n'
  with pytest.raises(InputError, match="unixReviewTime") as e:
    read_amazon_reviews(write(tmp_path, text))
  assert e.value.line == 2


def test_missing_asin(tmp_path):
  text = line() + "\n" + line() + "\n" + '{"reviewerID": "U1", "unixReviewTime": 5}\n'
  with pytest.raises(InputError, match="asin") as e:
    read_amazon_reviews(write(tmp_path, text))
  assert e.value.line == 3


@pytest.mark.parametrize("bad", ['"yesterday"', "12.5", "null", "true"])
def test_unparsable_time(tmp_path, bad):
  with pytest.raises(InputError, match="unparsable unixReviewTime") as e:
    read_amazon_reviews(write(tmp_path, line() + "\n" + line(time=bad) + "\n"))
  assert e.value.line == 2


def test_meta_matching_no_item(tmp_path):
  meta = write(tmp_path, "{'asin': 'ZZZ', 'categories': [['Books']]}\n", "meta.json")
  with pytest.raises(InputError, match="no meta line matches") as e:
    read_amazon_reviews(fixture("amazon_2018.json"), meta)
  assert e.value.path == meta


def test_meta_line_without_asin(tmp_path):
  meta = write(tmp_path, "{'asin': 'P1', 'categories': [['A']]}\n{'categories': [['B']]}\n", "meta.json")
  with pytest.raises(InputError, match="asin") as e:
    read_amazon_reviews(fixture("amazon_2018.json"), meta)
  assert e.value.line == 2


def test_fast_path_matches_per_line_parse(tmp_path):
  # A larger generated file through the vectorised path agrees with a plain json.loads of each line.
  rng = np.random.default_rng(0)
  users, items, times = rng.integers(0, 50, 500), rng.integers(0, 30, 500), rng.integers(0, 10**9, 500)
  text = "".join(line(f"U{u}", f"I{i}", str(t)) + "\n" for u, i, t in zip(users, items, times))
  frame = read_amazon_reviews(write(tmp_path, text))
  assert frame["user"].tolist() == [f"U{u}" for u in users]
  assert frame["item"].tolist() == [f"I{i}" for i in items]
  assert np.array_equal(frame["time"].to_numpy(), times)


def test_real_musical_instruments(shared_dataset):
  frame = read_amazon_reviews(shared_dataset("amazon-musical-instruments", "Musical_Instruments.json.gz"))
  assert len(frame) == 10261
  assert frame["user"].nunique() == 1429
  assert frame["item"].nunique() == 900
  assert frame["time"].min() > 0 and frame["time"].max() < 2_000_000_000
  assert (frame["time"] % 86400 == 0).all()  # day resolution, midnight UTC
