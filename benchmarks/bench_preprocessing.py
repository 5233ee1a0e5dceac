"""Times the Amazon sequential preprocessing end to end on a Movies & TV 5-core sized synthetic file.

Generates (once, then reuses) an Amazon 2014-style reviews file of 1,697,533 JSON lines (123,960 users,
50,052 items, 5-core-like skew, ~600 bytes of review text per line) and a Python-literal meta file under
`benchmarks/work/`, then times `read_amazon_reviews` + `preprocess` for sample_rate None and 0.01.

  python benchmarks/bench_preprocessing.py [--gzip] [--lines=1697533] [--work_dir=benchmarks/work]
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from recsys_jax.preprocessing.sequential import SequentialPrepConfig, preprocess  # noqa: E402
from recsys_jax.sources.amazon_reviews import read_amazon_reviews  # noqa: E402

_WORDS = ("movie film great story actor watch plot scene good bad love series season dvd time "
          "character funny drama classic ending music quality picture family kids best worst").split()
_CATEGORIES = ["Movies", "TV", "Drama", "Comedy", "Action & Adventure", "Kids' & Family", "Horror",
               "Science Fiction", "Documentary", "Musicals & Performing Arts", "Westerns", "Anime & Manga"]


def _counts(rng: np.random.Generator, n: int, total: int, sigma: float) -> np.ndarray:
  """n counts >= 5 summing to total, log-normally skewed as a 5-core filter leaves them."""
  weights = rng.lognormal(0.0, sigma, n)
  return 5 + rng.multinomial(total - 5 * n, weights / weights.sum())


def _ids(rng: np.random.Generator, n: int, prefix: str, width: int) -> list[str]:
  alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
  chars = alphabet[rng.integers(0, len(alphabet), (n, width))]
  # Unique by construction: a running number in the last 6 characters.
  return [prefix + "".join(c[:-6]) + f"{i:06d}" for i, c in enumerate(chars)]


def generate(folder: str, n_lines: int, n_users: int, n_items: int, seed: int,
             use_gzip: bool) -> tuple[str, str]:
  """Writes reviews and meta files (skipped when present) and returns their paths."""
  ext = ".json.gz" if use_gzip else ".json"
  reviews_path = os.path.join(folder, f"reviews_bench_{n_lines}{ext}")
  meta_path = os.path.join(folder, f"meta_bench_{n_lines}{ext}")
  if os.path.exists(reviews_path) and os.path.exists(meta_path):
    return reviews_path, meta_path
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  # With these sigmas a 1% sample keeps ~87k rows, 14.5k/6.6k/16.1k train/valid/test instances; the real
  # Movies & TV file gives 89,584 rows and 16,635/6,873/16,917 (reference notes, section 1.1).
  users = np.repeat(np.arange(n_users), _counts(rng, n_users, n_lines, 1.6))
  items = np.repeat(np.arange(n_items), _counts(rng, n_items, n_lines, 1.45))
  rng.shuffle(users)  # the dump is ordered by item; users interleave
  user_ids, item_ids = _ids(rng, n_users, "A", 13), _ids(rng, n_items, "B00", 7)
  days = rng.integers(10_000, 16_300, n_lines)  # 1997..2014, midnight UTC as in the real dump
  texts = [" ".join(rng.choice(_WORDS, k)) for k in rng.integers(10, 120, 2000)]
  text_of = rng.integers(0, len(texts), n_lines)
  overall = rng.integers(1, 6, n_lines)
  def opener(path: str, mode: str, encoding: str):
    # Level 1: generation stays quick; decompression speed hardly depends on the level.
    if use_gzip:
      return gzip.open(path, mode, encoding=encoding, compresslevel=1)
    return open(path, mode, encoding=encoding)

  with opener(reviews_path + ".tmp", "wt", encoding="utf-8") as f:
    for start in range(0, n_lines, 100_000):
      rows = []
      for i in range(start, min(start + 100_000, n_lines)):
        t = int(days[i]) * 86400
        rows.append(json.dumps({
            "reviewerID": user_ids[users[i]], "asin": item_ids[items[i]], "reviewerName": "Some Name",
            "helpful": [0, 0], "reviewText": texts[text_of[i]], "overall": float(overall[i]),
            "summary": texts[text_of[i]][:30], "unixReviewTime": t,
            "reviewTime": time.strftime("%m %d, %Y", time.gmtime(t))}))
      f.write("\n".join(rows) + "\n")
  os.replace(reviews_path + ".tmp", reviews_path)
  cats = rng.integers(0, len(_CATEGORIES), n_items)
  with opener(meta_path + ".tmp", "wt", encoding="utf-8") as f:
    for j in range(n_items):
      related = {"also_bought": [item_ids[k] for k in rng.integers(0, n_items, 20)]}
      f.write(repr({"asin": item_ids[j], "categories": [["Movies & TV", _CATEGORIES[cats[j]]]],
                    "title": "A Title", "price": 9.99, "related": related,
                    "salesRank": {"Movies & TV": int(j)}}) + "\n")
  os.replace(meta_path + ".tmp", meta_path)
  return reviews_path, meta_path


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--lines", type=int, default=1_697_533)
  parser.add_argument("--users", type=int, default=123_960)
  parser.add_argument("--items", type=int, default=50_052)
  parser.add_argument("--gzip", action="store_true", help="write and read .json.gz files")
  parser.add_argument("--work_dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "work"))
  args = parser.parse_args()
  t0 = time.perf_counter()
  reviews_path, meta_path = generate(args.work_dir, args.lines, args.users, args.items, 0, args.gzip)
  summary = {"generate_s": round(time.perf_counter() - t0, 2), "reviews_file": reviews_path,
             "reviews_bytes": os.path.getsize(reviews_path)}
  t0 = time.perf_counter()
  frame = read_amazon_reviews(reviews_path, meta_path)
  summary["read_s"] = round(time.perf_counter() - t0, 2)
  summary["interactions"] = len(frame)
  for rate in (None, 0.01):
    t1 = time.perf_counter()
    ds = preprocess(frame, SequentialPrepConfig(sample_rate=rate), "bench")
    key = f"sample_rate={rate}"
    summary[key] = {"preprocess_s": round(time.perf_counter() - t1, 2),
                    "end_to_end_s": round(summary["read_s"] + time.perf_counter() - t1, 2),
                    "rows": {s: len(ds.split(s)) for s in ("train", "valid", "test")},
                    "n_items": ds.stats["n_items"], "n_categories": ds.stats["n_categories"]}
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  main()
