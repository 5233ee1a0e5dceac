"""PARSRec model: target rule, a plain numpy re-implementation of the forward pass, dropout, gradients."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recsys_jax import models
from recsys_jax.models import hashed_dropout, parsrec
from recsys_jax.tasks.basket_completion import EOB, first_hit_in_top_k

MODEL = models.get("parsrec")


@functools.lru_cache(maxsize=None)
def _jitted(config: parsrec.ParsrecConfig, train: bool):
  """One compiled apply per (config, mode): the toy tests share their shapes."""
  return jax.jit(lambda params, batch: MODEL.apply(config, {"params": params}, batch, train=train,
                                                   rng=jax.random.PRNGKey(0))[0])


def _apply(config, params, batch, train):
  return _jitted(config, train)(params, {k: jnp.asarray(v) for k, v in batch.items()})


# ---- the target rule on hand-made cases ---------------------------------------------------------------

def _place(session, remaining, guess, accept):
  target, real, left = parsrec.place_next(jnp.asarray(session), jnp.asarray(remaining), jnp.asarray(guess),
                                          jnp.asarray(accept))
  return np.asarray(target).tolist(), np.asarray(real).tolist(), np.asarray(left).tolist()


def test_target_rule_accepts_a_guess_still_in_the_basket():
  session = [[5, 7, 9, 0], [5, 7, 9, 0]]
  remaining = [[True, True, True, False], [True, False, True, False]]
  target, real, left = _place(session, remaining, [9, 7], [True, True])
  # Row 0: 9 remains, so it is accepted; row 1: 7 was already placed, so the first remaining (5) is taken.
  assert target == [9, 5] and real == [True, True]
  assert left == [[True, True, False, False], [False, False, True, False]]


def test_target_rule_falls_back_and_never_accepts_sob_eob_or_padding():
  session = [[5, 7, 0], [5, 7, 0], [5, 7, 0], [5, 7, 0]]
  remaining = [[False, True, False]] * 3 + [[True, True, False]]
  # An id outside the basket, EOB, SOB matching the padding slot, and a remaining id that may not be accepted.
  target, _, left = _place(session, remaining, [3, EOB, 0, 7], [True, True, True, False])
  assert target == [7, 7, 7, 5]
  assert left[0] == [False, False, False] and left[3] == [False, True, False]


def test_target_rule_gives_eob_when_nothing_remains():
  target, real, left = _place([[5, 7, 0]], [[False, False, False]], [5], [True])
  assert target == [EOB] and real == [False] and left == [[False, False, False]]


# ---- the forward pass against a plain numpy re-implementation of the original ------------------------

def _layer_norm(x, eps):
  mean = x.mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)


def _reference(p, config, user, session, length, history, negatives=None, k=3):
  """Per session, per step, written from the paper's description with PyTorch's MHA semantics."""
  p = {name: np.asarray(x, np.float64) for name, x in p.items()}
  table, heads = p["item_embedding"], config.num_heads
  out = {"logits": [], "targets": [], "scores": []}
  for b in range(len(user)):
    v = p["user_embedding"][user[b]]
    h = table[history[b]].mean(0) if len(history[b]) else np.zeros(config.item_dim)
    left = [int(x) for x in session[b][:length[b]]]
    basket, logits_b, targets_b, scores_b = [], [], [], []
    for s in range(session.shape[1]):
      keys = table[[0]] if s == 0 else table[basket]
      q = np.concatenate([v, h])
      qp = q @ p["attn0_q_kernel"] + p["attn0_q_bias"]
      kp = keys @ p["attn0_k_kernel"] + p["attn0_k_bias"]
      vp = keys @ p["attn0_v_kernel"] + p["attn0_v_bias"]
      hd = qp.shape[0] // heads
      parts = []
      for i in range(heads):
        sl = slice(i * hd, (i + 1) * hd)
        w = kp[:, sl] @ qp[sl] / np.sqrt(hd)
        w = np.exp(w - w.max())
        parts.append((w / w.sum()) @ vp[:, sl])
      c = np.concatenate(parts) @ p["attn0_out_kernel"] + p["attn0_out_bias"]
      x = _layer_norm(q + c, config.ln_eps) * p["attn0_ln_scale"] + p["attn0_ln_bias"]
      a = x @ p["attn0_f_kernel"] + p["attn0_f_bias"]
      z = np.concatenate([v, h, a])
      o = z @ p["i2o_kernel"] + p["i2o_bias"]
      h = np.maximum(z @ p["i2h_kernel"] + p["i2h_bias"], 0)
      logits = table @ o
      if negatives is None:  # training: top-1 over all ids
        guess, ok = int(np.argmax(logits)), True
      else:  # evaluation: the best-ranked remaining item among the top k of remaining + negatives
        cands = left + [int(n) for n in negatives[b]]
        scores = table[cands] @ o
        top = [cands[j] for j in np.argsort(-scores, kind="stable")[:k]]
        hits = [c for c in top if c in left]
        guess, ok = (hits[0], True) if hits else (-1, False)
        scores_b.append(sorted(scores.tolist(), reverse=True))
      if left:
        target = guess if ok and guess >= 2 and guess in left else left[0]
        left.remove(target)
      else:
        target = EOB
      basket.append(target)
      logits_b.append(logits)
      targets_b.append(target)
    out["logits"].append(logits_b)
    out["targets"].append(targets_b)
    out["scores"].append(scores_b)
  ragged = None
  if out["scores"][0]:  # per step, per session: the sorted candidate scores (their number varies)
    ragged = [[out["scores"][b][s] for b in range(len(user))] for s in range(session.shape[1])]
  return {"logits": np.swapaxes(np.asarray(out["logits"]), 0, 1),
          "targets": np.swapaxes(np.asarray(out["targets"]), 0, 1), "scores": ragged}


def _toy(num_items=12, seed=0, **overrides):
  """A small model with few ids, so that the model's own guesses often fall inside the basket."""
  config = parsrec.ParsrecConfig(num_users=3, num_items=num_items, user_dim=8, item_dim=6,
                                 num_heads=2, dropout=0.0, num_recoms=3, **overrides)
  rng = np.random.default_rng(seed)
  session = np.array([[4, 9, 2, 0], [3, 5, 7, 11], [6, 8, 0, 0]], np.int32)
  length = np.array([3, 4, 2], np.int32)
  history = [[2, 3, 3], [], [10]]
  hist = np.zeros((3, num_items), np.float32)
  for b, items in enumerate(history):
    for it in items:
      hist[b, it] += 1.0 / len(items)
  batch = {"user": np.array([0, 2, 1], np.int32), "session": session, "length": length, "history": hist,
           "weight": np.ones(3, np.float32)}
  variables = MODEL.init(config, jax.random.PRNGKey(seed), batch)
  # Scale the parameters up so that the logits are far from uniform and ties do not occur.
  params = jax.tree_util.tree_map(lambda x: x * 4.0 + 0.1 * rng.standard_normal(x.shape), variables["params"])
  return config, params, batch, history, rng


