"""The PARSRec synthetic generator: its laws, the planted structure, validation and the script."""
import os
import subprocess
import sys

import numpy as np
import pytest

from recsys_jax.errors import InputError
from recsys_jax.sources.parsrec_text import read_parsrec_text
from recsys_jax.synthetic import parsrec

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The clipped, ceiled Weibull law (reference notes, section 1.2).
SIZE_LAW = {3: 0.519, 4: 0.203, 5: 0.108, 6: 0.063, 7: 0.038, 8: 0.024, 9: 0.015, 10: 0.030}


@pytest.fixture(scope="module")
def moderate():
  return parsrec.generate(parsrec.ParsrecGeneratorConfig(num_users=256, num_sessions=50, seed=7))


def _category_matrix(data: parsrec.ParsrecSynthetic) -> np.ndarray:
  s = data.sessions
  present = np.zeros((len(s), data.config.num_categories), bool)
  present[np.repeat(np.arange(len(s)), s.lengths()), data.item_category[s.items]] = True
  return present


def _conditional(present: np.ndarray, rows: np.ndarray, a: int, b: int) -> float:
  """P(category b in the session | category a in it) over sessions `rows`."""
  return float(present[rows & present[:, a], b].mean())


def test_session_length_law(moderate):
  lengths = moderate.sessions.lengths()
  assert lengths.min() >= 3 and lengths.max() <= 10
  freq = np.bincount(lengths, minlength=11) / lengths.shape[0]
  for size, p in SIZE_LAW.items():
    assert abs(freq[size] - p) < 0.02, (size, freq[size], p)
  assert abs(lengths.mean() - 4.18) < 0.06


def test_planted_group_contrasts(moderate):
  present = _category_matrix(moderate)
  group_b = moderate.user_group[moderate.sessions.user] == 1
  a, b = ~group_b, group_b
  # Group A plants +0.99 between 18 and 19, group B -0.5; 14/16 the reverse (-0.3 vs +1.0).
  assert _conditional(present, a, 18, 19) > 0.65 and _conditional(present, b, 18, 19) < 0.2
  assert _conditional(present, b, 14, 16) > 0.65 and _conditional(present, a, 14, 16) < 0.25
  assert _conditional(present, a, 8, 10) > _conditional(present, b, 8, 10) + 0.2
  # Shared blocks look alike in both groups.
  for x, y in ((4, 7), (0, 1)):
    assert abs(_conditional(present, a, x, y) - _conditional(present, b, x, y)) < 0.08
  assert _conditional(present, a, 4, 7) > 0.4  # complements (+0.8)
  assert _conditional(present, a, 12, 13) < 0.06  # correlation -1: almost never together
  # Every category is bought in about a fifth of the sessions.
  assert np.all(np.abs(present.mean(axis=0) - 0.21) < 0.05)


def test_ids_and_sessions_are_well_formed(moderate):
  s, cfg = moderate.sessions, moderate.config
  assert s.items.dtype == np.int32 and s.items.min() >= 2 and s.items.max() <= 2001
  assert cfg.num_items == 2002 and moderate.item_category.shape == (2002,)
  assert np.array_equal(np.unique(s.user), np.arange(256))
  assert np.array_equal(s.time, np.tile(np.arange(50), 256))
  # One item per category, hence no duplicate item, in every session.
  session_of = np.repeat(np.arange(len(s)), s.lengths())
  cat = moderate.item_category[s.items]
  pairs = np.unique(session_of * 100 + cat)
  assert pairs.shape[0] == s.items.shape[0]
  assert np.array_equal(np.unique(session_of * 10_000 + s.items).shape, s.items.shape)
  assert np.array_equal(moderate.user_group, np.repeat([0, 1], 128))
  prices = moderate.item_price[2:].reshape(20, 100)
  assert np.all(prices > 0) and np.all(prices.max(axis=1) <= 4 * prices.min(axis=1))


def test_items_are_shuffled_within_sessions(moderate):
  s = moderate.sessions
  rows = np.flatnonzero(s.lengths() == 3)
  first = s.items[s.offsets[rows]]
  second, third = s.items[s.offsets[rows] + 1], s.items[s.offsets[rows] + 2]
  ascending = np.mean((first < second) & (second < third))
  assert abs(ascending - 1 / 6) < 0.03


def test_preferences_persist_per_user(moderate):
  """A user's favourite item in a category takes a far larger share than under shuffled users."""
  s = moderate.sessions
  user = np.repeat(s.user, s.lengths()).astype(np.int64)

  def top_share(owner: np.ndarray) -> float:
    cat = moderate.item_category[s.items].astype(np.int64)
    key = (owner * 20 + cat) * 2002 + s.items
    uniq, counts = np.unique(key, return_counts=True)
    group = uniq // 2002
    groups, start = np.unique(group, return_index=True)
    return float(np.mean(np.maximum.reduceat(counts, start) / np.add.reduceat(counts, start)))

  shuffled = np.random.default_rng(0).permutation(user)
  assert top_share(user) > top_share(shuffled) + 0.1


