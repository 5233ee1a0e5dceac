"""SLi-Rec / A2SVD side by side with the TensorFlow implementation in Microsoft `recommenders`.

Both run on byte-identical data: our preprocessing writes `recommenders`' sequential files, and both
implementations read those same files back. Same hyperparameters (the quick start's: batch 400, Adam 1e-3,
4 in-batch training negatives, 10 epochs, valid 1+4, test 1+9). Measured: training positives per second
(training time only, each implementation's own data pipeline included), test-evaluation seconds, test
metrics of the best-validation-epoch checkpoint. The peer runs in its own venv (benchmarks/peer_env.sh).

  python benchmarks/bench_sequential.py --datasets=synthetic,grocery --models=slirec,a2svd
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recsys_jax.training import host  # noqa: E402

host.tune_cpu_host()  # before JAX starts its threads

from absl import app, flags  # noqa: E402

from recsys_jax import files, models  # noqa: E402
from recsys_jax.preprocessing import sequential, sequential_sources  # noqa: E402
from recsys_jax.sources import recommenders_files  # noqa: E402
from recsys_jax.tasks.sequential_ctr import SequentialCTRTask  # noqa: E402
from recsys_jax.training import trainer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared", "datasets")
DATASETS = {
    "synthetic": dict(dataset="synthetic", data_path=None, meta_path=None),
    "grocery": dict(dataset="interactions", data_path=os.path.join(SHARED, "amazon-grocery", "train.csv"),
                    meta_path=os.path.join(SHARED, "amazon-grocery", "item_meta.csv")),
    "musical_instruments": dict(dataset="amazon", meta_path=None, data_path=os.path.join(
        SHARED, "amazon-musical-instruments", "Musical_Instruments.json.gz")),
}

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", ["synthetic", "grocery"], f"Among {sorted(DATASETS)}.")
flags.DEFINE_list("models", ["slirec", "a2svd"], "Models to compare.")
flags.DEFINE_integer("epochs", 10, "Epochs for both implementations.")
flags.DEFINE_integer("seed", 42, "Seed for preprocessing and both trainings.")
flags.DEFINE_bool("peer", True, "Also run the TensorFlow peer (builds its venv on first use).")
flags.DEFINE_string("work", os.path.join(HERE, "work", "sequential"), "Scratch folder (git-ignored).")
flags.DEFINE_string("output", os.path.join(HERE, "results", "sequential.json"), "Results JSON.")


def prepare(name: str) -> str:
  """Preprocesses a dataset our way and writes it as recommenders files; returns the folder."""
  spec = DATASETS[name]
  config = sequential.SequentialPrepConfig(seed=FLAGS.seed)
  columns = {"user": "user_id", "item": "item_id", "time": "time", "meta_item": "item_id",
             "meta_category": "i_category"}
  ds = sequential_sources.load_sequential_dataset(
      spec["dataset"], data_path=spec["data_path"], meta_path=spec["meta_path"], columns=columns,
      config=config, cache_dir=os.path.join(FLAGS.work, "cache"))
  folder = os.path.join(FLAGS.work, f"{name}-files")
  if not os.path.exists(os.path.join(folder, "test_data")):
    recommenders_files.write_recommenders_files(ds, folder)
  return folder


def run_ours(folder: str, name: str, model_name: str) -> dict:
  ds = recommenders_files.read_recommenders_files(folder, max_len=50, name=name)
  task = SequentialCTRTask(ds)
  model = models.get(model_name)
  config = trainer.TrainConfig(epochs=FLAGS.epochs, batch_size=400, learning_rate=1e-3, seed=FLAGS.seed)
  workdir = os.path.join(FLAGS.work, f"ours-{name}-{model_name}")
  if os.path.exists(workdir):
    subprocess.run(["rm", "-rf", workdir], check=True)
  results = trainer.train_and_evaluate(task, model, trainer.model_config_for(model, task), config, workdir, name)
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    epoch_seconds = [r["epoch_train_seconds"] for r in map(json.loads, f) if r["split"] == "valid"]
  return {"train_positives": len(ds.train), "train_seconds": results["train_seconds"],
          "median_epoch_positives_per_second": len(ds.train) / statistics.median(epoch_seconds),
          "train_positives_per_second": results["train_examples_per_second"],
          "test_eval_seconds": results["test_eval_seconds"], "test": results["test"],
          "best_epoch": results["best_epoch"]}


def run_peer(folder: str, name: str, model_name: str) -> dict:
  python = subprocess.run(["bash", os.path.join(HERE, "peer_env.sh")], capture_output=True, text=True,
                          check=True).stdout.strip().splitlines()[-1]
  workdir = os.path.join(FLAGS.work, f"peer-{name}-{model_name}")
  subprocess.run(["rm", "-rf", workdir], check=True)
  proc = subprocess.run([python, os.path.join(HERE, "peer_recommenders.py"), "--data_dir", folder,
                         "--model", model_name, "--epochs", str(FLAGS.epochs), "--batch_size", "400",
                         "--seed", str(FLAGS.seed), "--workdir", workdir],
                        capture_output=True, text=True)
  if proc.returncode:
    raise RuntimeError(f"peer failed: {proc.stderr[-2000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  out = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
         "command": " ".join(sys.argv), "epochs": FLAGS.epochs, "runs": []}
  for name in FLAGS.datasets:
    folder = prepare(name)
    for model_name in FLAGS.models:
      row = {"dataset": name, "model": model_name, "load_before": os.getloadavg()[0]}
      row["ours"] = run_ours(folder, name, model_name)
      if FLAGS.peer:
        row["peer"] = run_peer(folder, name, model_name)
        row["speedup"] = row["ours"]["train_positives_per_second"] / row["peer"]["train_positives_per_second"]
        peer_epoch = statistics.median(row["peer"]["train_seconds_per_epoch"])
        row["peer"]["median_epoch_positives_per_second"] = row["peer"]["train_positives"] / peer_epoch
        row["speedup_median_epoch"] = (row["ours"]["median_epoch_positives_per_second"]
                                       / row["peer"]["median_epoch_positives_per_second"])
        row["test_auc_difference"] = row["ours"]["test"]["auc"] - row["peer"]["test"]["auc"]
      row["load_after"] = os.getloadavg()[0]
      out["runs"].append(row)
      files.write_json(FLAGS.output, out)
      print(json.dumps({k: row[k] for k in row if k not in ("ours", "peer")}), flush=True)
  print(f"wrote {FLAGS.output} at {time.strftime('%Y-%m-%d %H:%M')}")


if __name__ == "__main__":
  app.run(main)
