"""Completing given partial baskets with a trained PARSRec run (recsys_jax.basket_inference, complete_baskets.py)."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from recsys_jax import models, tasks
from recsys_jax.basket_inference import BasketCompleter
from recsys_jax.errors import InputError
from recsys_jax.sources.parsrec_text import HEADER, SessionTable, read_parsrec_text, write_parsrec_text
from recsys_jax.training import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASKET = 2  # items of each user's last session kept as the basket so far


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A briefly trained tiny PARSRec run, and the tiny task's sessions with each last one cut to BASKET items."""
  workdir = tmp_path_factory.mktemp("parsrec") / "wd"
  task = tasks.tiny_task("basket_completion")
  model = models.get("parsrec")
  config = trainer.model_config_for(model, task, item_dim=8, user_dim=8)
  trainer.train_and_evaluate(task, model, config, trainer.TrainConfig(epochs=2, batch_size=32, seed=3),
                             str(workdir), "tiny", log=lambda *_: None)
  ds = task.dataset
  sessions = {}  # user -> [(time, items)] in time order
  for split in ("train", "valid", "test"):
    data = ds.split(split)
    for i in range(len(data)):
      sessions.setdefault(int(data.user[i]), []).append((int(data.time[i]), data.session(i).tolist()))
  users, times, lengths, items, full_last = [], [], [], [], {}
  for u in sorted(sessions):
    history = sorted(sessions[u])
    full_last[u] = history[-1][1]
    history[-1] = (history[-1][0], history[-1][1][:BASKET])
    for t, s in history:
      users.append(u), times.append(t), lengths.append(len(s)), items.extend(s)
  table = SessionTable.from_lengths(np.array(users), np.array(times), np.array(lengths), np.array(items))
  return workdir, table, sessions, full_last


def _expected_step(completer, sessions, full_last, u, step, k):
  """Independently: user u's full last session in a batch of its own, placed in order, read at `step`."""
  model = models.get("parsrec")
  earlier = [i for _, s in sorted(sessions[u])[:-1] for i in s]
  session = np.array([full_last[u]], np.int32)
  history = np.bincount(earlier, minlength=completer.num_items)[None, :] / len(earlier)
  batch = {"user": np.array([u], np.int32), "session": session, "length": np.array([session.shape[1]], np.int32),
           "history": history.astype(np.float32), "weight": np.ones(1, np.float32),
           "in_order": np.ones(1, bool)}
  out = jax.device_get(model.apply(completer.config, completer.variables, batch, train=False)[0])
  assert out["placed"][:, 0].tolist() == full_last[u]  # in_order places the items as listed
  scores = out["scores"][step, 0].astype(np.float64)
  allowed = np.arange(completer.num_items) >= 2
  allowed[full_last[u][:step]] = False
  top = np.argsort(-np.where(allowed, scores, -np.inf), kind="stable")[:k]
  softmax = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
  return top, softmax[top], out["attention"][step, 0, :step]


def test_the_next_step_is_the_models_step_after_the_basket_placed_in_order(run):
  workdir, table, sessions, full_last = run
  completer = BasketCompleter.from_workdir(str(workdir))
  done = completer.complete(table, k=5)
  assert done.user.tolist() == sorted(sessions)
  for row in (0, 17):
    u = int(done.user[row])
    top, probability, attention = _expected_step(completer, sessions, full_last, u, BASKET, 5)
    assert done.items[row].tolist() == top.tolist()
    np.testing.assert_allclose(done.probability[row], probability, rtol=1e-4)
    np.testing.assert_allclose(done.attention[row], attention, rtol=1e-5)
    assert done.attention[row].sum() == pytest.approx(1.0, abs=1e-5)
    assert done.basket[row].tolist() == full_last[u][:BASKET]


def _with_empty_last_sessions(table: SessionTable, users) -> SessionTable:
  """`table` with the last session of each of `users` emptied (written `u,t,0`)."""
  last = np.zeros(len(table), bool)
  for u in users:
    rows = np.flatnonzero(table.user == u)
    last[rows[np.argmax(table.time[rows])]] = True
  keep = ~np.repeat(last, table.lengths())
  return SessionTable.from_lengths(table.user, table.time, np.where(last, 0, table.lengths()), table.items[keep])


def test_an_empty_basket_gets_the_models_first_step(run, tmp_path):
  workdir, table, sessions, full_last = run
  completer = BasketCompleter.from_workdir(str(workdir))
  users = sorted(sessions)
  path = tmp_path / "baskets.txt"
  emptied = _with_empty_last_sessions(table, users[::2])
  write_parsrec_text(str(path), emptied, write_dtype_json=False)
  line = int(np.argmax(emptied.lengths() == 0)) + 2
  with pytest.raises(InputError, match=f"line {line}: has 3 fields; expected .* with at least one item"):
    read_parsrec_text(str(path), min_sessions_per_user=1)  # training data may not have empty sessions
  done = completer.complete(read_parsrec_text(str(path), min_sessions_per_user=1, allow_empty_last=True), k=5)
  assert done.user.tolist() == users
  for row in (0, 1, 16, 17):  # empty baskets at even rows, BASKET items at odd ones
    u = int(done.user[row])
    step = 0 if row % 2 == 0 else BASKET
    top, probability, attention = _expected_step(completer, sessions, full_last, u, step, 5)
    assert done.items[row].tolist() == top.tolist() and len(done.basket[row]) == step
    np.testing.assert_allclose(done.probability[row], probability, rtol=1e-4)
    np.testing.assert_allclose(done.attention[row], attention, rtol=1e-5)


