"""PARSRec training speed beside the original PyTorch code, in the same hour: their runs alternate.

  python benchmarks/parsrec_vs_original.py --original_dir=PARSRec --original_python=PARSRec/.venv/bin/python

The original repository (github.com/ehgh/PARSRec-Explainable-Personalized-Attention-fused-Recurrent-Sequential-
Recommendation) is not part of recsys_jax: check it out and give it a Python with its `requirements.txt`
(torch 1.10.2 has wheels up to Python 3.9). As shipped it does not build its model on torch 1.10.2: cast the
embedding sizes to `int` in `model.py` first (BENCHMARKS.md, PARSRec section).

This machine's speed drifts by tens of percent within an hour, so a ratio of two runs is only meaningful
when they ran next to each other. The series is: ours, then `--rounds` times (the original for
`--original_epochs` epochs with `PARSRec.sh`'s arguments, then ours). Ours is `bench_parsrec.py
--skip_instacart` (median of 3 epochs after a warm-up); both train on our default synthetic data file,
which is copied into a scratch data folder for the original. The JSON summary (`--output`) has every run's
epoch times, the medians over all epochs of each code, and each original run against the runs of ours just
before and after it.
"""
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import basket_completion as family  # noqa: E402
from experiments import cli  # noqa: E402
from recsys_jax import files  # noqa: E402
from recsys_jax.errors import InputError  # noqa: E402
from recsys_jax.sources.parsrec_text import dtype_json_path  # noqa: E402
from recsys_jax.synthetic.parsrec import ParsrecGeneratorConfig  # noqa: E402

FLAGS = flags.FLAGS
_HERE = os.path.dirname(os.path.abspath(__file__))
flags.DEFINE_string("original_dir", None, "Checkout of the original PARSRec repository.", required=True)
flags.DEFINE_string("original_python", sys.executable, "Python of the original's environment.")
flags.DEFINE_string("original_script", "PARSRec.py", "The original's training script, in --original_dir.")
flags.DEFINE_integer("rounds", 2, "Original runs; each is followed by one of ours.", lower_bound=1)
flags.DEFINE_integer("original_epochs", 2, "Training epochs per original run.", lower_bound=1)
flags.DEFINE_string("output", os.path.join(_HERE, "results", "parsrec_vs_original.json"), "Summary JSON.")

# PARSRec.sh's arguments, less the data and output folders and the epoch count.
ORIGINAL_ARGS = ["--dataset", "synthetic", "--loss-function", "cce", "--train-batch-size=256", "--cpu-count", "10",
                 "--clip-grad-threshold", "30", "--save-freq", "10", "--plot-freq", "5", "--emb-dims", "128-128",
                 "--feature-sizes", "1024-2002", "--num-recoms=10", "--dropout-rate", "0.1", "--save-best-model",
                 "--num-attn-blocks", "1", "--num-att-heads", "2", "--sample-size-inference", "99", "--sampling",
                 "--convert-dataset2binary"]
_EPOCH_LINE = re.compile(r"training epoch (\d+) in ([0-9.]+) s")


def original_epoch_seconds(log: str) -> list[float]:
  """The original's per-epoch training seconds, from its printed 'training epoch K in S s' lines."""
  return [float(m.group(2)) for m in _EPOCH_LINE.finditer(log)]


def summarize(runs: list[dict]) -> dict:
  """Medians of each code's epochs, and each original run (mean of its epochs) over its neighbours of ours."""
  ours = [t for r in runs if r["code"] == "recsys_jax" for t in r["epoch_seconds"]]
  original = [t for r in runs if r["code"] == "original" for t in r["epoch_seconds"]]
  if not ours or not original:
    raise ValueError("the series needs runs of both codes")
  neighbours = []
  for i, r in enumerate(runs):
    if r["code"] != "original":
      continue
    mean = statistics.mean(r["epoch_seconds"])
    for j in (i - 1, i + 1):
      if 0 <= j < len(runs) and runs[j]["code"] == "recsys_jax":
        neighbours.append({"original_run": i, "recsys_jax_run": j,
                           "speedup": round(mean / statistics.median(runs[j]["epoch_seconds"]), 2)})
  median_ours, median_original = statistics.median(ours), statistics.median(original)
  return {"median_epoch_seconds": {"recsys_jax": median_ours, "original": median_original},
          "speedup_of_medians": round(median_original / median_ours, 2),
          "speedup_against_neighbours": neighbours}


