"""The one command line: `python experiments/run.py --model=slirec [--dataset=... --data_path=...]`.

Trains, selects the best epoch on valid, evaluates it on test and prints a results table. Every run writes
`metrics.jsonl`, `results.json`, `config.json` and orbax checkpoints under `--workdir`; rerunning with the same
workdir resumes from the last finished epoch. `--flagfile=FILE` reads flags from a file; `--helpfull` lists
every flag of every model family.
"""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recsys_jax.training import host  # noqa: E402

host.tune_cpu_host()  # before JAX starts its threads

from absl import app, flags  # noqa: E402

from experiments import cli, families  # noqa: E402
from recsys_jax import models  # noqa: E402
from recsys_jax.training import trainer  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", "slirec", models.names(), "Model to train (registered by name).")
flags.DEFINE_string("dataset", "synthetic",
                    "Dataset kind; `synthetic` is each model family's embedded generator. Valid kinds per family: "
                    + "; ".join(f"{name}: {', '.join(fam.DATASETS)}" for name, fam in families.FAMILIES.items()))
flags.DEFINE_string("data_path", None, "Input file or folder for file-based datasets.")
flags.DEFINE_string("workdir", None, "Run folder (checkpoints, metrics.jsonl, results.json). "
                    "Default: workdirs/<model>-<dataset>-seed<seed>.")
flags.DEFINE_bool("overwrite", False, "Delete --workdir before starting instead of resuming from it.")
flags.DEFINE_string("cache_dir", "data/cache", "Where preprocessed datasets are cached (keyed by their config).")
flags.DEFINE_integer("seed", 42, "One seed for data sampling, negatives, initialisation, dropout and shuffling.")
flags.DEFINE_integer("epochs", None, "Training epochs (default: the model family's).", lower_bound=1)
flags.DEFINE_integer("batch_size", None, "Training batch size (default: the model family's).", lower_bound=1)
flags.DEFINE_float("learning_rate", None, "Adam learning rate (default: the model family's).")
flags.register_validator("learning_rate", lambda v: v is None or v > 0, "--learning_rate must be > 0")
flags.DEFINE_integer("early_stop", None, "Stop after this many epochs without a better validation metric.",
                     lower_bound=1)
flags.DEFINE_string("compilation_cache", os.path.join("data", "cache", "jax"),
                    "Folder of JAX's persistent compilation cache (reruns skip XLA compilation); '' turns it off.")
flags.DEFINE_integer("compilation_cache_max_mb", 1024, "Size cap of --compilation_cache: the least recently used "
                     "programs are evicted beyond it; 0 keeps everything.", lower_bound=0)
flags.DEFINE_bool("inference_only", False, "Evaluate the best checkpoint in --workdir without training.")
for _family in families.FAMILIES.values():  # so that --help lists every family's flags too
  flags.adopt_module_key_flags(_family)


def main(argv):
  cli.reject_positional(argv)
  for name in ("workdir", "cache_dir", "compilation_cache"):
    cli.require_folder(FLAGS[name].value, f"--{name}")
  cli.enable_compilation_cache(FLAGS.compilation_cache, max_bytes=FLAGS.compilation_cache_max_mb * 2**20)
  model = models.get(FLAGS.model)
  family = families.FAMILIES[model.task]
  task, dataset_name, overrides = family.build_task(model, FLAGS)
  model_config = trainer.model_config_for(model, task, **overrides)
  defaults = family.TRAIN_DEFAULTS
  config = trainer.TrainConfig(
      epochs=FLAGS.epochs if FLAGS.epochs is not None else defaults["epochs"],
      batch_size=FLAGS.batch_size or defaults["batch_size"],
      learning_rate=FLAGS.learning_rate or defaults["learning_rate"],
      clip_global_norm=defaults.get("clip_global_norm", 0.0),
      early_stop_patience=FLAGS.early_stop if FLAGS.early_stop is not None else defaults["early_stop"],
      seed=FLAGS.seed)
  workdir = FLAGS.workdir or os.path.join("workdirs", f"{model.name}-{dataset_name}-seed{FLAGS.seed}")
  if FLAGS.overwrite and os.path.exists(workdir):
    shutil.rmtree(workdir)
  family.before_training(task, workdir, FLAGS)
  results = trainer.train_and_evaluate(
      task, model, model_config, config, workdir, dataset_name,
      on_epoch_end=family.epoch_callback(task, workdir, FLAGS), inference_only=FLAGS.inference_only)
  family.after_training(task, workdir, results, FLAGS)
  print(cli.results_table(results))
  print(f"results: {os.path.join(workdir, 'results.json')}")


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=cli.parse_flags)
