"""The command line as a user meets it: an end-to-end tiny run, recommendations, and bad input."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--synthetic_users=80", "--epochs=2", "--batch_size=40", "--max_len=10"]


def run(script, *args, cwd=REPO):
  return subprocess.run([sys.executable, os.path.join(REPO, "experiments", script), *args],
                        capture_output=True, text=True, cwd=cwd, timeout=600)


def one_error_line(proc):
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
  return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("run")
  workdir = tmp / "wd"
  proc = run("run.py", "--model=slirec", f"--workdir={workdir}", f"--cache_dir={tmp / 'cache'}", *TINY)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return tmp, workdir, proc


def test_end_to_end_run_writes_results(trained):
  _, workdir, proc = trained
  results = json.loads((workdir / "results.json").read_text())
  assert results["model"] == "slirec" and results["epochs_run"] == 2
  assert 0 <= results["test"]["auc"] <= 1 and "ndcg@6" in results["test"]
  assert "group_auc" in proc.stdout and "test" in proc.stdout  # the printed table
  assert "train examples/s after compilation" in proc.stdout
  assert "| valid auc" in proc.stderr + proc.stdout  # the per-epoch line
  assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 3


def test_recommend_from_the_workdir(trained, tmp_path):
  tmp, workdir, _ = trained
  histories = tmp_path / "histories.csv"
  histories.write_text("user_id,item_id,time\nu1,i00_001,1431000000\nu1,i00_002,1431003600\n"
                       "u2,i01_003,1431000000\nu3,not_an_item,1431000000\n")
  out = tmp_path / "recs.csv"
  proc = run("recommend.py", f"--workdir={workdir}", f"--input={histories}", f"--output={out}", "--k=5")
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = out.read_text().splitlines()
  assert rows[0] == "user,rank,item,score" and len(rows) == 1 + 3 * 5
  assert "i00_001" not in {r.split(",")[2] for r in rows[1:3]}  # seen items are excluded
  assert "note: 1 of 3 histories (user 'u3' first) hold no item the model knows" in proc.stdout


def test_missing_file(tmp_path):
  line = one_error_line(run("run.py", "--dataset=interactions", f"--data_path={tmp_path / 'nope.csv'}",
                            f"--cache_dir={tmp_path}"))
  assert "nope.csv" in line


def test_wrong_column(tmp_path):
  table = tmp_path / "t.csv"
  table.write_text("user,item,when\n1,2,3\n")
  line = one_error_line(run("run.py", "--dataset=interactions", f"--data_path={table}", f"--cache_dir={tmp_path}"))
  assert "user_id" in line and "t.csv" in line


def test_empty_split(tmp_path):
  table = tmp_path / "t.csv"
  table.write_text("user_id,item_id,time\n" + "".join(f"u{u},i{u},{t}\n" for u in range(5) for t in (1, 2)))
  line = one_error_line(run("run.py", "--dataset=interactions", f"--data_path={table}", f"--cache_dir={tmp_path}"))
  assert "empty" in line
  assert not list(tmp_path.glob("*.npz"))  # no cache written


@pytest.mark.parametrize("flag", ["--train_negatives=-1", "--train_negatives=0", "--valid_negatives=0",
                                  "--test_negatives=0", "--max_len=1000000000"])
def test_nonsensical_numbers_are_refused_before_anything_is_written(tmp_path, flag):
  assert flag.split("=")[0][2:] in one_error_line(run("run.py", flag, f"--workdir={tmp_path / 'wd'}"))
  assert not (tmp_path / "wd").exists()


def test_inference_only_on_an_empty_workdir_writes_nothing(tmp_path):
  line = one_error_line(run("run.py", "--inference_only", f"--workdir={tmp_path / 'wd'}",
                            f"--cache_dir={tmp_path / 'cache'}", *TINY))
  assert "holds no checkpoint" in line and not (tmp_path / "wd").exists()


def test_recommend_refuses_bad_k_and_a_folder_as_output(trained, tmp_path):
  _, workdir, _ = trained
  history = tmp_path / "h.csv"
  history.write_text("user_id,item_id,time\nu,i1,1\n")
  args = [f"--workdir={workdir}", f"--input={history}"]
  assert "--k" in one_error_line(run("recommend.py", *args, f"--output={tmp_path / 'r.csv'}", "--k=0"))
  assert "is a folder" in one_error_line(run("recommend.py", *args, f"--output={tmp_path}"))


def test_unknown_flag_model_and_dataset(tmp_path):
  assert "bogus" in one_error_line(run("run.py", "--bogus=1"))
  line = one_error_line(run("run.py", "--model=nope"))
  assert "slirec" in line and "a2svd" in line
  line = one_error_line(run("run.py", "--dataset=nope", f"--cache_dir={tmp_path}"))
  assert "interactions" in line
