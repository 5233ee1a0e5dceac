"""PARSRec's synthetic basket generator (KDD'22), vectorised over users and times.

The process follows the original `synthetic_data_generator.py` (see reference notes, section 1):
  1. Category latents z ~ MVN(gamma0, Omega) per (user, time); users of group A (the first
     num_users // 2) use Omega_A, the rest Omega_B. The two 20x20 block matrices plant group-specific
     co-purchase structure.
  2. Session size s = clip(ceil(WeibullMin(c, loc, scale)), min, max).
  3. The session's categories are the top-s by z.
  4. Within each chosen category the user takes the argmax-utility item,
     u = alpha[user, c, j] - beta * price[c, j] + N(0, sigma0^2), where alpha ~ MVN(0, tau0^2 Omega_c) is
     drawn once per (user, category) (persistent preferences) and Omega_c comes from a vine construction
     with Beta(0.2, 1) partial correlations.
  5. The session's items are shuffled. The original used an unseeded `random.shuffle`; here every draw,
     the shuffle included, comes from one seeded `np.random.Generator`, so a seed fixes the whole dataset.
Item ids are `c * items_per_category + j + 2`; 0 and 1 are reserved for SOB and EOB.
"""
import dataclasses

import numpy as np

from recsys_jax.errors import InputError
from recsys_jax.sources.parsrec_text import MIN_SESSIONS_PER_USER, SessionTable

MAX_CATEGORIES = 20  # the planted matrices are 20x20; fewer categories use their leading block
_PSD_TOL = 1e-10     # the singular blocks (correlation +-1) give eigenvalues of about -1e-16
_NOISE_CHUNK = 1 << 16  # (category, session) pairs per utility-noise chunk: bounds memory at any size


@dataclasses.dataclass(frozen=True)
class ParsrecGeneratorConfig:
  """Every parameter of the generator; the defaults are the values of `synthetic_data_generator.sh`."""
  num_users: int = 1024
  num_sessions: int = 100           # sessions (time steps) per user
  num_categories: int = 20
  items_per_category: int = 100
  gamma0: float = -0.5              # base category utility; equal for all, so it never changes the top-s
  sigma0: float = 1.0               # std of the per-(user, time, item) utility noise
  tau0: float = 2.0                 # scale of the per-category preference covariance
  beta: float = 0.1                 # price sensitivity
  min_session_len: int = 3
  max_session_len: int = 10
  weibull_c: float = 0.8046973517087279
  weibull_loc: float = 2.0
  weibull_scale: float = 1.4738173215687265
  price_mean: float = 0.5           # lognormal mean (of the log) of the per-category base price
  price_sigma: float = 0.1
  vine_a: float = 0.2               # Beta(a, b) law of the vine's partial correlations
  vine_b: float = 1.0
  seed: int = 123

  @property
  def num_items(self) -> int:
    """The id range including SOB (0) and EOB (1): 2 + categories * items per category."""
    return 2 + self.num_categories * self.items_per_category

  @property
  def group_a_users(self) -> int:
    """Users 0..group_a_users-1 use Omega_A; with an odd count group B gets the extra user."""
    return self.num_users // 2

  def validate(self) -> None:
    """Raises `InputError` for a parameter the process cannot use."""
    def need(ok: bool, message: str) -> None:
      if not ok:
        raise InputError(f"invalid generator parameter: {message}")

    for name in ("num_users", "num_sessions", "num_categories", "items_per_category", "min_session_len",
                 "max_session_len"):
      need(isinstance(getattr(self, name), (int, np.integer)) and getattr(self, name) >= 1,
           f"{name}={getattr(self, name)!r}; expected an integer >= 1")
    need(self.num_sessions >= MIN_SESSIONS_PER_USER, f"num_sessions={self.num_sessions}; expected >= "
         f"{MIN_SESSIONS_PER_USER}: every user's last two sessions are the valid and test sessions")
    need(isinstance(self.seed, (int, np.integer)) and self.seed >= 0, f"seed={self.seed!r}; expected an "
         "integer >= 0")
    need(self.num_categories <= MAX_CATEGORIES,
         f"num_categories={self.num_categories}; expected <= {MAX_CATEGORIES} (the planted matrices are "
         f"{MAX_CATEGORIES}x{MAX_CATEGORIES})")
    need(self.min_session_len <= self.max_session_len,
         f"min_session_len={self.min_session_len} > max_session_len={self.max_session_len}")
    need(self.max_session_len <= self.num_categories,
         f"max_session_len={self.max_session_len} > num_categories={self.num_categories}; a session takes "
         "at most one item per category")
    need(self.num_items - 1 <= np.iinfo(np.int32).max, "too many items for int32 ids")
    for name in ("sigma0", "tau0", "weibull_c", "weibull_scale", "price_sigma", "vine_a", "vine_b"):
      value = getattr(self, name)
      need(np.isfinite(value) and value > 0, f"{name}={value!r}; expected a finite value > 0")
    for name in ("gamma0", "beta", "weibull_loc", "price_mean"):
      value = getattr(self, name)
      need(np.isfinite(value), f"{name}={value!r}; expected a finite number")
    for label, omega in zip("AB", category_correlations(self.num_categories)):
      low = float(np.linalg.eigvalsh(omega).min())
      need(low > -_PSD_TOL, f"Omega_{label} is not positive semi-definite (smallest eigenvalue {low:.3g})")


