"""Synthetic sequential interactions: the embedded default dataset of the sequential CTR models.

No files, no network: `generate()` returns a (user, item, time, cate) log like the Amazon reviews data that
SLi-Rec and A2SVD are usually trained on, with structure planted so that the models separate. See
`GENERATIVE_PROCESS` for the exact process.
"""
import numpy as np
import pandas as pd

from recsys_jax.errors import InputError

COLUMNS = ("user", "item", "time", "cate")
START_TIME = 1420070400   # 2015-01-01 00:00:00 UTC
HOUR = 3600
DAY = 86400
# Observed gaps below this are "short" in `describe`: a short gap (mean 1 h) exceeds it with
# probability e^-12, a long gap (mean 30 d) falls below it with probability ~1.7%.
SHORT_GAP_THRESHOLD = 12 * HOUR

GENERATIVE_PROCESS = """\
Synthetic sequential interaction log (recsys_jax.synthetic.sequential.generate).

Defaults in brackets. C categories [20] with n items each [40]; U users [2000].

Structure shared by all users (drawn from the seed):
  * Item popularity: within every category, item j (j = 0..n-1, item id "iCC_JJJ") has
    weight w_j proportional to 1 / (j + 1)^a [a = zipf_exponent = 1.0], so index 0 is the most popular.
  * Successor: every item has one fixed successor in its own category, given by a random cyclic
    permutation of the category's n items (drawn independently per category; no item is its own
    successor, and successors are unrelated to popularity).

Per user u (all users are generated at once, vectorised; the loop runs over positions only):
  * Long-term preference theta_u ~ Dirichlet(alpha * 1_C) [alpha = dirichlet_alpha = 0.3]: a few
    favourite categories.
  * Sequence length L_u ~ Uniform{min_length..max_length} [8..30].
  * First interaction at t_1 = 2015-01-01 00:00:00 UTC + Uniform[0, start_spread_days) days [365];
    its category is drawn from theta_u and its item from the category's popularity weights w.
  * For positions k = 2..L_u, with g = the gap type of step k:
      - Gap type: "short" (same sitting) with probability p_short [0.6], else "long".
        Gap in seconds = ceil(Exponential(mean)), mean = short_gap_mean [3600 s = 1 hour] or
        long_gap_mean [2592000 s = 30 days]; every gap is >= 1 s, so times strictly increase.
      - Category: after a short gap, keep the previous category with probability p_stay [0.85], else
        draw from theta_u; after a long gap, draw from theta_u.
      - Item: if the gap is short and the category equals the previous one (kept or redrawn), take the
        previous item's successor with probability p_successor [0.7]; otherwise draw from the
        category's popularity weights w.
  * Rows are grouped by user (u0001, u0002, ...) in time order; time is int64 unix seconds.

What each model can use:
  (1) persistent category preferences theta_u: A2SVD and SLi-Rec (the history's category mix);
  (2) short-term dependence (next item = successor of the last item, same category) that exists only
      after a short gap: a model must see both the last items and the time since the last action,
      which is what SLi-Rec's time-aware LSTM adds over A2SVD;
  (3) Zipf item popularity: every model, including a popularity baseline; negatives drawn in
      proportion to popularity cancel most of it, so popularity alone ranks poorly.
Default size: 2000 users x 19 mean length = about 38k interactions (about 32k training instances when
the last two interactions of each user are held out for valid and test).
"""


def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
  """Independent streams for the shared structure and for the users, so `successors` needs only the seed."""
  structure, users = np.random.SeedSequence(seed).spawn(2)
  return np.random.default_rng(structure), np.random.default_rng(users)


def successors(num_categories: int = 20, items_per_category: int = 40, seed: int = 42) -> np.ndarray:
  """Returns the (C, n) successor table of `generate` with the same arguments: item j -> successor index."""
  rng, _ = _rngs(seed)
  order = rng.permuted(np.tile(np.arange(items_per_category), (num_categories, 1)), axis=1)
  table = np.empty_like(order)
  rows = np.arange(num_categories)[:, None]
  # Each item points at the next one in its category's random order: one cycle, no fixed points.
  table[rows, order] = np.roll(order, -1, axis=1)
  return table


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
  """Draws one index per row of `probs` (rows sum to 1), vectorised by inverse CDF."""
  cdf = np.cumsum(probs, axis=1)
  u = rng.random(probs.shape[0]) * cdf[:, -1]
  return np.minimum((cdf <= u[:, None]).sum(axis=1), probs.shape[1] - 1)


