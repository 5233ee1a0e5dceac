"""The generic trainer: outputs, resume after a crash, and the same losses on 1 and 4 devices."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from recsys_jax import models, tasks
from recsys_jax.errors import InputError
from recsys_jax.training import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Crash(Exception):
  pass


def _run(workdir, epochs=3, on_epoch_end=None, model="a2svd", task=None, inference_only=False, **overrides):
  task = task or tasks.tiny_task(models.get(model).task)
  m = models.get(model)
  config = trainer.TrainConfig(epochs=epochs, batch_size=32, seed=7)
  return trainer.train_and_evaluate(task, m, trainer.model_config_for(m, task, **overrides), config,
                                    str(workdir), "tiny", log=lambda *_: None, on_epoch_end=on_epoch_end,
                                    inference_only=inference_only)


def test_outputs_follow_the_schema(tmp_path):
  results = _run(tmp_path, epochs=2)
  saved = json.loads((tmp_path / "results.json").read_text())
  for key in ("model", "dataset", "valid", "test", "epochs_run", "train_seconds", "train_examples_per_second"):
    assert key in saved
  assert saved["test"] == pytest.approx(results["test"])
  assert set(saved["test"]) >= {"auc", "logloss", "group_auc", "mean_mrr", "ndcg@2", "hr@2"}
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [(l["epoch"], l["split"]) for l in lines] == [(1, "valid"), (2, "valid"), (saved["best_epoch"], "test")]
  # The train rate after compilation is the second epoch's alone: the first compiled the train step.
  assert [l["includes_compilation"] for l in lines[:2]] == [True, False]
  assert saved["steady_train_examples_per_second"] == pytest.approx(
      lines[1]["epoch_train_examples"] / lines[1]["epoch_train_seconds"])


def test_resume_after_crash_gives_the_same_results(tmp_path):
  uninterrupted = _run(tmp_path / "a")

  def crash_after_epoch_2(history):
    if len(history) == 2:
      raise Crash()

  with pytest.raises(Crash):
    _run(tmp_path / "b", on_epoch_end=crash_after_epoch_2)
  assert not (tmp_path / "b" / "results.json").exists()
  resumed = _run(tmp_path / "b")
  assert resumed["epochs_run"] == 3
  assert resumed["test"] == pytest.approx(uninterrupted["test"], abs=1e-6)
  assert resumed["valid"] == pytest.approx(uninterrupted["valid"], abs=1e-6)
  lines = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
  assert len(lines) == 4  # 3 valid epochs + the final test line, no duplicates from the crashed run
  assert [l["includes_compilation"] for l in lines[:3]] == [True, False, True]  # the resumed process compiles


def test_resume_refuses_a_different_configuration(tmp_path):
  _run(tmp_path, epochs=1)
  with pytest.raises(InputError, match="different configuration"):
    _run(tmp_path, epochs=1, model="slirec")


def test_resume_refuses_different_data(tmp_path):
  _run(tmp_path, epochs=1)
  with pytest.raises(InputError, match=r"\(data_identity.splits, "):
    _run(tmp_path, epochs=2, task=tasks.tiny_task("sequential_ctr", seed=1))


def test_resume_names_a_changed_history_window_or_training_order(tmp_path):
  import dataclasses
  from recsys_jax.tasks.basket_completion import BasketCompletionTask
  _run(tmp_path, epochs=1, model="parsrec", item_dim=8, user_dim=8)
  ds = tasks.tiny_task("basket_completion").dataset
  changed = dataclasses.replace(ds, name="renamed", stats={**ds.stats, "history_len": 3})
  with pytest.raises(InputError, match=r"\(data_identity.history_len differ\)"):
    _run(tmp_path, epochs=2, model="parsrec", task=BasketCompletionTask(changed), item_dim=8, user_dim=8)
  with pytest.raises(InputError, match=r"\(data_identity.train_order differ\)"):
    _run(tmp_path, epochs=2, model="parsrec", task=BasketCompletionTask(ds, train_order="shuffled"), item_dim=8,
         user_dim=8)


def test_inference_only_may_change_evaluation_settings_only(tmp_path):
  from recsys_jax.tasks.basket_completion import BasketCompletionTask
  trained = _run(tmp_path, epochs=1, model="parsrec", item_dim=8, user_dim=8)
  assert "sess_prec@10" in trained["valid"]
  task = BasketCompletionTask(tasks.tiny_task("basket_completion").dataset, num_recoms=5)
  again = _run(tmp_path, epochs=1, model="parsrec", task=task, inference_only=True, item_dim=8, user_dim=8,
               num_recoms=5)
  assert set(again["valid"]) == set(again["test"]) == {"hr@5", "ndcg@5", "sess_prec@5"}
  assert again["valid"]["hr@5"] <= trained["valid"]["hr@10"]
  with pytest.raises(InputError, match=r"model_config.item_dim, model_config.user_dim differ"):
    _run(tmp_path, epochs=1, model="parsrec", task=task, inference_only=True, item_dim=4, user_dim=4,
         num_recoms=5)


def test_inference_only_without_a_checkpoint_writes_nothing(tmp_path):
  with pytest.raises(InputError, match="holds no checkpoint"):
    _run(tmp_path / "empty", inference_only=True)
  assert not (tmp_path / "empty").exists()


# Losses are compared across meshes. Evaluation is compared on one shared state: the Dense biases in
# front of BatchNorm have an exactly-zero true gradient, so Adam amplifies reduction-order noise in them and
# trained states drift apart between device counts without the losses differing.
_MULTI_DEVICE = r"""
import json, sys
import jax, numpy as np
from recsys_jax import models, tasks
from recsys_jax.training import mesh as mesh_lib, steps, trainer
assert len(jax.devices()) == 4, jax.devices()
model = models.get(sys.argv[1])
task = tasks.tiny_task(model.task)
config = trainer.model_config_for(model, task, **json.loads(sys.argv[2]))
out, trained = {}, None
for n in (1, 4):
  mesh = mesh_lib.make_mesh(jax.devices()[:n])
  tx = steps.make_optimizer(1e-3)
  state = steps.init_state(model, config, tx, jax.random.PRNGKey(0), task.example_batch(32), mesh)
  step = steps.make_train_step(model, config, task, tx, mesh)
  losses = []
  for batch in task.train_batches(32, np.random.default_rng(0)):
    state, m = step(state, batch, jax.random.PRNGKey(1))
    losses.append(float(m["loss"]))
  trained = trained or jax.device_get(state)
  eval_step = steps.make_eval_step(model, config, task, mesh)
  shared = jax.device_put(trained, mesh_lib.replicated(mesh))
  out[n] = {"losses": losses, "valid": trainer.evaluate(task, eval_step, shared, "valid", 32)}
print(json.dumps(out))
"""


@pytest.mark.parametrize("model, overrides", [("slirec", {}), ("parsrec", {"item_dim": 16, "user_dim": 16})])
def test_four_devices_give_the_same_losses_as_one(model, overrides):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _MULTI_DEVICE, model, json.dumps(overrides)], capture_output=True,
                        text=True, env=env, cwd=REPO, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  np.testing.assert_allclose(out["4"]["losses"], out["1"]["losses"], rtol=2e-5)
  for key, value in out["1"]["valid"].items():
    assert out["4"]["valid"][key] == pytest.approx(value, abs=1e-5), key
