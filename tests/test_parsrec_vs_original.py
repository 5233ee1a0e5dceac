"""The same-hour comparison with the original PARSRec (benchmarks/parsrec_vs_original.py): log parsing, summary."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import parsrec_vs_original as compare  # noqa: E402


def test_the_original_epoch_lines_are_read_and_the_evaluation_lines_are_not():
  log = ("train it 392/392 of epoch 0, 408.45 ms/it\n    loss 7.549953 (22:42)\ntraining epoch 0 in 181.53 s\n"
         "validation it 4/4 of epoch 0, 104.96 ms/it\ntraining epoch 1 in 186.38 s\n")
  assert compare.original_epoch_seconds(log) == [181.53, 186.38]
  assert compare.original_epoch_seconds("Using CPU...\n") == []


def test_each_original_run_is_set_against_the_runs_of_ours_beside_it():
  runs = [{"code": "recsys_jax", "epoch_seconds": [20.0, 22.0, 21.0]},
          {"code": "original", "epoch_seconds": [200.0, 220.0]},
          {"code": "recsys_jax", "epoch_seconds": [19.0, 30.0, 20.0]},
          {"code": "original", "epoch_seconds": [180.0, 190.0]},
          {"code": "recsys_jax", "epoch_seconds": [18.5]}]
  summary = compare.summarize(runs)
  assert summary["median_epoch_seconds"] == {"recsys_jax": 20.0, "original": 195.0}
  assert summary["speedup_of_medians"] == 9.75
  assert summary["speedup_against_neighbours"] == [
      {"original_run": 1, "recsys_jax_run": 0, "speedup": 10.0},   # 210 / median(20, 22, 21)
      {"original_run": 1, "recsys_jax_run": 2, "speedup": 10.5},   # 210 / median(19, 30, 20)
      {"original_run": 3, "recsys_jax_run": 2, "speedup": 9.25},   # 185 / 20
      {"original_run": 3, "recsys_jax_run": 4, "speedup": 10.0}]   # 185 / 18.5
  with pytest.raises(ValueError, match="runs of both codes"):
    compare.summarize(runs[:1])
