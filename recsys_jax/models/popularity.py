"""Popularity baseline under the sequential CTR protocol: one learned bias per item, no history."""
import dataclasses

import flax.linen as nn

from recsys_jax.models import registry


@dataclasses.dataclass(frozen=True)
class PopularityConfig:
  num_items: int = 1


class Popularity(nn.Module):
  config: PopularityConfig

  @nn.compact
  def __call__(self, batch, train: bool):
    bias = nn.Embed(self.config.num_items, 1, embedding_init=nn.initializers.zeros, name="item_bias")
    return bias(batch["cand_item"])[..., 0]


registry.linen_model("popularity", "sequential_ctr", PopularityConfig, Popularity,
                     description="learned per-item bias trained with the group softmax: a popularity baseline")
