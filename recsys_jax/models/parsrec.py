"""PARSRec (Gholami et al., KDD'22): personalised attention over the partial basket, fused into an Elman cell.

Per session (reference notes, section 3.4):
  v = drop(U[user]), h_0 = drop(mean of the history's item embeddings) (zeros for an empty history).
  Step s: q = [v; h_s]; c = MHA(q, K_s, K_s) with K_0 = drop(E[SOB]) and K_s = drop(E[b_0..b_{s-1}]);
  a = W_f LN(q + c); z = [v; h_s; a]; o = i2o(z); h_{s+1} = ReLU(i2h(z)); logits = o . drop(E)^T (no bias).
The steps run under `lax.scan` (training unrolls them in Python for sessions up to 16 long, each step
slicing the key slots it uses); the carry holds h, the basket buffer (raw key embeddings) and the
remaining-item mask. The basket item b_s comes from the target rule (section 4.1) in training and from the
top-k acceptance rule (section 5.1) in evaluation; both depend on the model's own scores.

The math is the original's; the evaluation order is not:
  * single-query attention never projects the keys: q.(K W_k + b_k) = (q W_k^T).K + q.b_k and
    sum_j w_j (K_j W_v + b_v) = (sum_j w_j K_j) W_v + b_v, so each step costs O(heads * keys * d);
  * a step with a single key slot (steps 0 and 1 when unrolled) skips the query and the softmax: that key's
    weight is 1 in every head whatever the query, with a zero gradient into it; the last unrolled step
    skips h_{s+1}, which nothing reads;
  * the constant user part of [v; h; a] is multiplied once per batch, outside the scan;
  * the scan computes each step's logits without gradient (their top-1 drives the target rule) and, while
    they are still in cache, the step's softmax cross-entropy; `_tied_cross_entropy` supplies its gradient
    afterwards with two products over all steps at once.
Dropout masks are hashed (`hashed_dropout`), not drawn with threefry. Key masks are fresh per step, as in the
original, which re-embeds the basket on every step; the output table gets one mask per batch (the original
redraws it per step), which lets the output layer's gradient run as two products over all steps.
Outputs are step-major, the scan's layout. Training: `ce` (S, B) (each step's softmax cross-entropy of its target
over all ids), `targets` (S, B), `step_mask` (S, B).
Evaluation: candidate `scores` (S, B, C), `positive` (S, B, C) (still-remaining session items), `step_mask`,
`placed` (S, B) and `attention` (S, B, S) (step s's weights over key slots, averaged over heads and blocks;
slot 0 is SOB at step 0). C = S + negatives, or all ids with `full_ranking`. An evaluation batch may carry
`in_order` (B,) bool: those rows place their session's items in the listed order instead of by the
acceptance rule (completing a given partial basket).
"""
import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from recsys_jax.models import registry
from recsys_jax.models.hashed_dropout import dropout, keep_mask
from recsys_jax.tasks.basket_completion import EOB, first_hit_in_top_k

_UNROLL_STEPS = 16  # longer (power-of-two padded) sessions keep the loop: compile time grows with the steps


@dataclasses.dataclass(frozen=True)
class ParsrecConfig:
  """Defaults of `PARSRec.sh`; num_users, num_items, num_recoms and full_ranking come from the task."""
  num_users: int = 1
  num_items: int = 2              # ids 0 (SOB / padding) and 1 (EOB) included
  user_dim: int = 128
  item_dim: int = 128
  num_heads: int = 2
  num_attn_blocks: int = 1
  dropout: float = 0.1            # on embedding outputs only: v, h_0, keys and the output table
  ln_eps: float = 1e-8
  num_recoms: int = 10            # k of the evaluation acceptance rule
  full_ranking: bool = False      # evaluation over all ids instead of remaining items + fixed negatives
  # The original also trains EOB targets on the padded steps of sessions shorter than their batch; by
  # default those steps are masked out of the loss.
  train_eob_on_padding: bool = False
  # There is no hidden size: it is item_dim, since h_0 is a mean of item embeddings (the original's
  # d_h = sum(emb_dims[1:])).

  def __post_init__(self):
    if (self.user_dim + self.item_dim) % self.num_heads:
      raise ValueError("user_dim + item_dim must be divisible by num_heads")


# Dropout streams: fixed ids for the per-batch uses, then one per step for the keys.
_STREAM_USER, _STREAM_HISTORY, _STREAM_TABLE, _STREAM_STEP0 = 1, 2, 3, 16


# ---- parameters ------------------------------------------------------------------------------------------

