"""Training methods: each owns its state and merge, and plans and prices its rounds."""

from comdml_jax.methods import allreduce, braintorrent, comdml, dpsgd, fedavg, gossip  # noqa: F401
from comdml_jax.methods.base import (
    METHODS,
    GlobalModelMethod,
    GlobalState,
    Method,
    RoundContext,
    get_method,
)

__all__ = [
    "METHODS",
    "GlobalModelMethod",
    "GlobalState",
    "Method",
    "RoundContext",
    "get_method",
]