@pytest.mark.parametrize("seed", [0, 1])
def test_training_forward_matches_reference(seed):
  config, params, batch, history, _ = _toy(seed=seed)
  out = _apply(config, params, batch, True)
  ref = _reference(params, config, batch["user"], batch["session"], batch["length"], history)
  np.testing.assert_array_equal(np.asarray(out["targets"]), ref["targets"])
  np.testing.assert_array_equal(np.asarray(out["step_mask"]), np.arange(4)[:, None] < batch["length"][None, :])
  logits, top = ref["logits"], ref["logits"].max(-1)
  ce = (np.log(np.exp(logits - top[..., None]).sum(-1)) + top
        - np.take_along_axis(logits, ref["targets"][..., None], -1)[..., 0])
  assert out["ce"].shape == (4, 3)
  np.testing.assert_allclose(np.asarray(out["ce"]), ce, rtol=2e-4, atol=2e-4)


def test_the_rule_accepted_some_guesses():
  # The test above is only meaningful if the model's own guesses were used at least once.
  accepted = 0
  for seed in range(2):
    config, params, batch, history, _ = _toy(seed=seed)
    ref = _reference(params, config, batch["user"], batch["session"], batch["length"], history)
    for b in range(3):
      first_remaining = list(batch["session"][b][:batch["length"][b]])
      for s in range(batch["length"][b]):
        accepted += ref["targets"][s, b] != first_remaining[0]
        first_remaining.remove(ref["targets"][s, b])
  assert accepted > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_evaluation_forward_matches_reference(seed):
  config, params, batch, history, rng = _toy(seed=seed)
  negatives = np.stack([rng.choice(np.setdiff1d(np.arange(1, 12), s), 4, replace=False)
                        for s in batch["session"]]).astype(np.int32)
  out = _apply(config, params, dict(batch, negatives=negatives), False)
  ref = _reference(params, config, batch["user"], batch["session"], batch["length"], history, negatives,
                   k=config.num_recoms)
  np.testing.assert_array_equal(np.asarray(out["placed"]), ref["targets"])
  scores = np.sort(np.asarray(out["scores"]), axis=-1)[..., ::-1]
  finite = np.isfinite(scores)
  for s in range(4):  # the candidates (remaining items + negatives) and their scores, order aside
    for b in range(3):
      np.testing.assert_allclose(scores[s, b][finite[s, b]], ref["scores"][s][b], rtol=2e-4, atol=2e-4)
  assert out["scores"].shape == (4, 3, 8) and out["attention"].shape == (4, 3, 4)
  att = np.asarray(out["attention"])
  np.testing.assert_allclose(att.sum(-1), 1.0, rtol=1e-5)
  assert np.all(att[0, :, 1:] == 0)                              # step 0 attends to SOB only
  assert np.all(att[2, :, 2:] == 0)                              # step s attends to b_0..b_{s-1} only


