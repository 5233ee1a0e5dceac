"""Top-k recommendations from a trained sequential CTR run.

python experiments/recommend.py --workdir=workdirs/slirec-synthetic-seed42 --input=histories.csv \
    --output=recs.csv --k=10
`--input` is a CSV/TSV with user, item and time columns (names by flags); each user's rows, in time order,
are that user's history. `--output` gets `user, rank, item, score` rows (written atomically).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402
from absl import app, flags  # noqa: E402

from experiments import cli  # noqa: E402
from recsys_jax.inference import SequentialRecommender  # noqa: E402
from recsys_jax.sources.interactions_table import read_interactions_table  # noqa: E402

FLAGS = flags.FLAGS
cli.define_recommendation_flags("Histories table (CSV or TSV).", "user")
flags.DEFINE_string("user_col", "user_id", "User column of --input.")
flags.DEFINE_string("item_col", "item_id", "Item column of --input.")
flags.DEFINE_string("time_col", "time", "Timestamp column of --input.")
flags.DEFINE_bool("exclude_seen", True, "Do not recommend items already in the history.")


def main(argv):
  cli.reject_positional(argv)
  cli.require_output_file(FLAGS.output)
  rec = SequentialRecommender.from_workdir(FLAGS.workdir)
  table = read_interactions_table(FLAGS.input, user=FLAGS.user_col, item=FLAGS.item_col, time=FLAGS.time_col)
  table = table.sort_values(["user", "time"], kind="stable")
  users, histories = [], []
  for user, rows in table.groupby("user", sort=False):
    users.append(user)
    histories.append(list(zip(rows["item"], rows["time"])))
  recs = rec.recommend(histories, k=FLAGS.k, exclude_seen=FLAGS.exclude_seen)
  out = pd.DataFrame([(u, r + 1, item, score) for u, items in zip(users, recs)
                      for r, (item, score) in enumerate(items)], columns=["user", "rank", "item", "score"])
  cli.write_csv(out, FLAGS.output)
  print(f"wrote {len(out)} recommendations for {len(users)} users to {FLAGS.output}")
  known = table["item"].isin(rec.item_vocab).groupby(table["user"], sort=False).any()
  if not known.all():
    print(f"note: {int((~known).sum())} of {len(users)} histories (user {known.index[~known.to_numpy()][0]!r} "
          "first) hold no item the model knows; their recommendations do not depend on their items")


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=cli.parse_flags)