def test_only_a_users_last_session_may_be_empty(tmp_path):
  path = tmp_path / "baskets.txt"
  path.write_text(HEADER + "\n4,10,2,5,6\n4,20,0\n4,30,1,7\n5,10,0\n")
  with pytest.raises(InputError, match=r"baskets.txt, line 3: session_length is 0 but user 4 has a later session"):
    read_parsrec_text(str(path), min_sessions_per_user=1, allow_empty_last=True)
  path.write_text(HEADER + "\n4,10,2,5,6\n4,30,1\n")
  with pytest.raises(InputError, match=r"line 3: session_length is 1 but the line has 0 items"):
    read_parsrec_text(str(path), min_sessions_per_user=1, allow_empty_last=True)
  path.write_text(HEADER + "\n4,10,2,5,6\n4,30\n")
  with pytest.raises(InputError, match=r"line 3: has 2 fields; .*may be empty: 'user_id,time,0'"):
    read_parsrec_text(str(path), min_sessions_per_user=1, allow_empty_last=True)
  path.write_text(HEADER + "\n4,10,2,5,6\n4,30,0\n5,10,0\n")
  table = read_parsrec_text(str(path), min_sessions_per_user=1, allow_empty_last=True)
  assert table.lengths().tolist() == [2, 0, 0]


def test_batches_do_not_change_the_results(run):
  workdir, table, _, _ = run
  completer = BasketCompleter.from_workdir(str(workdir))
  one, many = completer.complete(table, k=4, batch_size=5), completer.complete(table, k=4)
  np.testing.assert_array_equal(one.items, many.items)
  np.testing.assert_allclose(one.probability, many.probability, rtol=1e-5)


def test_unknown_users_and_other_runs_are_refused(run, tmp_path):
  workdir, table, _, _ = run
  completer = BasketCompleter.from_workdir(str(workdir))
  bad = SessionTable(user=np.where(np.arange(len(table)) == 3, completer.num_users, table.user), time=table.time,
                     offsets=table.offsets, items=table.items)
  with pytest.raises(InputError, match=r"baskets.txt, line 5: user_id 48 is unknown to the model"):
    completer.complete(bad, source="baskets.txt")
  (tmp_path / "config.json").write_text(json.dumps({"model": "slirec", "task": "sequential_ctr"}))
  with pytest.raises(InputError, match="expected a basket completion run"):
    BasketCompleter.from_workdir(str(tmp_path))
  saved = json.loads((workdir / "config.json").read_text())
  del saved["data_identity"]["history_len"]  # as in runs older than the key: results.json has it
  (tmp_path / "config.json").write_text(json.dumps(saved))
  with pytest.raises(InputError, match="records no history window"):
    BasketCompleter.from_workdir(str(tmp_path))
  (tmp_path / "results.json").write_text(json.dumps({"data": {"stats": {"history_len": 4}}}))
  assert BasketCompleter.from_workdir(str(workdir)).history_len is None
  with pytest.raises(InputError, match="holds no best checkpoint"):  # the window was found, then the checkpoint
    BasketCompleter.from_workdir(str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()  # nothing created


def test_cli_writes_the_recommendations_and_refuses_bad_input_in_one_line(run, tmp_path):
  workdir, table, _, _ = run
  baskets = tmp_path / "baskets.txt"
  first_user = int(table.user.min())
  write_parsrec_text(str(baskets), _with_empty_last_sessions(table, [first_user]), write_dtype_json=False)
  out = tmp_path / "completions.csv"
  command = [sys.executable, os.path.join(REPO, "experiments", "complete_baskets.py"), f"--workdir={workdir}",
             f"--input={baskets}", f"--output={out}", "--k=3"]
  proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = out.read_text().splitlines()
  assert lines[0] == "user,time,rank,item,probability,basket_attention" and len(lines) == 1 + 48 * 3
  assert lines[1].startswith(f"{first_user},") and lines[1].split(",")[5] == ""  # an empty basket: no attention
  assert len(lines[4].split(",")[5].split()) == BASKET
  baskets.write_text(baskets.read_text() + "7,99,1,100000\n")
  out.unlink()
  proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
  assert "item id 100000 is out of range" in lines[0] and f"line {len(table) + 2}" in lines[0]
  assert not out.exists()