@dataclasses.dataclass
class ParsrecSynthetic:
  """A generated dataset plus the ground truth that produced it."""
  config: ParsrecGeneratorConfig
  sessions: SessionTable       # user-major, time 0..T-1 within a user
  item_category: np.ndarray    # (num_items,) int32, -1 for SOB/EOB
  item_price: np.ndarray       # (num_items,) float64, 0 for SOB/EOB
  user_group: np.ndarray       # (num_users,) int8, 0 = Omega_A, 1 = Omega_B
  omegas: np.ndarray           # (2, C, C) the category correlations of groups A and B


def _block_diag(*blocks: list[list[float]]) -> np.ndarray:
  size = sum(len(b) for b in blocks)
  out = np.zeros((size, size))
  at = 0
  for b in blocks:
    n = len(b)
    out[at:at + n, at:at + n] = b
    at += n
  return out


def category_correlations(num_categories: int = MAX_CATEGORIES) -> np.ndarray:
  """The (2, C, C) planted inter-category correlations Omega_A and Omega_B (leading C x C block)."""
  d1 = [[1, -0.25, -0.25, -0.25], [-0.25, 1, -0.25, -0.25], [-0.25, -0.25, 1, -0.25],
        [-0.25, -0.25, -0.25, 1]]                                           # substitutes, shared
  d2 = [[1, 0.2, 0.5, 0.8], [0.2, 1, 0.4, 0.7], [0.5, 0.4, 1, 0.6], [0.8, 0.7, 0.6, 1]]  # complements
  d4 = [[1, 0.5, -0.5], [0.5, 1, -1], [-0.5, -1, 1]]                        # 12 and 13 never together
  d6 = [[1]]
  a = _block_diag(d1, d2, [[1, -0.4, 0.5], [-0.4, 1, 0.5], [0.5, 0.5, 1]], d4,
                  [[1, 0.5, -0.3], [0.5, 1, 0.5], [-0.3, 0.5, 1]], d6, [[1, 0.99], [0.99, 1]])
  b = _block_diag(d1, d2, [[1, -0.4, -0.5], [-0.4, 1, -0.5], [-0.5, -0.5, 1]], d4,
                  [[1, 0.5, 1.0], [0.5, 1, 0.5], [1.0, 0.5, 1]], d6, [[1, -0.5], [-0.5, 1]])
  return np.stack([a, b])[:, :num_categories, :num_categories]


def _psd_factor(cov: np.ndarray) -> np.ndarray:
  """A with A @ A.T == cov for a (possibly singular) PSD matrix; batched over leading axes."""
  w, v = np.linalg.eigh(cov)
  return v * np.sqrt(np.clip(w, 0.0, None))[..., None, :]


def vine_correlations(partials: np.ndarray) -> np.ndarray:
  """(C, J, J) correlation matrices from partial correlations in the strict upper triangle.

  The original's recursion: for k < i, p = P[k, i], then for l = k-1..0,
  p <- p * sqrt((1 - P[l, i]^2) (1 - P[l, k]^2)) + P[l, i] P[l, k]. Vectorised over categories and i.
  """
  c, j, _ = partials.shape
  omega = np.broadcast_to(np.eye(j), (c, j, j)).copy()
  for k in range(j - 1):
    p = partials[:, k, k + 1:].copy()
    for level in range(k - 1, -1, -1):
      pi = partials[:, level, k + 1:]
      pk = partials[:, level, k:k + 1]
      p = p * np.sqrt((1 - pi ** 2) * (1 - pk ** 2)) + pi * pk
    omega[:, k, k + 1:] = p
    omega[:, k + 1:, k] = p
  return omega