def test_full_ranking_scores_every_id():
  config, params, batch, history, _ = _toy(full_ranking=True)
  out = _apply(config, params, batch, False)
  assert out["scores"].shape == (4, 3, 12)
  positive = np.asarray(out["positive"])
  # At step 0 the positives are exactly the session's items.
  for b in range(3):
    assert set(np.flatnonzero(positive[0, b])) == set(batch["session"][b][:batch["length"][b]])
  hit, _, _ = first_hit_in_top_k(out["scores"], out["positive"], 3)
  assert hit.shape == (4, 3)


def test_padded_steps_are_masked_unless_the_original_behaviour_is_asked_for():
  config, params, batch, _, _ = _toy()
  out = _apply(config, params, batch, True)
  mask = np.asarray(out["step_mask"])
  assert mask[:, 0].tolist() == [True, True, True, False] and mask[:, 2].tolist() == [True, True, False, False]
  assert np.asarray(out["targets"])[3, 0] == EOB
  config_eob, params, batch, _, _ = _toy(train_eob_on_padding=True)
  out = _apply(config_eob, params, batch, True)
  assert np.asarray(out["step_mask"]).all() and np.asarray(out["targets"])[3, 0] == EOB


# ---- dropout and gradients ----------------------------------------------------------------------------

def test_hashed_dropout_rate_independence_and_determinism():
  seed = jnp.array([7, 11], jnp.uint32)
  x = jnp.ones((2002, 128))
  a, b = hashed_dropout.dropout(x, 0.1, seed, 3), hashed_dropout.dropout(x, 0.1, seed, 4)
  keep_a, keep_b = np.asarray(a) > 0, np.asarray(b) > 0
  assert abs(keep_a.mean() - 0.9) < 0.003 and abs(float(a.mean()) - 1.0) < 0.005
  assert abs((keep_a & keep_b).mean() - 0.81) < 0.003              # streams are independent
  np.testing.assert_array_equal(np.asarray(hashed_dropout.dropout(x, 0.1, seed, 3)), np.asarray(a))
  np.testing.assert_array_equal(np.asarray(hashed_dropout.dropout(x, 0.1, None, 3)), np.asarray(x))