def test_reproducible_with_seed():
  cfg = parsrec.ParsrecGeneratorConfig(num_users=6, num_sessions=5, items_per_category=10, seed=3)
  a, b = parsrec.generate(cfg), parsrec.generate(cfg)
  c = parsrec.generate(parsrec.ParsrecGeneratorConfig(num_users=6, num_sessions=5, items_per_category=10,
                                                      seed=4))
  for field in ("user", "time", "offsets", "items"):
    assert np.array_equal(getattr(a.sessions, field), getattr(b.sessions, field))
  assert not np.array_equal(a.sessions.items, c.sessions.items) or not np.array_equal(a.sessions.offsets,
                                                                                          c.sessions.offsets)


def test_odd_users_and_smaller_shapes():
  cfg = parsrec.ParsrecGeneratorConfig(num_users=5, num_sessions=4, num_categories=8, items_per_category=7,
                                       min_session_len=2, max_session_len=8)
  data = parsrec.generate(cfg)
  assert np.array_equal(data.user_group, [0, 0, 1, 1, 1])
  assert len(data.sessions) == 20 and data.sessions.items.max() < 2 + 8 * 7
  assert data.sessions.lengths().min() >= 3  # ceil(Weibull + 2) is always at least 3


def test_category_matrices_hold_the_planted_blocks():
  omega_a, omega_b = parsrec.category_correlations()
  for omega in (omega_a, omega_b):
    assert np.allclose(omega, omega.T) and np.allclose(np.diag(omega), 1)
    assert np.linalg.eigvalsh(omega).min() > -1e-10
    assert np.all(omega[:4, :4][~np.eye(4, dtype=bool)] == -0.25)
    assert omega[4, 5] == 0.2 and omega[4, 7] == 0.8 and omega[5, 7] == 0.7 and omega[6, 7] == 0.6
    assert omega[12, 13] == -1 and omega[11, 13] == -0.5 and omega[8, 9] == -0.4
    assert np.all(omega[17, np.arange(20) != 17] == 0) and omega[3, 4] == 0
  assert omega_a[8, 10] == 0.5 and omega_b[8, 10] == -0.5 and omega_b[9, 10] == -0.5
  assert omega_a[14, 16] == -0.3 and omega_b[14, 16] == 1.0
  assert omega_a[18, 19] == 0.99 and omega_b[18, 19] == -0.5
  changed = np.argwhere(omega_a != omega_b)
  assert set(map(tuple, changed)) == {(8, 10), (10, 8), (9, 10), (10, 9), (14, 16), (16, 14), (18, 19),
                                      (19, 18)}


def test_vine_recursion():
  p = np.zeros((1, 3, 3))
  p[0, 0, 1], p[0, 0, 2], p[0, 1, 2] = 0.3, 0.5, 0.2
  omega = parsrec.vine_correlations(p)[0]
  assert np.isclose(omega[0, 1], 0.3) and np.isclose(omega[0, 2], 0.5)
  assert np.isclose(omega[1, 2], 0.2 * np.sqrt((1 - 0.25) * (1 - 0.09)) + 0.15)
  draws = np.random.default_rng(0).beta(0.2, 1, (2, 30, 30))
  omegas = parsrec.vine_correlations(draws)
  assert np.allclose(omegas, omegas.transpose(0, 2, 1)) and np.linalg.eigvalsh(omegas).min() > -1e-9


@pytest.mark.parametrize("change,needle", [
    (dict(max_session_len=25), "max_session_len"),
    (dict(num_categories=21, max_session_len=10), "num_categories"),
    (dict(min_session_len=5, max_session_len=4), "min_session_len"),
    (dict(num_users=0), "num_users"),
    (dict(sigma0=0.0), "sigma0"),
    (dict(beta=float("nan")), "beta"),
    (dict(seed=-1), "seed"),
])
def test_invalid_parameters(change, needle):
  with pytest.raises(InputError, match=needle):
    parsrec.generate(parsrec.ParsrecGeneratorConfig(**change))


def _script(tmp_path, *args):
  return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "experiments", "generate_parsrec_data.py"),
                         *args], capture_output=True, text=True, cwd=tmp_path, timeout=60)


def test_script_writes_a_readable_file(tmp_path):
  out = tmp_path / "gen" / "toy.txt"
  run = _script(tmp_path, "--num_users=4", "--num_sessions=3", "--items_per_category=5", "--seed=1",
                f"--output={out}")
  assert run.returncode == 0, run.stderr
  assert len(run.stdout.strip().splitlines()) == 1 and "12 sessions" in run.stdout
  table = read_parsrec_text(str(out), num_items=102)
  assert len(table) == 12
  assert (tmp_path / "gen" / "toy_columns_dtype.json").exists()
  assert not [p for p in os.listdir(tmp_path / "gen") if p.startswith(".tmp")]


@pytest.mark.parametrize("args", [["--max_session_len=30"], ["--num_users=abc"], ["--no_such_flag=1"]])
def test_script_bad_input_exits_2(tmp_path, args):
  run = _script(tmp_path, f"--output={tmp_path / 'x.txt'}", *args)
  assert run.returncode == 2
  assert len(run.stderr.strip().splitlines()) == 1 and run.stderr.startswith("error:")
  assert not (tmp_path / "x.txt").exists()
