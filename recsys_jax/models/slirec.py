"""SLi-Rec (Yu et al., IJCAI'19) as implemented in `recommenders`' `sli_rec.py`.

long-term:  A2SVD attention over history item ⊕ category embeddings            -> att1 (B, D)
short-term: Time4LSTM over history item embeddings + log-time features          -> rnn (B, L, H)
            target-aware attention (`_attention_fcn`) of each candidate over rnn -> att2 (B, C, H)
fusion:     alpha = sigmoid(FcnNet([target, att1, att2, time_to_now_last]))
            user = alpha att1 + (1 - alpha) att2; logit = FcnNet([user, target]).
`original_quirks=True` reproduces the original's handling of padding: the long-term attention also attends to
padded positions, the short-term attention MLP's BatchNorm statistics include padded positions, and the
fusion gate reads the time-to-now of the last *padded* column (0 for histories shorter than max_len) instead
of the last real interaction.
"""
import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from recsys_jax.models import registry
from recsys_jax.models.layers import BNDropReLU, FcnNet, HistoryAttention, ItemCateEmbed, tnormal
from recsys_jax.models.time4lstm import Time4LSTM

_MASKED = -2.0**32 + 1  # the original's score for masked steps


@dataclasses.dataclass(frozen=True)
class SLiRecConfig:
  num_items: int = 1
  num_categories: int = 1
  item_embedding_dim: int = 32
  cate_embedding_dim: int = 8
  hidden_size: int = 40          # must equal item + category dims (the gate mixes att1 and att2)
  attention_size: int = 40       # must equal item + category dims
  att_fcn_layer_sizes: tuple[int, ...] = (80, 40)
  layer_sizes: tuple[int, ...] = (100, 64)
  dropout: float = 0.3
  original_quirks: bool = False

  def __post_init__(self):
    dim = self.item_embedding_dim + self.cate_embedding_dim
    if self.hidden_size != dim or self.attention_size != dim:
      raise ValueError("hidden_size and attention_size must equal item_embedding_dim + cate_embedding_dim")


class TargetAttention(nn.Module):
  """`_attention_fcn`: per candidate, an MLP score of each step from z = [A, q, A - q, A * q], A = rnn M.

  The first dense layer over z is evaluated by blocks — z W = A (Wa + Wd) + q (Wq - Wd) + (A * q) Wp — which
  is the same function with 4x fewer multiply-adds, since only the last block varies per (candidate, step).
  By default the MLP runs on the batch's real history positions only (`pack_*` arrays of the batch), so its
  BatchNorm statistics ignore padding; `packed=False` runs it on every position of the padded (B, C, L)
  grid and, as in the original, lets padding enter the statistics.
  """
  layer_sizes: Sequence[int]
  dropout: float
  packed: bool = True

  @nn.compact
  def __call__(self, rnn, target, batch, train: bool):
    b, length, _ = rnn.shape
    dim, size0 = target.shape[-1], self.layer_sizes[0]
    a = rnn @ self.param("attention_mat", tnormal, (rnn.shape[-1], dim))          # (B, L, D)
    kernel = self.param("fcn_kernel_0", tnormal, (4 * dim, size0))
    bias = self.param("fcn_bias_0", nn.initializers.zeros, (size0,))
    k_a, k_q, k_d, k_p = jnp.split(kernel, 4, axis=0)
    hist_part = a @ (k_a + k_d)                                                   # (B, L, F)
    target_part = target @ (k_q - k_d) + bias                                     # (B, C, F)
    if self.packed:
      row, pos, valid = batch["pack_row"], batch["pack_pos"], batch["pack_valid"]
      x = (hist_part[row, pos][:, None, :] + target_part[row]
           + (a[row, pos][:, None, :] * target[row]) @ k_p)                       # (P, C, F)
      row_mask = valid * batch["weight"][row]
    else:
      x = (hist_part[:, None, :, :] + target_part[:, :, None, :]
           + (a[:, None, :, :] * target[:, :, None, :]) @ k_p)                    # (B, C, L, F)
      row_mask = batch["weight"]
    x = BNDropReLU(self.dropout)(x, row_mask, train)
    score = FcnNet(self.layer_sizes[1:], self.dropout)(x, row_mask, train)[..., 0]
    if self.packed:  # scatter the (P, C) scores back onto the (B, C, L) grid; filler goes to a spare slot
      flat = jnp.where(valid > 0, row * length + pos, b * length)
      grid = jnp.full((b * length + 1, score.shape[-1]), _MASKED, score.dtype).at[flat].set(score)
      score = jnp.swapaxes(grid[:-1].reshape(b, length, -1), 1, 2)
    score = jnp.where(batch["hist_mask"][:, None, :] > 0, score, _MASKED)
    weights = jax.nn.softmax(score, axis=-1)
    return jnp.einsum("bcl,blh->bch", weights, rnn), weights


class SLiRec(nn.Module):
  config: SLiRecConfig

  @nn.compact
  def __call__(self, batch, train: bool):
    c = self.config
    embed = ItemCateEmbed(c.num_items, c.num_categories, c.item_embedding_dim, c.cate_embedding_dim)
    hist, target = embed.history_and_candidates(batch)                # (B, L, D), (B, C, D)
    mask, weight = batch["hist_mask"], batch["weight"]

    att1, _ = HistoryAttention(mask_padding=not c.original_quirks, name="long_term")(hist, mask)
    rnn = Time4LSTM(c.hidden_size)(embed.items_only(batch["hist_item"]), batch["time_now"],
                                   batch["time_first"], mask)
    att2, _ = TargetAttention(c.att_fcn_layer_sizes, c.dropout, packed=not c.original_quirks)(
        rnn, target, batch, train)

    if c.original_quirks:
      now_last = batch["time_now"][:, -1]
    else:
      last = jnp.maximum(batch["hist_len"] - 1, 0)
      now_last = jnp.take_along_axis(batch["time_now"], last[:, None], axis=1)[:, 0]
    att1 = jnp.broadcast_to(att1[:, None, :], target.shape)
    now_last = jnp.broadcast_to(now_last[:, None, None], target.shape[:2] + (1,))
    gate_in = jnp.concatenate([target, att1, att2, now_last], axis=-1)
    alpha = jax.nn.sigmoid(FcnNet(c.att_fcn_layer_sizes, c.dropout, name="alpha")(gate_in, weight, train))
    user = alpha * att1 + (1 - alpha) * att2
    logit = FcnNet(c.layer_sizes, c.dropout, name="head")(jnp.concatenate([user, target], -1), weight, train)
    return logit[..., 0]


registry.linen_model("slirec", "sequential_ctr", SLiRecConfig, SLiRec,
                     description="SLi-Rec: long-term A2SVD + time-aware LSTM short-term, gated (recommenders)")