def _uniform(bound: float):
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def _normal(std: float):
  return lambda key, shape, dtype=jnp.float32: std * jax.random.normal(key, shape, dtype)


def _xavier(fan_in: int, fan_out: int):
  return _uniform(math.sqrt(6.0 / (fan_in + fan_out)))


class Parsrec(nn.Module):
  config: ParsrecConfig

  def _params(self) -> dict:
    """Creates every parameter with the original's initialisation (reference notes, section 3.3)."""
    c = self.config
    q_dim, z_dim = c.user_dim + c.item_dim, c.user_dim + c.item_dim + c.item_dim
    p = {
        "user_embedding": self.param("user_embedding", _uniform(math.sqrt(1 / c.num_users)),
                                     (c.num_users, c.user_dim)),
        "item_embedding": self.param("item_embedding", _uniform(math.sqrt(1 / c.num_items)),
                                     (c.num_items, c.item_dim)),
        "blocks": [],
    }
    for name, out in (("i2h", c.item_dim), ("i2o", c.item_dim)):
      p[name] = (self.param(f"{name}_kernel", _normal(math.sqrt(2 / (z_dim + out))), (z_dim, out)),
                 self.param(f"{name}_bias", _normal(math.sqrt(1 / out)), (out,)))
    zeros, ones = nn.initializers.zeros, nn.initializers.ones
    for i in range(c.num_attn_blocks):
      out = c.item_dim if i == c.num_attn_blocks - 1 else q_dim
      default = _uniform(1 / math.sqrt(q_dim))  # PyTorch's default Linear init for in_features = q_dim
      p["blocks"].append({
          "q": (self.param(f"attn{i}_q_kernel", _xavier(q_dim, q_dim), (q_dim, q_dim)),
                self.param(f"attn{i}_q_bias", zeros, (q_dim,))),
          "k": (self.param(f"attn{i}_k_kernel", _xavier(c.item_dim, q_dim), (c.item_dim, q_dim)),
                self.param(f"attn{i}_k_bias", zeros, (q_dim,))),
          "v": (self.param(f"attn{i}_v_kernel", _xavier(c.item_dim, q_dim), (c.item_dim, q_dim)),
                self.param(f"attn{i}_v_bias", zeros, (q_dim,))),
          "o": (self.param(f"attn{i}_out_kernel", default, (q_dim, q_dim)),
                self.param(f"attn{i}_out_bias", zeros, (q_dim,))),
          "ln": (self.param(f"attn{i}_ln_scale", ones, (q_dim,)),
                 self.param(f"attn{i}_ln_bias", zeros, (q_dim,))),
          "f": (self.param(f"attn{i}_f_kernel", default, (q_dim, out)),
                self.param(f"attn{i}_f_bias", default, (out,))),
      })
    return p

  @nn.compact
  def __call__(self, batch: dict, train: bool):
    params = self._params()
    if self.is_initializing():  # init only creates parameters; the example batch may lack eval fields
      return {}
    seed = None
    if train and self.config.dropout > 0:
      seed = jax.random.bits(self.make_rng("dropout"), (2,), jnp.uint32)
    return forward(self.config, params, batch, train=train, seed=seed)


# ---- forward ---------------------------------------------------------------------------------------------

def _fold_block(block: dict, num_heads: int) -> dict:
  """Folds the key projection into the query side and the value projection into the output projection.

  q . b_k is the same for every key of a head, so it cancels in the softmax and is left out; b_k remains a
  parameter, whose gradient is zero, as it is in the original.
  """
  (wq, bq), (wk, _), (wv, bv), (wo, bo) = block["q"], block["k"], block["v"], block["o"]
  q_dim, d = wq.shape[0], wk.shape[0]
  hd = q_dim // num_heads
  wk_h, wv_h = wk.reshape(d, num_heads, hd), wv.reshape(d, num_heads, hd)
  wo_h = wo.reshape(num_heads, hd, q_dim)
  scale = 1.0 / math.sqrt(hd)
  return {
      "qk": jnp.einsum("qhe,dhe->qhd", wq.reshape(q_dim, num_heads, hd), wk_h) * scale,   # (Q, H, d)
      "qk_bias": jnp.einsum("he,dhe->hd", bq.reshape(num_heads, hd), wk_h) * scale,       # (H, d)
      "vo": jnp.einsum("dhe,heo->hdo", wv_h, wo_h),                                       # (H, d, Q)
      "vo_bias": bv @ wo + bo,
      "ln": block["ln"], "f": block["f"],
  }