def _check(num_users: int, num_categories: int, items_per_category: int, min_length: int,
           max_length: int, probabilities: dict[str, float], positives: dict[str, float]) -> None:
  if num_users < 1 or num_categories < 1 or items_per_category < 2:
    raise InputError(f"need num_users >= 1, num_categories >= 1 and items_per_category >= 2, got "
                     f"{num_users}, {num_categories}, {items_per_category}")
  if not 1 <= min_length <= max_length:
    raise InputError(f"need 1 <= min_length <= max_length, got {min_length}, {max_length}")
  for name, value in probabilities.items():
    if not 0.0 <= value <= 1.0:
      raise InputError(f"{name} must be a probability in [0, 1], got {value}")
  for name, value in positives.items():
    if not value > 0:
      raise InputError(f"{name} must be positive, got {value}")


def generate(num_users: int = 2000,
             num_categories: int = 20,
             items_per_category: int = 40,
             min_length: int = 8,
             max_length: int = 30,
             seed: int = 42,
             zipf_exponent: float = 1.0,
             dirichlet_alpha: float = 0.3,
             p_short: float = 0.6,
             short_gap_mean: float = float(HOUR),
             long_gap_mean: float = 30.0 * DAY,
             p_stay: float = 0.85,
             p_successor: float = 0.7,
             start_spread_days: float = 365.0) -> pd.DataFrame:
  """Generates a sequential interaction log; the process is documented in `GENERATIVE_PROCESS`.

  Args:
    num_users: number of users.
    num_categories: number of categories C.
    items_per_category: items n in every category.
    min_length: shortest user sequence.
    max_length: longest user sequence.
    seed: the only source of randomness; the same arguments give the same frame.
    zipf_exponent: popularity exponent a of w_j ~ 1 / (j + 1)^a within a category.
    dirichlet_alpha: concentration of the per-user category preference (smaller = fewer favourites).
    p_short: probability that a gap is short (same sitting).
    short_gap_mean: mean short gap in seconds.
    long_gap_mean: mean long gap in seconds.
    p_stay: probability of keeping the previous category after a short gap.
    p_successor: probability of taking the previous item's successor after a short same-category gap.
    start_spread_days: first interactions are spread uniformly over this many days from 2015-01-01.

  Returns:
    DataFrame with columns user (str), item (str), time (int64 unix seconds), cate (str), grouped by
    user in time order.
  """
  _check(num_users, num_categories, items_per_category, min_length, max_length,
         dict(p_short=p_short, p_stay=p_stay, p_successor=p_successor),
         dict(short_gap_mean=short_gap_mean, long_gap_mean=long_gap_mean, dirichlet_alpha=dirichlet_alpha,
              start_spread_days=start_spread_days))
  n, steps = items_per_category, max_length
  succ = successors(num_categories, n, seed)
  _, rng = _rngs(seed)
  weights = 1.0 / np.arange(1, n + 1) ** zipf_exponent
  weights /= weights.sum()

  theta = rng.dirichlet(np.full(num_categories, dirichlet_alpha), size=num_users)
  lengths = rng.integers(min_length, max_length + 1, size=num_users)
  cate = np.empty((num_users, steps), np.int64)
  item = np.empty((num_users, steps), np.int64)
  time = np.empty((num_users, steps), np.int64)
  time[:, 0] = START_TIME + np.floor(rng.random(num_users) * start_spread_days * DAY).astype(np.int64)
  cate[:, 0] = _categorical(rng, theta)
  item[:, 0] = rng.choice(n, size=num_users, p=weights)
  for k in range(1, steps):
    short = rng.random(num_users) < p_short
    mean = np.where(short, short_gap_mean, long_gap_mean)
    # ceil keeps every gap >= 1 s, so a user's times strictly increase and the order is unambiguous.
    gap = np.maximum(np.ceil(rng.exponential(mean)), 1).astype(np.int64)
    time[:, k] = time[:, k - 1] + gap
    stay = short & (rng.random(num_users) < p_stay)
    cate[:, k] = np.where(stay, cate[:, k - 1], _categorical(rng, theta))
    follow = short & (cate[:, k] == cate[:, k - 1]) & (rng.random(num_users) < p_successor)
    popular = rng.choice(n, size=num_users, p=weights)
    item[:, k] = np.where(follow, succ[cate[:, k - 1], item[:, k - 1]], popular)

  # Row-major masking keeps rows grouped by user and in time order.
  mask = np.arange(steps)[None, :] < lengths[:, None]
  user_idx = np.broadcast_to(np.arange(num_users)[:, None], mask.shape)[mask]
  cate_flat, item_flat = cate[mask], item[mask]
  user_names = _names("u", np.arange(1, num_users + 1), max(4, len(str(num_users))))
  cate_width = max(2, len(str(num_categories - 1)))
  cate_names = _names("c", np.arange(num_categories), cate_width)
  item_names = np.char.add(np.repeat(_names("i", np.arange(num_categories), cate_width), n),
                           np.tile(_names("_", np.arange(n), max(3, len(str(n - 1)))), num_categories))
  return pd.DataFrame({
      "user": user_names[user_idx].astype(object),
      "item": item_names[cate_flat * n + item_flat].astype(object),
      "time": time[mask].astype(np.int64),
      "cate": cate_names[cate_flat].astype(object),
  }, columns=list(COLUMNS))


