"""PARSRec per-epoch validation curves of several recsys_jax runs (seeds) against the original's run.

  python benchmarks/compare_parsrec_curves.py --runs=/tmp/q50,/tmp/q50_s1,/tmp/q50_s2

Reads each run's `metrics.jsonl` and `results.json` and the original's per-epoch figures (`--original`,
measured on the same data, see BENCHMARKS.md); writes the per-epoch mean, min and max over the runs, and the
epochs where they fall below the original, to `--output` (JSON), and the curves to the same path with `.png`.
"""
import json
import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import cli  # noqa: E402
from experiments.basket_completion import read_history  # noqa: E402
from recsys_jax import files  # noqa: E402
from recsys_jax.errors import InputError  # noqa: E402

FLAGS = flags.FLAGS
_RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
flags.DEFINE_list("runs", None, "Workdirs of `run.py --model=parsrec` runs (one per seed).", required=True)
flags.DEFINE_string("original", os.path.join(_RESULTS, "parsrec_original_50_epochs.json"),
                    "The original's per-epoch figures.")
flags.DEFINE_string("output", os.path.join(_RESULTS, "parsrec_seeds_vs_original.json"), "Summary JSON.")
METRICS = ("hr@10", "ndcg@10", "sess_prec@10")


def run_curves(workdir: str, epochs: int) -> dict[str, np.ndarray]:
  """metric -> (epochs,) validation values of one run."""
  path = os.path.join(workdir, "metrics.jsonl")
  history = [r for r in read_history(path) if "valid" in r]
  if len(history) < epochs:
    raise InputError(f"{path}: {len(history)} evaluated epochs, expected {epochs} (as many as the original's)")
  return {m: np.array([r["valid"][m] for r in history[:epochs]]) for m in METRICS}


def compare(ours: list[dict[str, np.ndarray]], original: dict[str, np.ndarray]) -> dict:
  summary = {}
  for m in METRICS:
    values = np.stack([run[m] for run in ours])  # (runs, epochs)
    mean, low = values.mean(0), values.min(0)
    summary[m] = {
        "mean_minus_original": round(float((mean - original[m]).mean()), 3),
        "epochs_mean_below_original": [int(e) + 1 for e in np.flatnonzero(mean < original[m])],
        "largest_mean_deficit": round(float(max(0.0, (original[m] - mean).max())), 3),
        "epochs_every_run_below_original": [int(e) + 1 for e in np.flatnonzero(values.max(0) < original[m])],
        "epochs_some_run_below_original": [int(e) + 1 for e in np.flatnonzero(low < original[m])],
        "by_epoch": {str(e + 1): {"original": round(float(original[m][e]), 2), "mean": round(float(mean[e]), 2),
                                  "min": round(float(low[e]), 2), "max": round(float(values.max(0)[e]), 2)}
                     for e in range(values.shape[1])},
    }
  return summary


def plot(ours: list[dict[str, np.ndarray]], original: dict[str, np.ndarray], labels: list[str], path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(len(METRICS) + 1, 1, figsize=(7, 11), sharex=True)
  epochs = np.arange(1, len(original[METRICS[0]]) + 1)
  for ax, m in zip(axes, METRICS):
    ax.plot(epochs, original[m], "k.-", label="original (PyTorch), same data")
    for run, label in zip(ours, labels):
      ax.plot(epochs, run[m], "-", alpha=0.45, lw=1, label=f"recsys_jax {label}")
    ax.plot(epochs, np.mean([run[m] for run in ours], 0), "r-", lw=2, label="recsys_jax mean")
    ax.set_ylabel(f"valid {m} (%)")
  axes[0].legend(loc="lower right", fontsize=8)
  gap = axes[-1]  # the curves nearly coincide: their difference, where "at least as good" is decided
  for run, label in zip(ours, labels):
    gap.plot(epochs, run["hr@10"] - original["hr@10"], "-", alpha=0.45, lw=1)
  gap.plot(epochs, np.mean([run["hr@10"] for run in ours], 0) - original["hr@10"], "r-", lw=2)
  gap.axhline(0.0, color="k", lw=1)
  gap.set_ylim(-2, 3)
  gap.set_ylabel("valid hr@10: recsys_jax\n- original (points)")
  for ax in axes:
    ax.grid(alpha=0.3)
  axes[-1].set_xlabel("epoch")
  fig.tight_layout()
  with files.atomic_path(path) as tmp:
    fig.savefig(tmp, format="png", dpi=90)
  plt.close(fig)


def main(argv):
  cli.reject_positional(argv)
  with open(FLAGS.original, encoding="utf-8") as f:
    by_epoch = json.load(f)["epochs"]
  epochs = len(by_epoch)
  original = {m: np.array([by_epoch[str(e)]["valid"][m] for e in range(1, epochs + 1)]) for m in METRICS}
  ours = [run_curves(w, epochs) for w in FLAGS.runs]
  labels, best = [], {}
  for w in FLAGS.runs:
    with open(os.path.join(w, "results.json"), encoding="utf-8") as f:
      results = json.load(f)
    labels.append(f"seed {results['config']['train_config']['seed']}")
    best[labels[-1]] = {"epoch": results["best_epoch"], **{split: {m: round(results[split][m], 2) for m in METRICS}
                                                           for split in ("valid", "test")}}
  summary = {"runs": dict(zip(labels, FLAGS.runs)), "original": os.path.relpath(FLAGS.original),
             "epochs": epochs, "best_checkpoint": best, "valid": compare(ours, original)}
  files.write_json(FLAGS.output, summary)
  plot(ours, original, labels, os.path.splitext(FLAGS.output)[0] + ".png")
  for m in METRICS:
    s = summary["valid"][m]
    print(f"{m}: mean - original {s['mean_minus_original']:+.2f} points on average; mean below the original at "
          f"epochs {s['epochs_mean_below_original']} (at most {s['largest_mean_deficit']:.2f}); every run below "
          f"at {s['epochs_every_run_below_original']}")


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=cli.parse_flags)