def _attend(qt: jax.Array, q: jax.Array, keys: jax.Array, key_mask: jax.Array, fb: dict,
            eps: float) -> tuple[jax.Array, jax.Array]:
  """One attention block, single query per row: (LN(q + MHA(q, K, K)), weights (B, H, S)); W_f is the caller's.

  `qt` (B, H, D) is the query already mapped into key space (see `_fold_block`); unused (None) with a single
  key slot, whose weight is 1 in every head.
  """
  if keys.shape[1] == 1:
    weights = jnp.ones((keys.shape[0], fb["vo"].shape[0], 1), keys.dtype)
    x = q + keys[:, 0] @ jnp.sum(fb["vo"], axis=0) + fb["vo_bias"]
  else:
    # At most a few keys per row: a fused multiply-and-sum is cheaper than launching batched matmuls.
    logits = jnp.einsum("bhd,bsd->bhs", qt, keys)
    logits = jnp.where(key_mask[:, None, :], logits, -jnp.inf)
    weights = jax.nn.softmax(logits, axis=-1)
    pooled = jnp.einsum("bhs,bsd->bhd", weights, keys)
    x = q + jnp.einsum("bhd,hdo->bo", pooled, fb["vo"]) + fb["vo_bias"]
  mean = jnp.mean(x, -1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps) * fb["ln"][0] + fb["ln"][1], weights


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def _tied_cross_entropy(o: jax.Array, table: jax.Array, exp_logits: jax.Array, exp_sum: jax.Array, ce: jax.Array,
                        targets: jax.Array, keep: jax.Array | None, rate: float) -> jax.Array:
  """The cross-entropy ce = log sum_i exp(o.E_i) - o.E_target of every step, with its gradient in o and E.

  The scan computes the values without gradient: `exp_logits` (S, B, I) = exp(logits - max) and `exp_sum`
  (S, B) its sum per step. The gradient g = softmax - one_hot(target) then needs one pass over them, and
  reaches o and E through two products over all steps at once. `keep` is the output table's dropout mask
  (None without dropout).
  """
  del o, table, exp_logits, exp_sum, targets, keep, rate
  return ce


def _tied_cross_entropy_fwd(o, table, exp_logits, exp_sum, ce, targets, keep, rate):
  return ce, (o, table, exp_logits, exp_sum, targets, keep)


def _tied_cross_entropy_bwd(rate, residuals, ct):
  o, table, exp_logits, exp_sum, targets, keep = residuals      # o (S, B, D), exp_logits (S, B, I)
  g = exp_logits * (ct / exp_sum)[..., None]
  g = jnp.where(jnp.arange(g.shape[-1]) == targets[..., None], g - ct[..., None], g)
  dropped = table if keep is None else jnp.where(keep, table / (1.0 - rate), 0.0)
  d_o = jnp.einsum("sbi,id->sbd", g, dropped)
  # Steps and rows merged first (free in this layout): a three-axis contraction made XLA transpose g.
  g2, o2 = g.reshape(-1, g.shape[-1]), o.reshape(-1, o.shape[-1])
  d_table = jax.lax.dot_general(g2, o2, (((0,), (0,)), ((), ())))
  if keep is not None:
    d_table = jnp.where(keep, d_table / (1.0 - rate), 0.0)
  return d_o, d_table, None, None, None, None, None


_tied_cross_entropy.defvjp(_tied_cross_entropy_fwd, _tied_cross_entropy_bwd)