def test_dropout_mask_of_a_leading_block_is_that_block_of_the_full_mask():
  # The unrolled training steps mask only the key slots they use; the masks must be the loop's.
  seed = jnp.array([3, 5], jnp.uint32)
  full = np.asarray(hashed_dropout.keep_mask((4, 6, 8), 0.5, seed, 17))
  block = np.asarray(hashed_dropout.keep_mask((4, 2, 8), 0.5, seed, 17, full_shape=(4, 6, 8)))
  np.testing.assert_array_equal(block, full[:, :2])
  assert not np.array_equal(np.asarray(hashed_dropout.keep_mask((4, 2, 8), 0.5, seed, 17)), full[:, :2])


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_tied_cross_entropy_matches_autodiff_of_the_direct_formula(rate):
  rng = np.random.default_rng(0)
  o = jnp.asarray(rng.standard_normal((3, 4, 5)), jnp.float32)
  table = jnp.asarray(rng.standard_normal((7, 5)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 7, (3, 4)), jnp.int32)
  ct = jnp.asarray(rng.standard_normal((3, 4)), jnp.float32)     # the loss's weight on each step's ce
  keep = None if rate == 0 else hashed_dropout.keep_mask(table.shape, rate, jnp.array([1, 2], jnp.uint32), 9)

  def logits_of(o, t):
    return jnp.einsum("sbd,id->sbi", o, t if keep is None else jnp.where(keep, t / (1 - rate), 0.0))

  def direct(o, t):
    logits = logits_of(o, t)
    ce = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
    return jnp.sum(ct * ce)

  def tied(o, t):  # as the steps compute it: values without gradient, then the tied function
    logits = jax.lax.stop_gradient(logits_of(o, t))
    top = jnp.max(logits, -1, keepdims=True)
    exp_logits = jnp.exp(logits - top)
    exp_sum = jnp.sum(exp_logits, -1)
    ce = jnp.log(exp_sum) + top[..., 0] - jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
    return jnp.sum(ct * parsrec._tied_cross_entropy(o, t, exp_logits, exp_sum, ce, targets, keep, rate))

  assert float(tied(o, table)) == pytest.approx(float(direct(o, table)), rel=1e-6)
  for got, want in zip(jax.grad(tied, argnums=(0, 1))(o, table), jax.grad(direct, argnums=(0, 1))(o, table)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_unrolled_and_looped_training_steps_agree(monkeypatch):
  # Training unrolls short sessions; longer ones (and evaluation) run the same step in a loop. With dropout on,
  # the per-step masks must not depend on which of the two ran.
  config, params, batch, _, _ = _toy()
  config = dataclasses.replace(config, dropout=0.3)

  def loss_and_grad():
    def loss(p):
      out = MODEL.apply(config, {"params": p}, batch, train=True, rng=jax.random.PRNGKey(5))[0]
      return jnp.sum(out["ce"] * out["step_mask"]), out["targets"]
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

  (unrolled, targets_unrolled), grads_unrolled = loss_and_grad()
  monkeypatch.setattr(parsrec, "_UNROLL_STEPS", 0)
  (looped, targets_looped), grads_looped = loss_and_grad()
  np.testing.assert_array_equal(np.asarray(targets_unrolled), np.asarray(targets_looped))
  np.testing.assert_allclose(float(unrolled), float(looped), rtol=1e-6)
  for name in grads_looped:
    # Single-key steps sum the heads' value-output maps before the product when unrolled: the gradients
    # then differ by rounding relative to their largest entries, where a wrong mask would differ by far more.
    want = np.asarray(grads_looped[name])
    np.testing.assert_allclose(np.asarray(grads_unrolled[name]), want, rtol=1e-5,
                               atol=1e-6 + 1e-7 * np.abs(want).max(), err_msg=name)


def test_default_parameter_count_matches_the_original():
  config = parsrec.ParsrecConfig(num_users=1024, num_items=2002)
  batch = {"user": np.zeros(2, np.int32), "session": np.zeros((2, 3), np.int32), "length": np.zeros(2, np.int32),
           "history": np.zeros((2, 2002), np.float32), "weight": np.zeros(2, np.float32)}
  shapes = jax.eval_shape(lambda: MODEL.init(config, jax.random.PRNGKey(0), batch))
  assert sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes)) == 716_928


def test_two_attention_blocks_run():
  config, params, batch, _, _ = _toy(num_attn_blocks=2)
  out = _apply(config, params, batch, True)
  assert out["ce"].shape == (4, 3) and np.isfinite(np.asarray(out["ce"])).all()
  assert "attn1_f_kernel" in params and params["attn0_f_kernel"].shape == (14, 14)
