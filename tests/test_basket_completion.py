"""Basket-completion task: metrics vs a numpy reference, batches, loss, end to end, explanations, CLI."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import basket_completion as family
from recsys_jax import models
from recsys_jax.preprocessing.baskets import split_sessions
from recsys_jax.synthetic.parsrec import ParsrecGeneratorConfig, generate
from recsys_jax.tasks import basket_completion as bc
from recsys_jax.training import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- metrics against a plain numpy reference ---------------------------------------------------------

def _reference_metrics(scores, positive, step_mask, k):
  """Per (step, session): stable descending ranking, the first positive within the top k."""
  steps_, sessions = step_mask.shape
  hits, dcg, count = np.zeros(sessions), np.zeros(sessions), np.zeros(sessions)
  for s in range(steps_):
    for b in range(sessions):
      if not step_mask[s, b]:
        continue
      count[b] += 1
      order = np.argsort(-scores[s, b], kind="stable")[:k]
      ranks = [r for r, c in enumerate(order) if positive[s, b, c]]
      if ranks:
        hits[b] += 1
        dcg[b] += 1 / np.log2(ranks[0] + 2)
  scored = count > 0
  return {f"hr@{k}": 100 * hits.sum() / count.sum(), f"ndcg@{k}": 100 * dcg.sum() / count.sum(),
          f"sess_prec@{k}": 100 * np.mean(hits[scored] / count[scored])}


def _metrics(scores, positive, step_mask, k):
  sums = jax.jit(bc.session_sums, static_argnums=3)(scores, positive, step_mask, k)
  return bc.summarize(sums["hits"], sums["dcg"], sums["steps"], k)


def test_metrics_on_hand_made_rankings():
  ninf = -np.inf
  # 2 steps x 2 sessions x 5 candidates. Session 0: step 0 has its positive at rank 1 (a tie with an
  # earlier column goes first), step 1 at rank 3 (outside k=2). Session 1: step 0 positive at rank 0,
  # step 1 is a padded step (masked) whose positive must not count.
  scores = np.array([[[0.9, 0.9, 0.1, 0.2, ninf], [0.5, 0.4, 0.3, 0.2, 0.1]],
                     [[0.5, 0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4, 0.5]]], np.float32)
  positive = np.zeros(scores.shape, bool)
  positive[0, 0, 1] = positive[0, 1, 0] = positive[1, 0, 3] = positive[1, 1, 4] = True
  step_mask = np.array([[True, True], [True, False]])
  got = _metrics(scores, positive, step_mask, 2)
  # Valid steps: 3; hits: (s0,b0) rank 1 and (s0,b1) rank 0.
  want = {"hr@2": 100 * 2 / 3, "ndcg@2": 100 * (1 / np.log2(3) + 1) / 3, "sess_prec@2": 100 * (0.5 + 1.0) / 2}
  assert got == pytest.approx(want)
  assert got == pytest.approx(_reference_metrics(scores, positive, step_mask, 2))
  hit, rank, col = bc.first_hit_in_top_k(jnp.asarray(scores), jnp.asarray(positive), 2)
  # Ranks ignore the step mask (the sums apply it): the padded step's positive is at rank 0.
  assert np.asarray(rank).tolist() == [[1, 0], [2, 0]] and np.asarray(col).tolist() == [[1, 0], [0, 4]]


@pytest.mark.parametrize("k", [1, 3, 10])
def test_metrics_match_reference_on_random_rankings(k):
  rng = np.random.default_rng(k)
  scores = rng.integers(0, 6, (5, 40, 12)).astype(np.float32)  # many ties
  scores[rng.random(scores.shape) < 0.1] = -np.inf
  positive = rng.random(scores.shape) < 0.15
  step_mask = rng.random((5, 40)) < 0.8
  assert _metrics(scores, positive, step_mask, k) == pytest.approx(
      _reference_metrics(scores, positive, step_mask, k))


# ---- batches ------------------------------------------------------------------------------------------

def _task(num_users=42, num_sessions=6, min_len=3, max_len=10, seed=0, **kwargs):
  config = ParsrecGeneratorConfig(num_users=num_users, num_sessions=num_sessions, items_per_category=3,
                                  min_session_len=min_len, max_session_len=max_len, seed=seed)
  data = generate(config)
  dataset = split_sessions(data.sessions, name="t", num_negatives=15, seed=seed, num_items=config.num_items)
  return bc.BasketCompletionTask(dataset, **kwargs), data


def test_length_bucketed_batches():
  task, _ = _task()
  train = task.dataset.train
  epochs = [list(task.train_batches(16, np.random.default_rng(e))) for e in range(2)]
  assert len(epochs[0]) == task.num_train_batches(16) == -(-len(train) // 16)
  contents = []
  for batches in epochs:
    seen = []
    for b in batches:
      real = b["weight"] > 0
      assert b["session"].shape[0] == 16 and b["history"].shape == (16, task.dataset.num_items)
      assert b["session"].shape[1] == b["length"][real].max() == bc.bucket_width(b["length"].max())
      assert np.all(b["length"][~real] == 0) and np.all(b["session"][~real] == 0)
      assert "negatives" not in b
      seen.append(tuple(sorted(map(tuple, b["session"][real].tolist()))))
    contents.append(seen)
    assert sum(len(s) for s in seen) == len(train)
  # The chunks (sorted by length) are fixed; only their order changes, the partial chunk last.
  assert sorted(contents[0]) == sorted(contents[1]) and contents[0] != contents[1]
  assert contents[0][-1] == contents[1][-1] and len(contents[0][-1]) == len(train) % 16
  assert bc.bucket_width(10) == 10 and bc.bucket_width(17) == 32 and bc.bucket_width(0) == 1


def test_shuffled_batches_are_fresh_each_epoch_and_cover_the_split_once():
  task, _ = _task(train_order="shuffled")
  train = task.dataset.train
  everything = sorted(tuple(r[r > 0]) for r in train.session_matrix(np.arange(len(train)), 10))
  epochs = [list(task.train_batches(16, np.random.default_rng(e))) for e in (0, 1, 0)]
  assert len(epochs[0]) == task.num_train_batches(16)
  contents = []
  for batches in epochs:
    seen = []
    for b in batches:
      real = b["weight"] > 0
      assert b["session"].shape == (16, b["length"].max())  # padded to the batch's longest session
      seen.append(sorted(tuple(r[r > 0]) for r in b["session"][real]))
    assert sorted(s for batch in seen for s in batch) == everything  # every session once per epoch
    contents.append(seen)
  assert contents[0] == contents[2]  # the epoch's rng fixes the batches
  assert sorted(contents[0]) != sorted(contents[1])  # other batches, not only another order of fixed chunks
  with pytest.raises(ValueError, match="train_order"):
    _task(train_order="sorted")


def test_history_histogram_gives_the_mean_embedding_and_eval_batches_carry_negatives():
  task, _ = _task()
  table = np.random.default_rng(0).standard_normal((task.dataset.num_items, 4))
  split = task.dataset.test
  index = np.array([5, 0, 17])
  batch = task.batch("test", index, 8, evaluation=True)
  for row, i in enumerate(index):
    hist = split.history(i)
    want = table[hist].mean(0) if hist.size else np.zeros(4)
    np.testing.assert_allclose(batch["history"][row] @ table, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(batch["session"][row, :split.session_lengths()[i]], split.session(i))
  assert np.all(batch["history"][3:] == 0)
  np.testing.assert_array_equal(batch["negatives"][:3], split.negatives[index])
  first = next(iter(task.eval_batches("valid", 8)))
  assert first["negatives"].shape == (8, 15)
  full, _ = _task(full_ranking=True)
  assert "negatives" not in next(iter(full.eval_batches("valid", 8)))
  assert full.model_dims()["full_ranking"] and task.selection_metric == "sess_prec@10"


def test_loss_value_is_ce_per_step_and_gradient_is_per_row_sum():
  task, _ = _task()
  ce = jnp.asarray(np.random.default_rng(0).uniform(0.5, 3.0, (3, 2)), jnp.float32)   # (S, B)
  step_mask = jnp.array([[True, True], [True, False], [True, False]])
  weight = jnp.array([1.0, 1.0])

  def loss(ce):
    return task.loss({"ce": ce, "step_mask": step_mask}, {"weight": weight})

  value, aux = loss(ce)
  assert float(value) == pytest.approx(float(jnp.sum(ce * step_mask) / 4))          # 4 real steps
  assert float(aux["loss_per_row"]) == pytest.approx(float(jnp.sum(ce * step_mask) / 2))  # 2 rows
  # The gradient is that of the per-row sum: each real step's CE weighs 1 / (number of rows).
  np.testing.assert_allclose(np.asarray(jax.grad(lambda c: loss(c)[0])(ce)), np.asarray(step_mask) / 2)


def test_category_attention_lift_on_a_hand_made_export():
  # Sessions of 4 items with categories 0, 1, 0, 1 (user 1, group 1). Step 1 has a single key (always
  # weight 1) and is left out. Step 2 (b_2: category 0) puts 0.8 on b_0 (category 0, lift 1.6) and 0.2 on
  # b_1 (category 1, lift 0.4); step 3 (b_3: category 1) puts 0.5, 0.25, 0.25 on b_0, b_1, b_2 (lifts 1.5,
  # 0.75, 0.75). The second session (user 0, group 0) has length 2: nothing counts.
  attention = np.zeros((2, 4, 4), np.float32)
  attention[:, :2, 0] = 1
  attention[0, 2, :2] = [0.8, 0.2]
  attention[0, 3, :3] = [0.5, 0.25, 0.25]
  export = {"user": np.array([1, 0]), "length": np.array([4, 2]),
            "placed": np.array([[2, 3, 4, 5], [2, 3, 0, 0]]), "attention": attention}
  item_category = np.array([-1, -1, 0, 1, 0, 1])
  lift, counts = bc.category_attention(export, item_category, np.array([0, 1]), 2)
  assert counts[1].tolist() == [[1, 1], [2, 1]] and counts[0].sum() == 0
  np.testing.assert_allclose(lift[1], [[1.6, 0.4], [(1.5 + 0.75) / 2, 0.75]])
  assert bc.pair_lift(lift, counts, 0, 1)[1] == pytest.approx((0.4 + 1.5 + 0.75) / 3)


# ---- training end to end and explanations ------------------------------------------------------------

def test_training_end_to_end_learns_the_planted_group_attention(tmp_path):
  # One item per category, so that a short training learns the category structure the groups differ in.
  gen = ParsrecGeneratorConfig(num_users=256, num_sessions=30, items_per_category=1, min_session_len=5,
                               max_session_len=5, seed=5)
  data = generate(gen)
  dataset = split_sessions(data.sessions, name="groups", num_negatives=5, seed=0, num_items=gen.num_items)
  task = bc.BasketCompletionTask(dataset, num_recoms=3)  # k=10 would cover all 5 + 5 candidates
  model = models.get("parsrec")
  config = trainer.model_config_for(model, task, user_dim=32, item_dim=32, dropout=0.0)
  train = trainer.TrainConfig(epochs=8, batch_size=128, learning_rate=5e-3, clip_global_norm=30.0,
                              early_stop_patience=50, seed=0)
  results = trainer.train_and_evaluate(task, model, config, train, str(tmp_path), "groups", log=lambda *_: None)

  assert results["epochs_run"] == 8 and set(results["test"]) == {"hr@3", "ndcg@3", "sess_prec@3"}
  lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert {(r["epoch"], r["split"]) for r in lines if "checkpoint" not in r} == {
      (e, s) for e in range(1, 9) for s in ("valid", "test")}
  history = family.read_history(str(tmp_path / "metrics.jsonl"))
  assert history[-1]["train_loss"] < history[0]["train_loss"]
  assert history[-1]["valid"]["hr@3"] > history[0]["valid"]["hr@3"]
  family.plot_perf_loss(history, str(tmp_path / "perf_loss.png"), k=3)
  assert (tmp_path / "perf_loss.png").stat().st_size > 1000

  # Attention of the trained model over the training sessions, by category, per planted group: how much more
  # than uniform each group attends to basket items of a category (steps with >= 2 keys). An untrained
  # model attends about uniformly (1.00 +- 0.01 for both groups), so the margins below need learning. Single
  # (placed, key) cells are too sparse here: group B rarely buys 18 and 19 together.
  export = family.export_attention(task, str(tmp_path), results, ("train",), checkpoint="latest")["train"]
  item_category = np.arange(gen.num_items) - 2                          # SOB, EOB get -2, -1: skipped
  lift, counts = bc.category_attention(export, item_category, data.user_group.astype(np.int64), 20)
  per_key = bc.key_lift(lift, counts)
  a_18_19, b_18_19 = per_key[:, [18, 19]].mean(axis=1)
  a_14_16, b_14_16 = per_key[:, [14, 16]].mean(axis=1)
  assert a_18_19 > b_18_19 + 0.1, per_key[:, [18, 19]]      # group A: 18 <-> 19 correlated +0.99
  assert b_14_16 > a_14_16 + 0.1, per_key[:, [14, 16]]      # group B: 14 <-> 16 correlated +1.0
  family.plot_attention(lift, counts, str(tmp_path / "attention.png"))
  assert (tmp_path / "attention.png").stat().st_size > 1000


# ---- command line ---------------------------------------------------------------------------------------

def test_cli_reports_a_bad_file_in_one_line_with_exit_code_2(tmp_path):
  bad = tmp_path / "bad.txt"
  bad.write_text("user_id,time,session_length,session_items\n0,0,3,5,6,7\n0,1,3,5,6\n")
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "experiments", "run.py"), "--model=parsrec", "--dataset=parsrec_text",
       f"--data_path={bad}", f"--workdir={tmp_path / 'wd'}", f"--cache_dir={tmp_path / 'cache'}"],
      capture_output=True, text=True, cwd=REPO, timeout=120)
  assert proc.returncode == 2, proc.stderr
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error:") and "line 3" in lines[0], proc.stderr
  assert not (tmp_path / "cache").exists() or not any(
      name for name in os.listdir(tmp_path / "cache") if not name.startswith("."))


def test_cli_parsrec_dim_sets_both_embedding_sizes(tmp_path):
  from recsys_jax.sources.parsrec_text import write_parsrec_text
  data = tmp_path / "tiny.txt"
  write_parsrec_text(str(data), generate(ParsrecGeneratorConfig(
      num_users=8, num_sessions=6, num_categories=4, items_per_category=5, max_session_len=4)).sessions)
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "experiments", "run.py"), "--model=parsrec", "--dataset=parsrec_text",
       f"--data_path={data}", f"--workdir={tmp_path / 'wd'}", f"--cache_dir={tmp_path / 'cache'}",
       f"--compilation_cache={tmp_path / 'jax'}", "--parsrec_dim=24", "--epochs=1", "--batch_size=8",
       "--num_negatives=5"],
      capture_output=True, text=True, cwd=REPO, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  config = json.loads((tmp_path / "wd" / "config.json").read_text())["model_config"]
  assert (config["user_dim"], config["item_dim"]) == (24, 24)
  results = json.loads((tmp_path / "wd" / "results.json").read_text())
  d, q, z = 24, 48, 72  # embedding size, query [v; h], cell input [v; h; a]
  attention = 2 * (q * q + q) + 2 * (d * q + q) + 2 * q + q * d + d   # q/out, k/v projections, LN, W_f
  assert results["num_params"] == 8 * d + 22 * d + 2 * (z * d + d) + attention  # U, E (2 + 4 x 5 ids), cell


def test_cli_synthetic_with_fewer_categories_then_inference_at_another_k(tmp_path):
  # cwd=tmp_path: the synthetic file goes to tmp_path/data/parsrec.
  command = [sys.executable, os.path.join(REPO, "experiments", "run.py"), "--model=parsrec", "--parsrec_users=16",
             "--parsrec_sessions=4", "--parsrec_categories=12", "--parsrec_items_per_category=3",
             "--parsrec_max_session_len=6", f"--workdir={tmp_path / 'wd'}", f"--compilation_cache={tmp_path / 'jax'}",
             "--parsrec_dim=8", "--epochs=1", "--batch_size=8", "--num_negatives=5"]
  proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  # Only the planted pairs that exist: before, pairs 18-19 and 14-16 failed after training.
  lift = json.loads((tmp_path / "wd" / "attention_lift.json").read_text())
  assert list(lift["pairs (group A, group B)"]) == ["8-10"]
  assert sorted(map(int, lift["key categories (group A, group B)"])) == [8, 9, 10]  # JSON keys sorted as text
  assert (tmp_path / "wd" / "attention.png").is_file()
  results = json.loads((tmp_path / "wd" / "results.json").read_text())
  assert results["data"]["num_items"] == 2 + 12 * 3  # the generator's catalogue, used or not
  assert results["data"]["max_session_len"] <= 6
  # Another k on the trained model (its perf_loss.png keeps the training's k).
  proc = subprocess.run(command + ["--inference_only", "--num_recoms=5"], capture_output=True, text=True,
                        cwd=tmp_path, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  results = json.loads((tmp_path / "wd" / "results.json").read_text())
  assert set(results["valid"]) == set(results["test"]) == {"hr@5", "ndcg@5", "sess_prec@5"}