def generate(config: ParsrecGeneratorConfig = ParsrecGeneratorConfig()) -> ParsrecSynthetic:
  """Generates the dataset; everything comes from `np.random.default_rng(config.seed)`."""
  config.validate()
  rng = np.random.default_rng(config.seed)
  n_users, n_times, n_cat, n_item = (config.num_users, config.num_sessions, config.num_categories,
                                     config.items_per_category)
  omegas = category_correlations(n_cat)

  # 1. Category latents, group A first then group B (the original stacks the two draws the same way).
  n_a = config.group_a_users
  z = np.empty((n_users, n_times, n_cat))
  for g, (lo, hi) in enumerate(((0, n_a), (n_a, n_users))):
    eps = rng.standard_normal((hi - lo, n_times, n_cat))
    z[lo:hi] = config.gamma0 + eps @ _psd_factor(omegas[g]).T

  # 2. Session sizes from the clipped, ceiled Weibull law.
  sizes = np.ceil(config.weibull_loc + config.weibull_scale * rng.weibull(config.weibull_c,
                                                                          (n_users, n_times)))
  sizes = np.clip(sizes, config.min_session_len, config.max_session_len).astype(np.int64)

  # 3. Top-s categories by z: rank categories per (user, time) and keep the first s.
  top = np.argsort(-z, axis=-1, kind="stable")[..., :config.max_session_len]
  keep = np.arange(config.max_session_len) < sizes[..., None]
  session_user = np.broadcast_to(np.arange(n_users)[:, None, None], keep.shape)[keep]
  chosen_cat = top[keep]  # user-major, then time, then rank

  # 4. Persistent preferences, prices and the argmax-utility item of each chosen category.
  partials = rng.beta(config.vine_a, config.vine_b, (n_cat, n_item, n_item))
  sigma = config.tau0 ** 2 * vine_correlations(partials)
  alpha = np.einsum("ucj,ckj->uck", rng.standard_normal((n_users, n_cat, n_item)), _psd_factor(sigma))
  base_price = rng.lognormal(config.price_mean, config.price_sigma, n_cat)
  price = rng.uniform(base_price[:, None] / 2, 2 * base_price[:, None], (n_cat, n_item))
  # float32 halves the traffic of the (chosen pairs x items) gather, the generator's hot spot.
  mean_utility = (alpha - config.beta * price[None]).astype(np.float32)  # (U, C, J)
  choice = np.empty(chosen_cat.shape[0], np.int64)
  for lo in range(0, chosen_cat.shape[0], _NOISE_CHUNK):
    hi = min(lo + _NOISE_CHUNK, chosen_cat.shape[0])
    noise = rng.standard_normal((hi - lo, n_item), dtype=np.float32)
    noise *= config.sigma0
    noise += mean_utility[session_user[lo:hi], chosen_cat[lo:hi]]
    choice[lo:hi] = noise.argmax(axis=1)
  item_grid = np.zeros(keep.shape, np.int64)
  item_grid[keep] = chosen_cat * n_item + choice + 2

  # 5. Seeded in-session shuffle: random keys, padding sorted last.
  keys = np.where(keep, rng.random(keep.shape), np.inf)
  order = np.argsort(keys, axis=-1)
  items = np.take_along_axis(item_grid, order, axis=-1)[np.take_along_axis(keep, order, axis=-1)]

  user = np.repeat(np.arange(n_users), n_times)
  time = np.tile(np.arange(n_times), n_users)
  sessions = SessionTable.from_lengths(user, time, sizes.reshape(-1), items)
  item_category = np.concatenate([[-1, -1], np.repeat(np.arange(n_cat), n_item)]).astype(np.int32)
  item_price = np.concatenate([[0.0, 0.0], price.reshape(-1)])
  user_group = (np.arange(n_users) >= n_a).astype(np.int8)
  return ParsrecSynthetic(config=config, sessions=sessions, item_category=item_category,
                          item_price=item_price, user_group=user_group, omegas=omegas)
