"""Privacy options (SPEC §8, paper Sec. IV-C and V-B4), all off by default.

* :mod:`~comdml_jax.privacy.config`: ``config.privacy`` validation and the hashable
  :class:`~comdml_jax.privacy.config.PrivacySpec`.
* :mod:`~comdml_jax.privacy.dp`: differential privacy on model updates, clip and noise
  as optax ``(init, update)`` transforms, local or central.
* :mod:`~comdml_jax.privacy.accounting`: ε at δ over rounds with dp-accounting.
* :mod:`~comdml_jax.privacy.nopeek`: the sample distance correlation of NoPeek's loss.
* :mod:`~comdml_jax.privacy.shuffle`: patch shuffling of the sent activation.

NoPeek and patch shuffling act inside the slow/pair training steps
(:mod:`comdml_jax.train.steps`); DP acts on the updates between training and merging.
"""

from comdml_jax.privacy.config import DpSpec, PrivacySpec, step_privacy, validate_privacy

__all__ = ["DpSpec", "PrivacySpec", "step_privacy", "validate_privacy"]
