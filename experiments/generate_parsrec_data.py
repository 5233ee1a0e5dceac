"""Generates PARSRec's synthetic basket dataset and writes it in the PARSRec text format.

  python experiments/generate_parsrec_data.py --output data/parsrec/synthetic.txt

Writes the text file and `<name>_columns_dtype.json` atomically and prints a one-line summary. Bad input
(an invalid parameter) prints one line on stderr and exits with code 2.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dataclasses  # noqa: E402
import time  # noqa: E402

from absl import app, flags  # noqa: E402

from recsys_jax.errors import InputError  # noqa: E402
from recsys_jax.sources.parsrec_text import write_parsrec_text  # noqa: E402
from recsys_jax.synthetic.parsrec import ParsrecGeneratorConfig, generate  # noqa: E402

_DEFAULTS = ParsrecGeneratorConfig()
FLAGS = flags.FLAGS
flags.DEFINE_integer("num_users", _DEFAULTS.num_users, "Number of users (consumers).")
flags.DEFINE_integer("num_sessions", _DEFAULTS.num_sessions, "Sessions (time steps) per user.")
flags.DEFINE_integer("num_categories", _DEFAULTS.num_categories, "Number of categories (at most 20).")
flags.DEFINE_integer("items_per_category", _DEFAULTS.items_per_category, "Products per category.")
flags.DEFINE_float("gamma0", _DEFAULTS.gamma0, "Base utility of category purchase incidence.")
flags.DEFINE_float("sigma0", _DEFAULTS.sigma0, "Std of the utility noise.")
flags.DEFINE_float("tau0", _DEFAULTS.tau0, "Scale of the per-category preference covariance.")
flags.DEFINE_float("beta", _DEFAULTS.beta, "Price sensitivity.")
flags.DEFINE_integer("min_session_len", _DEFAULTS.min_session_len, "Lower clip on the session size.")
flags.DEFINE_integer("max_session_len", _DEFAULTS.max_session_len, "Upper clip on the session size.")
flags.DEFINE_float("weibull_c", _DEFAULTS.weibull_c, "Shape of the Weibull session-size law (before clipping).")
flags.DEFINE_float("weibull_loc", _DEFAULTS.weibull_loc, "Location of the Weibull session-size law.")
flags.DEFINE_float("weibull_scale", _DEFAULTS.weibull_scale, "Scale of the Weibull session-size law.")
flags.DEFINE_float("price_mean", _DEFAULTS.price_mean, "Mean of the log of a category's base price (lognormal).")
flags.DEFINE_float("price_sigma", _DEFAULTS.price_sigma, "Std of the log of a category's base price.")
flags.DEFINE_float("vine_a", _DEFAULTS.vine_a, "a of the Beta(a, b) law of the vine's partial correlations.")
flags.DEFINE_float("vine_b", _DEFAULTS.vine_b, "b of the Beta(a, b) law of the vine's partial correlations.")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of the numpy Generator behind every draw.")
flags.DEFINE_string("output", "data/parsrec/synthetic.txt", "The text file to write.")


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, but a bad flag is one line on stderr and exit code 2 (absl's own default is 1)."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    print(f"error: unexpected arguments {' '.join(argv[1:])}", file=sys.stderr)
    sys.exit(2)
  # Every generator parameter has the flag of its name.
  config = ParsrecGeneratorConfig(**{f.name: FLAGS[f.name].value for f in dataclasses.fields(ParsrecGeneratorConfig)})
  try:
    start = time.perf_counter()
    data = generate(config)
    generated = time.perf_counter() - start
    write_parsrec_text(FLAGS.output, data.sessions)
  except InputError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except OSError as e:  # e.g. an output folder that cannot be created
    print(f"error: cannot write {FLAGS.output}: {e.strerror or e}", file=sys.stderr)
    sys.exit(2)
  lengths = data.sessions.lengths()
  print(f"wrote {FLAGS.output}: {config.num_users} users, {len(data.sessions)} sessions, "
        f"{int(lengths.sum())} items (mean length {lengths.mean():.3f}), ids 2..{config.num_items - 1}, "
        f"seed {config.seed}; generated in {generated:.2f} s, total {time.perf_counter() - start:.2f} s",
        flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
