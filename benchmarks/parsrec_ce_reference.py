"""Train cross-entropy per step that a user's own purchase frequencies reach under PARSRec's target rule.

  python benchmarks/parsrec_ce_reference.py [--sessions=5000]

A reference point for PARSRec's reported train loss (mean CE per step over all 2,002 ids). For sampled training
sessions of the default synthetic data, the "model" is the user's item counts over their other training
sessions (this session left out), plus 0.05 per item, normalised over ids >= 2; a second figure also gives
the categories already in the basket zero mass (a session holds one item per category). Each step applies the
original's rule through the model's own `place_next`: the top-1 id is the target if it is still in the
basket, else the first remaining item. Prints the mean CE per step; compare it with the train loss in
metrics.jsonl and with the original's plot.
"""
import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import basket_completion as family  # noqa: E402
from recsys_jax.models.parsrec import place_next  # noqa: E402
from recsys_jax.preprocessing.baskets import load_basket_dataset  # noqa: E402
from recsys_jax.synthetic.parsrec import ParsrecGeneratorConfig  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("sessions", 5000, "Training sessions sampled.")
flags.DEFINE_integer("sample_seed", 0, "Seed of the session sample.")
flags.DEFINE_float("smoothing", 0.05, "Pseudo-count added to every item.")


def rule_cross_entropy(probs: np.ndarray, sessions: np.ndarray, lengths: np.ndarray,
                       item_category: np.ndarray | None) -> float:
  """Mean CE per real step. probs (N, I) rows sum to 1; sessions (N, W) in file order, 0-padded."""
  n, width = sessions.shape
  rows = np.arange(n)
  remaining = np.arange(width)[None, :] < lengths[:, None]
  probs = probs.copy()
  total, steps = 0.0, 0
  for _ in range(width):  # at most 10 steps, vectorised over the sessions
    target, live, remaining = (np.asarray(x) for x in place_next(
        sessions, remaining, probs.argmax(axis=1).astype(sessions.dtype), np.ones(n, bool)))
    total += -np.log(probs[rows[live], target[live]]).sum()
    steps += int(live.sum())
    if item_category is not None:  # no second item of a placed category
      same = item_category[None, :] == item_category[target][:, None]
      probs[live] = np.where(same[live], 0.0, probs[live])
      probs[live] /= probs[live].sum(axis=1, keepdims=True)
  return total / steps


def main(argv):
  del argv
  config = ParsrecGeneratorConfig()
  data = load_basket_dataset(family.ensure_synthetic(config), cache_dir="data/cache").train
  counts = np.zeros((int(data.user.max()) + 1, config.num_items))
  lengths = data.session_lengths()
  np.add.at(counts, (np.repeat(data.user, lengths), data.session_items), 1.0)
  pick = np.random.default_rng(FLAGS.sample_seed).choice(len(data), FLAGS.sessions, replace=False)
  sessions = data.session_matrix(pick)
  own = np.zeros((pick.shape[0], config.num_items))
  np.add.at(own, (np.repeat(np.arange(pick.shape[0]), lengths[pick]), sessions[sessions > 0]), 1.0)
  probs = counts[data.user[pick]] - own + FLAGS.smoothing
  probs[:, :2] = 1e-12  # SOB and EOB
  probs /= probs.sum(axis=1, keepdims=True)
  category = np.concatenate([[-1, -2], np.repeat(np.arange(config.num_categories), config.items_per_category)])
  plain = rule_cross_entropy(probs, sessions, lengths[pick], None)
  excluded = rule_cross_entropy(probs, sessions, lengths[pick], category)
  print(f"{FLAGS.sessions} training sessions: mean CE per step {plain:.3f} (own purchase frequencies), "
        f"{excluded:.3f} (placed categories excluded)")


if __name__ == "__main__":
  app.run(main)
