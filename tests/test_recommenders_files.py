"""Reader and writer of Microsoft `recommenders` sequential files: parsing, round trip, bad inputs."""
import os
import pickle

import numpy as np
import pandas as pd
import pytest

from recsys_jax.errors import InputError
from recsys_jax.preprocessing.sequential import SequentialPrepConfig, preprocess
from recsys_jax.preprocessing.sequential_dataset import SPLITS
from recsys_jax.sources.recommenders_files import read_recommenders_files, write_recommenders_files

FIELDS = ("user", "hist_item", "hist_cate", "hist_time", "hist_len", "time", "cand_item", "cand_cate")
VOCABS = {"user_vocab.pkl": {"A": 0, "E": 1},
          "item_vocab.pkl": {"default_mid": 0, "a3": 1, "a2": 2, "a1": 3, "a4": 4},
          "category_vocab.pkl": {"default_cat": 0, "x": 1, "y": 2}}
TRAIN = ["1\tA\ta3\ty\t20\ta2\tx\t10", "1\tA\ta4\tx\t20\ta2,a3\tx,y\t10,20", "1\tE\ta1\tx\t2\ta1\tx\t1"]
VALID = ["1\tA\ta1\tx\t30\ta2,a3,a4\tx,y,x\t10,20,20", "0\tA\ta9\tz\t30\ta2,a3,a4\tx,y,x\t10,20,20",
         "1\tD\ta3\ty\t2\ta2\tx\t1", "0\tD\ta1\tx\t2\ta2\tx\t1"]
TEST = ["1\tA\ta5\ty\t40\ta2,a3,a4,a1\tx,y,x,x\t10,20,20,30",
        "0\tA\ta2\tx\t40\ta2,a3,a4,a1\tx,y,x,x\t10,20,20,30",
        "0\tA\ta4\tx\t40\ta2,a3,a4,a1\tx,y,x,x\t10,20,20,30"]


def make_folder(path, train=TRAIN, valid=VALID, test=TEST, vocabs=VOCABS) -> str:
  os.makedirs(path, exist_ok=True)
  for name, lines in (("train_data", train), ("valid_data", valid), ("test_data", test)):
    with open(os.path.join(path, name), "w") as f:
      f.write("".join(line + "\n" for line in lines))
  for name, vocab in vocabs.items():
    with open(os.path.join(path, name), "wb") as f:
      pickle.dump(vocab, f)
  return str(path)


def assert_same(a, b):
  for split in SPLITS:
    for field in FIELDS:
      x, y = getattr(a.split(split), field), getattr(b.split(split), field)
      assert x.dtype == y.dtype and np.array_equal(x, y), (split, field)
  for vocab in ("user_vocab", "item_vocab", "cate_vocab"):
    assert getattr(a, vocab).tolist() == getattr(b, vocab).tolist(), vocab


def test_reads_blocks_vocab_and_truncated_histories(tmp_path):
  ds = read_recommenders_files(make_folder(tmp_path / "r"), max_len=3)
  assert ds.item_vocab.tolist() == ["default_mid", "a3", "a2", "a1", "a4"]
  assert ds.user_vocab.tolist() == ["A", "E"]
  assert ds.train.cand_item.tolist() == [[1], [4], [3]]
  assert ds.train.hist_item[1].tolist() == [2, 1, 0] and ds.train.hist_len.tolist() == [1, 2, 1]
  # Valid: blocks of 2; unknown item a9 / category z / user D map to 0.
  assert ds.valid.cand_item.tolist() == [[3, 0], [1, 3]]
  assert ds.valid.cand_cate.tolist() == [[1, 0], [2, 1]]
  assert ds.valid.user.tolist() == [0, 0]
  # Test: a history of 4 keeps its last 3 entries, left-aligned.
  assert ds.test.hist_item.tolist() == [[1, 4, 3]]
  assert ds.test.hist_cate.tolist() == [[2, 1, 1]]
  assert ds.test.hist_time.tolist() == [[20, 20, 30]]
  assert ds.test.cand_item.tolist() == [[0, 2, 4]] and ds.test.time.tolist() == [40]
  assert ds.stats["valid_negatives"] == 1 and ds.stats["test_negatives"] == 2
  assert ds.max_len == 3


@pytest.mark.parametrize("config", [SequentialPrepConfig(valid_negatives=2, test_negatives=3),
                                    SequentialPrepConfig(max_len=2, valid_negatives=1, test_negatives=0)])
def test_round_trip(tmp_path, config):
  rows = [(f"u{u}", f"i{(u * 5 + k * 3) % 17}", 100 * k + u, f"c{(u + k) % 4}")
          for u in range(30) for k in range(3 + u % 6)]
  ds = preprocess(pd.DataFrame(rows, columns=["user", "item", "time", "cate"]), config, "rt")
  write_recommenders_files(ds, str(tmp_path / "out"))
  back = read_recommenders_files(str(tmp_path / "out"), max_len=config.max_len)
  assert_same(ds, back)


def test_writer_format(tmp_path):
  ds = read_recommenders_files(make_folder(tmp_path / "r"), max_len=5)
  write_recommenders_files(ds, str(tmp_path / "w"))
  with open(tmp_path / "w" / "valid_data") as f:
    lines = f.read().splitlines()
  # Unknown ids come back as the names of index 0.
  assert lines[1] == "0\tA\tdefault_mid\tdefault_cat\t30\ta2,a3,a4\tx,y,x\t10,20,20"
  with open(tmp_path / "w" / "train_data") as f:
    assert f.read().splitlines() == TRAIN
  with open(tmp_path / "w" / "item_vocab.pkl", "rb") as f:
    assert pickle.load(f) == VOCABS["item_vocab.pkl"]


