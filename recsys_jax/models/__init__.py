"""Models, registered by name. Importing this package registers every built-in model."""
from recsys_jax.models import registry
from recsys_jax.models.registry import get, names, register

# Built-in models register themselves on import.
from recsys_jax.models import popularity  # noqa: F401,E402
from recsys_jax.models import a2svd  # noqa: F401,E402
from recsys_jax.models import slirec  # noqa: F401,E402
from recsys_jax.models import parsrec  # noqa: F401,E402

__all__ = ["registry", "get", "names", "register"]