def _run(command: list[str], cwd: str, log_path: str) -> str:
  with open(log_path, "w", encoding="utf-8") as log:
    proc = subprocess.run(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True)
  with open(log_path, encoding="utf-8", errors="replace") as f:
    text = f.read()
  if proc.returncode != 0:  # the scratch folder with the log goes away with the error: quote its end
    last = (text.strip().splitlines() or ["(no output)"])[-1][-300:]
    raise InputError(f"exited with {proc.returncode}; its last output line: {last}", command[1])
  return text


def _ours(scratch: str, k: int) -> dict:
  out = os.path.join(scratch, f"ours_{k}.json")
  _run([sys.executable, os.path.join(_HERE, "bench_parsrec.py"), "--skip_instacart", f"--output={out}"],
       os.path.dirname(_HERE), os.path.join(scratch, f"ours_{k}.log"))
  with open(out, encoding="utf-8") as f:
    result = json.load(f)
  return {"code": "recsys_jax", "epoch_seconds": result["synthetic"]["epoch_times"],
          "matmul_peak_gflops": round(result["peak"]["median_gflops"])}


def _original(scratch: str, data_dir: str, k: int) -> dict:
  script = os.path.join(FLAGS.original_dir, FLAGS.original_script)
  out_dir = os.path.join(scratch, f"original_{k}")
  os.makedirs(out_dir)
  log = _run([FLAGS.original_python, script, "--data-directory", data_dir, "--output-directory", out_dir,
              "--nepochs", str(FLAGS.original_epochs)] + ORIGINAL_ARGS,
             FLAGS.original_dir, os.path.join(scratch, f"original_{k}.log"))
  seconds = original_epoch_seconds(log)
  if len(seconds) != FLAGS.original_epochs:
    raise InputError(f"printed {len(seconds)} 'training epoch K in S s' lines, expected {FLAGS.original_epochs}",
                     script)
  return {"code": "original", "epoch_seconds": seconds}


def main(argv):
  cli.reject_positional(argv)
  if not os.path.isdir(FLAGS.original_dir):
    raise InputError("is not a folder; expected a checkout of the original PARSRec repository", FLAGS.original_dir)
  # Checked before the first run of ours, which takes minutes.
  files.require_file(os.path.join(FLAGS.original_dir, FLAGS.original_script),
                     "the original's training script (--original_dir, --original_script)")
  if shutil.which(FLAGS.original_python) is None:
    raise InputError("is not an executable Python; expected the original's environment (--original_python)",
                     FLAGS.original_python)
  with tempfile.TemporaryDirectory(prefix="parsrec_vs_original_") as scratch:
    data_dir = os.path.join(scratch, "data")
    os.makedirs(data_dir)
    text = family.ensure_synthetic(ParsrecGeneratorConfig())
    shutil.copy(text, os.path.join(data_dir, "synthetic.txt"))
    shutil.copy(dtype_json_path(text), os.path.join(data_dir, "synthetic_columns_dtype.json"))
    runs = []

    def record(run: dict) -> None:
      run["utc_end"] = time.strftime("%H:%M:%S", time.gmtime())
      runs.append(run)
      print(json.dumps(run), flush=True)

    record(_ours(scratch, 0))
    for k in range(FLAGS.rounds):
      record(_original(scratch, data_dir, k))
      record(_ours(scratch, k + 1))
  summary = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "original_dir": os.path.abspath(FLAGS.original_dir),
             "original_command": [FLAGS.original_script, "--nepochs", str(FLAGS.original_epochs)] + ORIGINAL_ARGS,
             "runs": runs, **summarize(runs)}
  files.write_json(FLAGS.output, summary)
  print(json.dumps({k: summary[k] for k in ("median_epoch_seconds", "speedup_of_medians")}))


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=cli.parse_flags)
