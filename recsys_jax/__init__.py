"""recsys_jax: recommender systems as pure JAX functions on numpy data pipelines."""

__version__ = "0.1.0"
