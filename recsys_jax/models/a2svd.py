"""A2SVD (asynchronous SVD with attention), as in `recommenders`' `asvd.py`.

user = attention-weighted sum of history (item ⊕ category) embeddings; logit = FcnNet([user, target]).
"""
import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from recsys_jax.models import registry
from recsys_jax.models.layers import FcnNet, HistoryAttention, ItemCateEmbed


@dataclasses.dataclass(frozen=True)
class A2SVDConfig:
  num_items: int = 1
  num_categories: int = 1
  item_embedding_dim: int = 32
  cate_embedding_dim: int = 8
  attention_size: int = 40  # must equal item + category dims, as in the original
  layer_sizes: tuple[int, ...] = (100, 64)
  dropout: float = 0.3
  # Reproduce the original's attention over padded history positions (default: masked).
  original_quirks: bool = False

  def __post_init__(self):
    if self.attention_size != self.item_embedding_dim + self.cate_embedding_dim:
      raise ValueError("attention_size must equal item_embedding_dim + cate_embedding_dim")


class A2SVD(nn.Module):
  config: A2SVDConfig

  @nn.compact
  def __call__(self, batch, train: bool):
    c = self.config
    embed = ItemCateEmbed(c.num_items, c.num_categories, c.item_embedding_dim, c.cate_embedding_dim)
    hist, target = embed.history_and_candidates(batch)                # (B, L, D), (B, C, D)
    user, _ = HistoryAttention(mask_padding=not c.original_quirks)(hist, batch["hist_mask"])
    user = jnp.broadcast_to(user[:, None, :], target.shape)
    logit = FcnNet(c.layer_sizes, c.dropout)(jnp.concatenate([user, target], -1), batch["weight"], train)
    return logit[..., 0]                                              # (B, C)


registry.linen_model("a2svd", "sequential_ctr", A2SVDConfig, A2SVD,
                     description="A2SVD: attention over history item/category embeddings (recommenders)")
