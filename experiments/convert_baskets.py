r"""Converts a basket table (one row per purchased item) to the PARSRec text format.

  python experiments/convert_baskets.py --input=t.csv --output=data/mine/mine.txt \
      --user_col=user --basket_col=order --item_col=item [--time_col=date --order_col=position]
  python experiments/convert_baskets.py --instacart --input=instacart_2017/ --output=data/ic/instacart.txt

`--instacart` takes joined order lines, a release `order_products__*.csv[.gz]` (with its `orders.csv` beside
it) or the release folder. Writes `<output>`, `<name>_columns_dtype.json` and the id maps
`<name>_item_ids.csv`, `<name>_user_ids.csv` atomically and prints the stats as one JSON line; bad input
prints one line on stderr and exits with code 2. Train on the result with
`python experiments/run.py --model=parsrec --dataset=parsrec_text --data_path=<output>`.
"""
import functools
import json
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import cli  # noqa: E402
from recsys_jax.errors import InputError  # noqa: E402
from recsys_jax.sources import basket_tables  # noqa: E402
from recsys_jax.sources.parsrec_text import MIN_SESSIONS_PER_USER  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "The table (CSV/TSV, optionally .gz); with --instacart also a folder.",
                    required=True)
flags.DEFINE_string("output", None, "The `<name>.txt` to write.", required=True)
flags.DEFINE_bool("instacart", False, "Read Instacart order lines instead of the *_col flags.")
flags.DEFINE_string("user_col", None, "User column.")
flags.DEFINE_string("basket_col", None, "Basket column: a basket is a (user, basket) pair.")
flags.DEFINE_string("item_col", None, "Item column.")
flags.DEFINE_string("time_col", None, "Orders baskets: numbers or date/time strings (default: file order).")
flags.DEFINE_string("order_col", None, "Orders items within a basket (default: file order).")
flags.DEFINE_string("sep", ",", "Column separator of --input.")
flags.DEFINE_enum("time_as", "rank", ["rank", "value"], "Written time: rank 0..n-1 per user, or the "
                  "--time_col value (unix seconds for dates).")
flags.DEFINE_integer("min_basket_len", 1, "Drop baskets with fewer distinct items.")
flags.DEFINE_integer("max_basket_len", 0, "Drop (or cut, see --truncate_long) longer baskets; 0: no cap.")
flags.DEFINE_bool("truncate_long", False, "Cut long baskets to their first --max_basket_len items.")
flags.DEFINE_integer("min_sessions", MIN_SESSIONS_PER_USER, "Drop users left with fewer baskets.")


def main(argv):
  cli.reject_positional(argv)
  bounds = dict(min_basket_len=FLAGS.min_basket_len, max_basket_len=FLAGS.max_basket_len or None,
                truncate_long=FLAGS.truncate_long, min_sessions=FLAGS.min_sessions)
  table_flags = ("user_col", "basket_col", "item_col", "time_col", "order_col", "sep", "time_as")
  if FLAGS.instacart:
    ignored = [f"--{n}" for n in table_flags if FLAGS[n].present]
    if ignored:
      raise InputError(f"{', '.join(ignored)} given with --instacart, which reads Instacart's own columns; "
                       "expected one or the other")
    convert = functools.partial(basket_tables.convert_instacart_orders, **bounds)
  else:
    absent = [f"--{n}" for n in table_flags[:3] if not FLAGS[n].value]
    if absent:
      raise InputError(f"{', '.join(absent)} not given; expected the table's column names (or --instacart)")
    convert = functools.partial(basket_tables.convert_basket_table, **bounds,
                                **{n: FLAGS[n].value for n in table_flags})
  try:
    stats = convert(FLAGS.input, FLAGS.output)
  except OSError as e:  # e.g. an output folder that cannot be created
    raise InputError(f"cannot write: {e.strerror or e}", FLAGS.output) from None
  print(json.dumps(stats), flush=True)


if __name__ == "__main__":
  app.run(cli.guarded(main), flags_parser=cli.parse_flags)
