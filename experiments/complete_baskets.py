"""Next-item recommendations for partial baskets, from a trained PARSRec run.

python experiments/complete_baskets.py --workdir=workdirs/parsrec-synthetic-seed42 --input=baskets.txt \
    --output=completions.csv --k=10
`--input` is in the PARSRec text format (`user_id,time,session_length,session_items...`): each user's last
session is the basket so far, its items in the order they were placed (or `user_id,time,0` for a basket
with no item yet: its first item is recommended), and the user's earlier sessions (if any) are the
history. User and item ids are the trained run's. `--output` gets one row per recommendation: `user, time,
rank, item, probability, basket_attention`, where `basket_attention` lists `item:weight` for the basket's
items: the attention of the step that makes the recommendation (written atomically).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pandas as pd  # noqa: E402
from absl import app, flags  # noqa: E402

from experiments import cli  # noqa: E402
from recsys_jax.basket_inference import BasketCompleter  # noqa: E402
from recsys_jax.sources.parsrec_text import read_parsrec_text  # noqa: E402

FLAGS = flags.FLAGS
cli.define_recommendation_flags("Partial baskets (and histories) in the PARSRec text format.", "basket")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint of the run to use.")


def main(argv):
  cli.reject_positional(argv)
  cli.require_output_file(FLAGS.output)
  completer = BasketCompleter.from_workdir(FLAGS.workdir, FLAGS.checkpoint)
  table = read_parsrec_text(FLAGS.input, num_items=completer.num_items, min_sessions_per_user=1,
                            allow_empty_last=True)
  done = completer.complete(table, k=FLAGS.k, source=FLAGS.input)
  rows = []
  for i in range(len(done.user)):
    attention = " ".join(f"{item}:{w:.4f}" for item, w in zip(done.basket[i], done.attention[i]))
    rows += [(done.user[i], done.time[i], rank + 1, item, p, attention)
             for rank, (item, p) in enumerate(zip(done.items[i], done.probability[i]))]
  out = pd.DataFrame(rows, columns=["user", "time", "rank", "item", "probability", "basket_attention"])
  cli.write_csv(out, FLAGS.output)
  print(f"wrote {len(out)} recommendations for {len(done.user)} baskets to {FLAGS.output}")


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=cli.parse_flags)