def _names(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
  """Zero-padded ids such as u0001, vectorised."""
  return np.char.add(prefix, np.char.zfill(numbers.astype(str), width))


def _consecutive(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
  """Returns (gap in seconds, previous-row index) for every row that has a predecessor of the same user."""
  user = df["user"].to_numpy()
  same = user[1:] == user[:-1]
  gap = np.diff(df["time"].to_numpy(np.int64))[same]
  return gap, np.flatnonzero(same)


def describe(df: pd.DataFrame, short_gap_threshold: int = SHORT_GAP_THRESHOLD) -> dict:
  """Returns statistics of a (user, item, time, cate) log that show the planted structure.

  Args:
    df: a frame as returned by `generate` (grouped by user in time order).
    short_gap_threshold: observed gaps below this many seconds count as short.

  Returns:
    dict of plain Python numbers.
  """
  lengths = df.groupby("user", sort=False).size().to_numpy()
  gap, prev = _consecutive(df)
  cate, item = df["cate"].to_numpy(), df["item"].to_numpy()
  same_cate = cate[prev + 1] == cate[prev]
  short = gap < short_gap_threshold
  # How deterministic the next item is: share of short same-category transitions that go to the most
  # frequent next item of the previous item (1/n for a uniform draw, ~p_successor when planted).
  pairs = pd.DataFrame({"a": item[prev][short & same_cate], "b": item[prev + 1][short & same_cate]})
  counts = pairs.value_counts()
  top_next = float(counts.groupby(level="a").max().sum() / max(len(pairs), 1))
  item_counts = np.sort(df["item"].value_counts().to_numpy())[::-1]
  top10 = max(1, int(round(0.1 * len(item_counts))))
  user_cate = df.groupby(["user", "cate"], sort=False).size()
  top_cate_share = (user_cate.groupby(level="user").max() / user_cate.groupby(level="user").sum()).mean()
  span = df["time"].max() - df["time"].min() if len(df) else 0
  return {
      "interactions": int(len(df)),
      "users": int(df["user"].nunique()),
      "items": int(df["item"].nunique()),
      "categories": int(df["cate"].nunique()),
      "mean_length": float(lengths.mean()) if len(lengths) else 0.0,
      "min_length": int(lengths.min()) if len(lengths) else 0,
      "max_length": int(lengths.max()) if len(lengths) else 0,
      "train_instances": int(np.maximum(lengths - 3, 0).sum()),
      "span_days": float(span / DAY),
      "short_gap_share": float(short.mean()) if len(short) else 0.0,
      "median_short_gap_s": float(np.median(gap[short])) if short.any() else 0.0,
      "median_long_gap_days": float(np.median(gap[~short]) / DAY) if (~short).any() else 0.0,
      "same_cate_after_short": float(same_cate[short].mean()) if short.any() else 0.0,
      "same_cate_after_long": float(same_cate[~short].mean()) if (~short).any() else 0.0,
      "top_next_item_share_short_same_cate": top_next,
      "mean_top_category_share": float(top_cate_share),
      "top10pct_item_share": float(item_counts[:top10].sum() / max(item_counts.sum(), 1)),
  }
