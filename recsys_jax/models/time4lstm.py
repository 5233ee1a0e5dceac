"""SLi-Rec's Time4LSTM cell (`recommenders`' `Time4LSTMCell`), run over the history with `lax.scan`.

Gates: Tn = tanh(tn w1 + b1) (time to now), Tl = tanh(tl w2 + b2) (time from the first action);
  Sn = x Wx1 + Tn Wt1 + c1, Sl = x Wx2 + Tl Wt2 + c2; [i, j, f, o] = [x, h] K + bK; o += Tn O1 + Tl O2;
  c' = sigmoid(f + 1) sigmoid(Sl) c + sigmoid(i) sigmoid(Sn) tanh(j); h' = sigmoid(o) tanh(c').
Everything not depending on h is computed for all steps at once before the scan; the scan only does the
recurrent h K_h product. Outputs past a row's length are 0, as with dynamic_rnn's `sequence_length`.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

from recsys_jax.models.layers import glorot, glorot_vector


class Time4LSTM(nn.Module):
  hidden: int

  @nn.compact
  def __call__(self, x, time_now, time_first, mask):
    """x (B, L, E), time_now/time_first/mask (B, L) -> outputs (B, L, H)."""
    h_dim, e_dim = self.hidden, x.shape[-1]
    p = lambda name, shape, init=glorot: self.param(name, init, shape)  # noqa: E731
    w1, b1, w2, b2 = (p(n, (h_dim,), glorot_vector) for n in ("w1", "b1", "w2", "b2"))
    wx1, wx2 = p("Wx1", (e_dim, h_dim)), p("Wx2", (e_dim, h_dim))
    wt1, wt2 = p("Wt1", (h_dim, h_dim)), p("Wt2", (h_dim, h_dim))
    c1, c2 = p("c1", (h_dim,), glorot_vector), p("c2", (h_dim,), glorot_vector)
    kernel = p("K", (e_dim + h_dim, 4 * h_dim))
    k_bias = self.param("bK", nn.initializers.zeros, (4 * h_dim,))
    o1, o2 = p("O1", (h_dim, h_dim)), p("O2", (h_dim, h_dim))

    t_now = jnp.tanh(time_now[..., None] * w1 + b1)        # (B, L, H)
    t_long = jnp.tanh(time_first[..., None] * w2 + b2)
    in_gate_time = jax.nn.sigmoid(x @ wx1 + t_now @ wt1 + c1)
    carry_gate_time = jax.nn.sigmoid(x @ wx2 + t_long @ wt2 + c2)
    x_gates = x @ kernel[:e_dim] + k_bias                  # (B, L, 4H)
    o_time = t_now @ o1 + t_long @ o2
    h_kernel = kernel[e_dim:]

    def step(carry, inputs):
      c, h = carry
      xg, ig_t, cg_t, ot = inputs
      i, j, f, o = jnp.split(xg + h @ h_kernel, 4, axis=-1)
      c = jax.nn.sigmoid(f + 1.0) * cg_t * c + jax.nn.sigmoid(i) * ig_t * jnp.tanh(j)
      h = jax.nn.sigmoid(o + ot) * jnp.tanh(c)
      return (c, h), h

    batch = x.shape[0]
    zeros = jnp.zeros((batch, h_dim), x.dtype)
    time_major = lambda a: jnp.swapaxes(a, 0, 1)  # noqa: E731
    xs = tuple(map(time_major, (x_gates, in_gate_time, carry_gate_time, o_time)))
    _, out = jax.lax.scan(step, (zeros, zeros), xs)
    # Histories are left-aligned and the final state is unused, so instead of freezing the state past each
    # row's length (dynamic_rnn) it is enough to zero those outputs: outputs before the length are the same.
    return time_major(out) * mask[..., None]