def place_next(session: jax.Array, remaining: jax.Array, guess: jax.Array,
               accept: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One step's basket item b_s: the guess if accepted and still remaining, else the first remaining item.

  Args:
    session: (B, S) items in file order (0 = padding).
    remaining: (B, S) bool, the slots not yet placed.
    guess: (B,) the model's candidate id; ids < 2 (SOB, EOB) are never accepted.
    accept: (B,) bool, whether the guess may be taken at all (always in training; a top-k hit in evaluation).

  Returns:
    (b_s (B,) (EOB when nothing remains), the step is real (B,) (something remained), the new remaining).
  """
  match = remaining & (session == guess[:, None]) & (guess[:, None] >= 2) & accept[:, None]
  any_left = jnp.any(remaining, axis=1)
  pos = jnp.where(jnp.any(match, axis=1), jnp.argmax(match, axis=1), jnp.argmax(remaining, axis=1))
  target = jnp.where(any_left, jnp.take_along_axis(session, pos[:, None], axis=1)[:, 0], EOB)
  taken = (jnp.arange(session.shape[1])[None, :] == pos[:, None]) & any_left[:, None]
  return target, any_left, remaining & ~taken


def forward(config: ParsrecConfig, params: dict, batch: dict, *, train: bool,
            seed: jax.Array | None = None) -> dict:
  """The step-by-step basket completion of a batch; outputs are step-major (S, B, ...)."""
  c = config
  batch = {k: jnp.asarray(x) for k, x in batch.items()}
  session, length = batch["session"], batch["length"]
  bsz, width = session.shape
  table = params["item_embedding"]
  v = dropout(params["user_embedding"][batch["user"]], c.dropout, seed, _STREAM_USER)
  h0 = dropout(batch["history"] @ table, c.dropout, seed, _STREAM_HISTORY)
  blocks = [_fold_block(b, c.num_heads) for b in params["blocks"]]
  # The user part of the first query and of z = [v; h; a] is constant over the steps.
  (w_h, b_h), (w_o, b_o) = params["i2h"], params["i2o"]
  w_cell = jnp.concatenate([w_o, w_h], axis=1)                 # (Du + 2D, 2D): o and h' in one product
  v_cell = v @ w_cell[:c.user_dim] + jnp.concatenate([b_o, b_h])
  qk0 = blocks[0]["qk"]                                         # (Du + D, H, D)
  v_qk = jnp.einsum("bu,uhd->bhd", v, qk0[:c.user_dim]) + blocks[0]["qk_bias"]
  # h_s feeds the first query and the cell: one (D, H D + 2D) product per step serves both.
  w_hid = jnp.concatenate([qk0[c.user_dim:].reshape(c.item_dim, -1), w_cell[c.user_dim:c.user_dim + c.item_dim]],
                          axis=1)
  q_cols = w_hid.shape[1] - 2 * c.item_dim
  # a = W_f x + b_f feeds only the cell, so the last block's W_f folds into the cell's product.
  w_f, b_f = blocks[-1]["f"]
  w_fa = w_f @ w_cell[c.user_dim + c.item_dim:]
  v_cell = v_cell + b_f @ w_cell[c.user_dim + c.item_dim:]
  # One output-table mask per batch (the original redraws it per step): the gradient of all steps is then
  # two plain products, the floor of this layer's cost.
  table_keep = None
  if seed is not None and c.dropout > 0:
    table_keep = keep_mask(table.shape, c.dropout, seed, _STREAM_TABLE)
  out_table = jax.lax.stop_gradient(
      table if table_keep is None else jnp.where(table_keep, table / (1.0 - c.dropout), 0.0))

  real = session >= 2
  if not c.full_ranking and not train:
    cand_ids = jnp.concatenate([session, batch["negatives"]], axis=1)      # (B, C)
    cand_emb = table[cand_ids]
    neg_shape = batch["negatives"].shape
  slots = jnp.arange(width)
  rows = jnp.arange(bsz)

  def step(carry, s):
    h, keys, remaining = carry
    if isinstance(s, int):  # unrolled: only the slots filled so far enter the step (same masks as the loop)
      k_drop = dropout(keys[:, :max(s, 1)], c.dropout, seed, _STREAM_STEP0 + s, keys.shape)
      key_mask = jnp.ones(k_drop.shape[:2], bool)
    else:
      key_mask = slots[None, :] < jnp.maximum(s, 1)
      k_drop = dropout(keys, c.dropout, seed, _STREAM_STEP0 + s)
    q = jnp.concatenate([v, h], axis=1)
    # h @ w_hid gives [the first query in key space | o | h_{s+1}]. Steps with one key slot (0 and 1 when
    # unrolled) need no query, and the last unrolled step's h_{s+1} is never used: both skip those columns.
    single_key = k_drop.shape[1] == 1
    n_q = 0 if single_key else q_cols
    n_cell = c.item_dim if isinstance(s, int) and s == width - 1 else 2 * c.item_dim
    hw = h @ w_hid[:, q_cols - n_q:q_cols + n_cell]
    attention = 0.0
    for i, fb in enumerate(blocks):
      if single_key:
        qt = None
      elif i == 0:  # the user half of the first query was projected outside the scan
        qt = v_qk + hw[:, :n_q].reshape(v_qk.shape)
      else:
        qt = jnp.einsum("bq,qhd->bhd", q, fb["qk"]) + fb["qk_bias"]
      x, w = _attend(qt, q, k_drop, key_mask, fb, c.ln_eps)
      attention = attention + jnp.mean(w, axis=1) / len(blocks)
      if i < len(blocks) - 1:
        q = x @ fb["f"][0] + fb["f"][1]
    cell = hw[:, n_q:] + x @ w_fa[:, :n_cell] + v_cell[:, :n_cell]
    o, h_next = cell[:, :c.item_dim], (jax.nn.relu(cell[:, c.item_dim:]) if n_cell > c.item_dim else h)
    if train:  # target rule: the top-1 guess over all ids if it is still in the basket
      logits = jax.lax.stop_gradient(o) @ out_table.T
      top = jnp.max(logits, axis=1, keepdims=True)
      # The top-1 id is in the basket iff a remaining item's logit reaches the maximum: a max and a gather
      # instead of an argmax over all ids (XLA's CPU argmax is a slow scalar loop). Exact ties between
      # float logits, where argmax would prefer the lower id, are the only difference.
      candidates = remaining & (jnp.take_along_axis(logits, session, axis=1) >= top)
      guess = jnp.where(jnp.any(candidates, axis=1), session[rows, jnp.argmax(candidates, axis=1)], -1)
      accept = jnp.ones((bsz,), bool)
      exp_logits = jnp.exp(logits - top)
      out = {"o": o, "exp_logits": exp_logits, "exp_sum": jnp.sum(exp_logits, axis=1)}
    else:  # acceptance rule: the best-ranked remaining item among the top k
      if c.full_ranking:  # all ids; SOB, EOB and placed items stay in, as in the original
        scores = o @ table.T
        positive = jnp.zeros(scores.shape, jnp.int8).at[rows[:, None], session].max(
            (remaining & real).astype(jnp.int8)) > 0
      else:
        valid = jnp.concatenate([remaining & real, jnp.ones(neg_shape, bool)], axis=1)
        scores = jnp.where(valid, jnp.einsum("bd,bcd->bc", o, cand_emb), -jnp.inf)
        positive = jnp.concatenate([remaining & real, jnp.zeros(neg_shape, bool)], axis=1)
      accept, _, col = first_hit_in_top_k(scores, positive, c.num_recoms)
      if "in_order" in batch:  # completing given baskets: their items are placed as listed
        accept = accept & ~batch["in_order"]
      guess = col if c.full_ranking else jnp.take_along_axis(cand_ids, col[:, None], axis=1)[:, 0]
      out = {"scores": scores, "positive": positive, "attention": attention}
    target, any_left, remaining = place_next(session, remaining, guess, accept)
    if train:
      out["ce"] = (jnp.log(out["exp_sum"]) + top[:, 0]
                   - jnp.take_along_axis(logits, target[:, None], axis=1)[:, 0])
    # Slot s receives b_s; slot 0 held SOB for step 0 only.
    keys = jax.lax.dynamic_update_index_in_dim(keys, table[target], s, axis=1)
    out.update(targets=target, step_mask=any_left)
    return (h_next, keys, remaining), out

  keys0 = jnp.zeros((bsz, width, c.item_dim), table.dtype).at[:, 0].set(table[0])
  remaining0 = slots[None, :] < length[:, None]
  # Training unrolls the steps of sessions up to _UNROLL_STEPS long: no loop buffers to zero-fill and update
  # per step, XLA schedules across steps, and step s attends over its max(s, 1) filled key slots only, not
  # the whole buffer (9% less time per epoch than the unrolled scan over the full buffer, which was itself
  # 3-7% faster per batch than the loop; BENCHMARKS.md), for about 20 s more compilation over the 8 widths.
  # Evaluation is cheap and keeps the loop.
  carry = (h0, keys0, remaining0)
  if train and width <= _UNROLL_STEPS:
    per_step = []
    for s in range(width):
      carry, out = step(carry, s)
      per_step.append(out)
    outs = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *per_step)
  else:
    _, outs = jax.lax.scan(step, carry, jnp.arange(width))
  if train:
    outs["ce"] = _tied_cross_entropy(outs.pop("o"), table, outs.pop("exp_logits"), outs.pop("exp_sum"), outs["ce"],
                                     outs["targets"], table_keep, c.dropout)
    if c.train_eob_on_padding:
      outs["step_mask"] = jnp.ones_like(outs["step_mask"])
  else:
    outs["placed"] = outs.pop("targets")
  return outs


registry.linen_model("parsrec", "basket_completion", ParsrecConfig, Parsrec,
                     description="PARSRec: personalised attention over the partial basket + Elman cell (KDD'22)",
                     # SparseAdam on the user table; the item table gets a gradient on every row (output layer).
                     sparse_params=("user_embedding",), eval_only_fields=("num_recoms", "full_ranking"))