def test_writer_refuses_separator_in_ids(tmp_path):
  ds = read_recommenders_files(make_folder(tmp_path / "r"), max_len=5)
  ds.item_vocab = np.array(["default_mid", "a,3", "a2", "a1", "a4"])
  with pytest.raises(InputError, match="commas"):
    write_recommenders_files(ds, str(tmp_path / "w"))


def test_vocab_with_overwritten_index_zero(tmp_path):
  vocabs = dict(VOCABS, **{"category_vocab.pkl": {"x": 1, "y": 2}})
  ds = read_recommenders_files(make_folder(tmp_path / "r", vocabs=vocabs), max_len=5)
  assert ds.cate_vocab.tolist() == ["<unused:0>", "x", "y"]


def test_vocab_index_beyond_its_size_is_an_error(tmp_path):
  vocabs = dict(VOCABS, **{"category_vocab.pkl": {"x": 1, "y": 99999}})
  with pytest.raises(InputError, match="index 99999 of id 'y' is out of range; expected indices below 3") as e:
    read_recommenders_files(make_folder(tmp_path / "r", vocabs=vocabs), max_len=5)
  assert e.value.path.endswith("category_vocab.pkl")


def test_train_negative_is_an_error(tmp_path):
  train = TRAIN[:2] + ["0" + TRAIN[2][1:]]
  with pytest.raises(InputError, match="train lines must be positives") as e:
    read_recommenders_files(make_folder(tmp_path / "r", train=train))
  assert e.value.line == 3 and e.value.path.endswith("train_data")


@pytest.mark.parametrize("valid,line", [(VALID[:3], 3), (VALID[1:], 1), (VALID[:2] + VALID[2:3] * 2, 4)])
def test_irregular_blocks(tmp_path, valid, line):
  with pytest.raises(InputError, match="positive|irregular") as e:
    read_recommenders_files(make_folder(tmp_path / "r", valid=valid))
  assert e.value.line == line and e.value.path.endswith("valid_data")


def test_block_user_mismatch(tmp_path):
  valid = VALID[:3] + [VALID[3].replace("\tD\t", "\tE\t")]
  with pytest.raises(InputError, match="differs from its block") as e:
    read_recommenders_files(make_folder(tmp_path / "r", valid=valid))
  assert e.value.line == 4


@pytest.mark.parametrize("bad,message", [("1\tA\ta3\ty\t20\ta2", "8 tab-separated"),
                                         ("1\tA\ta3\ty\t20\ta2\tx\t10\tmore", "8 tab-separated"),
                                         ("1\tA\ta3\ty\tnoon\ta2\tx\t10", "unparsable timestamp"),
                                         ("1\tA\ta3\ty\tnan\ta2\tx\t10", "unparsable timestamp"),
                                         ("1\tA\ta3\ty\t1e23\ta2\tx\t10", "unparsable timestamp"),
                                         ("1\tA\ta3\ty\t20\ta2,a1\tx\t10", "differ in length"),
                                         ("1\tA\ta3\ty\t20\ta2\tx\tdawn", "unparsable history timestamp"),
                                         ("2\tA\ta3\ty\t20\ta2\tx\t10", "label must be 0 or 1")])
def test_bad_lines(tmp_path, bad, message):
  with pytest.raises(InputError, match=message) as e:
    read_recommenders_files(make_folder(tmp_path / "r", train=TRAIN[:1] + [bad]))
  assert e.value.line == 2


def test_missing_or_bad_files(tmp_path):
  with pytest.raises(InputError, match="folder not found"):
    read_recommenders_files(str(tmp_path / "none"))
  folder = make_folder(tmp_path / "r")
  os.remove(os.path.join(folder, "test_data"))
  with pytest.raises(InputError, match="file not found"):
    read_recommenders_files(folder)
  folder = make_folder(tmp_path / "s", test=[])
  with pytest.raises(InputError, match="empty"):
    read_recommenders_files(folder)


def test_vocab_pickle_must_be_plain_data(tmp_path):
  folder = make_folder(tmp_path / "r")
  with open(os.path.join(folder, "user_vocab.pkl"), "wb") as f:
    pickle.dump({"A": np.int64(0)}, f)  # needs a class: refused, no code runs
  with pytest.raises(InputError, match="user_vocab.pkl"):
    read_recommenders_files(folder)
  with open(os.path.join(folder, "user_vocab.pkl"), "wb") as f:
    pickle.dump(["A"], f)
  with pytest.raises(InputError, match="dict"):
    read_recommenders_files(folder)


def test_real_grocery_round_trip(shared_dataset, tmp_path):
  from recsys_jax.sources.interactions_table import read_interactions_table
  frame = read_interactions_table(shared_dataset("amazon-grocery", "train.csv"),
                                  meta_path=shared_dataset("amazon-grocery", "item_meta.csv"))
  ds = preprocess(frame, SequentialPrepConfig(sample_rate=0.2), "grocery")
  write_recommenders_files(ds, str(tmp_path / "g"))
  assert_same(ds, read_recommenders_files(str(tmp_path / "g")))
