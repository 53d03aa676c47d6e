"""Training methods, each a planner + pricer over the shared engine (registry by name)."""

from comdml_jax.methods import allreduce, comdml  # noqa: F401  (registration)
from comdml_jax.methods.base import METHODS, Method, get_method

__all__ = ["METHODS", "Method", "get_method"]
