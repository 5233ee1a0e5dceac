"""Building blocks shared by the sequential CTR models, with `recommenders`' initialisers and layer order."""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# TF1 `truncated_normal(stddev=0.01)`: cut at +-2 sigma, no variance rescaling (empirical std 0.0088).
tnormal = jax.nn.initializers.truncated_normal(0.01)
# TF's glorot_uniform for every Time4LSTM weight; 1-D vectors use fan_in = fan_out = their length.
glorot = jax.nn.initializers.glorot_uniform()


def glorot_vector(key, shape, dtype=jnp.float32):
  limit = jnp.sqrt(6.0 / (2 * shape[0]))
  return jax.random.uniform(key, shape, dtype, -limit, limit)


class Dropout(nn.Module):
  """Inverted dropout whose keep decisions use 16 random bits each (two per 32-bit draw).

  Drawing the mask is the costliest part of SLi-Rec's attention MLP on CPU (~12M decisions per step);
  `jax.random.bernoulli` spends 32 bits and a float conversion per decision. The rate is quantised to
  k/65536 (error < 1e-5).
  """
  rate: float

  @nn.compact
  def __call__(self, x, train: bool):
    if not train or self.rate == 0.0:
      return x
    n = x.size
    bits = jax.random.bits(self.make_rng("dropout"), ((n + 1) // 2,), jnp.uint32)
    halves = jnp.concatenate([bits & 0xFFFF, bits >> 16])[:n].reshape(x.shape)
    keep = halves >= jnp.uint32(round(self.rate * 65536))
    return jnp.where(keep, x / (1.0 - self.rate), 0.0)


class BNDropReLU(nn.Module):
  """The part of `recommenders`' `_fcn_net` hidden layer after the dense: BatchNorm -> Dropout -> ReLU."""
  dropout: float

  @nn.compact
  def __call__(self, x, row_mask, train: bool):
    # momentum/epsilon of tf.compat.v1.layers.batch_normalization as configured there. Padded batch rows
    # (row_mask 0) are kept out of the batch statistics.
    mask = row_mask.reshape(row_mask.shape + (1,) * (x.ndim - row_mask.ndim))
    mask = jnp.broadcast_to(mask, x.shape[:-1] + (1,)) > 0
    x = nn.BatchNorm(momentum=0.95, epsilon=1e-4, use_running_average=not train)(x, mask=mask)
    x = Dropout(self.dropout)(x, train)
    return nn.relu(x)


class FcnNet(nn.Module):
  """`_fcn_net`: [Dense -> BN -> Dropout -> ReLU] per hidden size, then Dense(1). Returns (..., 1)."""
  layer_sizes: Sequence[int]
  dropout: float

  @nn.compact
  def __call__(self, x, row_mask, train: bool):
    for size in self.layer_sizes:
      x = nn.Dense(size, kernel_init=tnormal)(x)
      x = BNDropReLU(self.dropout)(x, row_mask, train)
    return nn.Dense(1, kernel_init=tnormal)(x)


class HistoryAttention(nn.Module):
  """`recommenders`' `_attention`: softmax_j((h_j W) . q) over the history, weighted sum of raw h_j.

  No target conditioning, no bias, no nonlinearity (as in the original). `mask_padding=False` reproduces the
  original's defect of attending to the padded positions too.
  """
  mask_padding: bool = True

  @nn.compact
  def __call__(self, hist, hist_mask):
    dim = hist.shape[-1]
    w = self.param("attention_mat", tnormal, (dim, dim))
    q = self.param("query", tnormal, (dim,))
    logits = (hist @ w) @ q
    if self.mask_padding:
      logits = jnp.where(hist_mask > 0, logits, -1e9)
    weights = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bl,bld->bd", weights, hist), weights


class ItemCateEmbed(nn.Module):
  """Item (32) and category (8) tables; lookups are concatenated to one 40-d vector per id pair."""
  num_items: int
  num_categories: int
  item_dim: int
  cate_dim: int

  def setup(self):
    self.item = nn.Embed(self.num_items, self.item_dim, embedding_init=tnormal, name="item_embedding")
    self.cate = nn.Embed(self.num_categories, self.cate_dim, embedding_init=tnormal, name="cate_embedding")

  def __call__(self, items, cates):
    return jnp.concatenate([self.item(items), self.cate(cates)], axis=-1)

  def items_only(self, items):
    return self.item(items)

  def history_and_candidates(self, batch):
    """(B, L, D) history and (B, C, D) candidate embeddings of a sequential CTR batch."""
    return self(batch["hist_item"], batch["hist_cate"]), self(batch["cand_item"], batch["cand_cate"])
