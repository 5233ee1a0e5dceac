"""Shared command-line plumbing: one-line errors with exit code 2, flag parsing, the results table."""
import os
import sys

from absl import flags, logging

from recsys_jax import files
from recsys_jax.errors import InputError

EXIT_BAD_INPUT = 2


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, but an unknown or malformed flag is one line on stderr and exit code 2.

  Library INFO logs (orbax writes several lines per checkpoint) are hidden unless --verbosity is given.
  """
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    sys.stderr.write(f"error: {e}\n")
    sys.exit(EXIT_BAD_INPUT)
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  return rest


def enable_compilation_cache(cache_dir: str | None, min_compile_seconds: float = 1.0,
                             max_bytes: int = 2**30) -> None:
  """JAX's persistent compilation cache: a rerun with the same shapes loads its XLA programs from disk
  instead of compiling them again (seconds per train-step variant on CPU). Empty or None: off.

  JAX evicts the least recently used programs once the folder exceeds `max_bytes` (every model size,
  batch size or code change adds programs); <= 0 keeps everything.
  """
  if not cache_dir:
    return
  import jax
  os.makedirs(cache_dir, exist_ok=True)
  if max_bytes > 0:
    _stamp_unstamped_entries(cache_dir)
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
  jax.config.update("jax_compilation_cache_max_size", max_bytes if max_bytes > 0 else -1)


def _stamp_unstamped_entries(cache_dir: str) -> None:
  """JAX's size-capped cache keeps each program's last use in a `<key>-atime` file beside `<key>-cache`, and its
  eviction fails on programs written while no cap was set, which have none: give those their write time."""
  for name in os.listdir(cache_dir):
    if not name.endswith("-cache"):
      continue
    stamp = os.path.join(cache_dir, name[:-len("-cache")] + "-atime")
    if not os.path.exists(stamp):
      written_ns = os.stat(os.path.join(cache_dir, name)).st_mtime_ns
      with open(stamp, "wb") as f:
        f.write(written_ns.to_bytes(8, "little"))


def reject_positional(argv: list[str]) -> None:
  if len(argv) > 1:
    raise InputError(f"unexpected arguments {argv[1:]}; every option is a --flag (see --help)")


def require_folder(path: str | None, flag: str) -> None:
  """A folder flag may name a missing folder (it is created) but not a file."""
  if path and os.path.exists(path) and not os.path.isdir(path):
    raise InputError(f"{flag} names a file; expected a folder (it is created if missing)", path)


def define_recommendation_flags(input_help: str, unit: str) -> None:
  """The flags of the commands that recommend from a trained run's workdir."""
  flags.DEFINE_string("workdir", None, "Workdir of a finished run of experiments/run.py.", required=True)
  flags.DEFINE_string("input", None, input_help, required=True)
  flags.DEFINE_string("output", None, "Where to write the recommendations CSV.", required=True)
  flags.DEFINE_integer("k", 10, f"Recommendations per {unit}.", lower_bound=1)


def require_output_file(path: str) -> None:
  """Checked before any work: an output path must not be a folder."""
  if os.path.isdir(path):
    raise InputError("is a folder; expected the path of the CSV file to write (--output)", path)


def write_csv(frame, path: str) -> None:
  """Writes a pandas frame atomically: a killed run leaves no half-written file."""
  with files.atomic_path(path) as tmp:
    frame.to_csv(tmp, index=False, float_format="%.6g")


def guarded(main):
  """Turns `InputError` (bad files, columns, values) into one line on stderr and exit code 2."""

  def wrapped(argv):
    try:
      return main(argv)
    except InputError as e:
      sys.stderr.write(f"error: {e}\n")
      sys.exit(EXIT_BAD_INPUT)

  return wrapped


def _train_rate(results: dict) -> str:
  steady = results.get("steady_train_examples_per_second")
  if steady is None:
    return f"{results['train_examples_per_second']:,.0f} train examples/s (compilation included)"
  return f"{steady:,.0f} train examples/s after compilation"


def results_table(results: dict) -> str:
  """A plain-text table of the best epoch's valid metrics and the test metrics."""
  names = list(results["test"])
  width = max(len(n) for n in names + ["metric"])
  lines = [f"{results['model']} on {results['dataset']}: best epoch {results['best_epoch']} of "
           f"{results['epochs_run']}, {_train_rate(results)}",
           f"{'metric':<{width}}  {'valid':>8}  {'test':>8}"]
  for name in names:
    valid = results["valid"].get(name)
    valid_text = f"{valid:8.4f}" if valid is not None else f"{'':>8}"
    lines.append(f"{name:<{width}}  {valid_text}  {results['test'][name]:8.4f}")
  return "\n".join(lines)
