"""The privacy section of a run config: its validation and a hashable spec (SPEC §8).

``config.privacy`` (see ``configs/default.py``) switches on three options, all off
by default: differential privacy on model updates (``privacy.dp``), NoPeek's
distance-correlation loss on the slow side (``privacy.nopeek``) and patch shuffling
of the activation sent to the fast side (``privacy.patch_shuffle``).

:class:`PrivacySpec` is the frozen, hashable form of that section. The training
steps read only its step options (NoPeek, patch shuffling), so
:meth:`PrivacySpec.for_steps` drops everything else: the step cache keys on it,
and a run with only DP on shares the compiled steps of a run with no privacy.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections

from comdml_jax.errors import ConfigError
from comdml_jax.errors import is_int as _is_int
from comdml_jax.errors import require as _require

# Names of the DP mechanisms and noise placements (registries live in privacy/dp.py).
DP_MECHANISMS = ("none", "gaussian", "laplace")
DP_PLACEMENTS = ("local", "central")


@dataclasses.dataclass(frozen=True)
class DpSpec:
    """Differential privacy on model updates, ``config.privacy.dp``.

    Attributes:
      mechanism: ``none``, ``gaussian`` (L2 clip, Gaussian noise) or ``laplace`` (L1
        clip, Laplace noise).
      placement: ``local`` (each agent noises its own update) or ``central`` (noise
        once on the aggregate).
      clip_norm: C, the L2 (gaussian) or L1 (laplace) bound of each agent's update;
        ``inf`` disables clipping.
      noise_multiplier: sigma (gaussian): noise std = sigma * sensitivity.
      epsilon_per_round: laplace: noise scale = sensitivity / epsilon_per_round.
      delta: the delta at which epsilon is reported.
    """

    mechanism: str = "none"
    placement: str = "local"
    clip_norm: float = 1.0
    noise_multiplier: float = 1.0
    epsilon_per_round: float = 0.5
    delta: float = 1e-5

    @property
    def enabled(self) -> bool:
        return self.mechanism != "none"

    @property
    def noise_multiplier_of_mechanism(self) -> float:
        """Noise scale relative to the sensitivity: sigma, or 1 / epsilon_per_round.

        This is dp_accounting's ``noise_multiplier`` of ``GaussianDpEvent`` and
        ``LaplaceDpEvent`` alike (the Laplace parameter b over the L1 sensitivity).
        """
        if self.mechanism == "gaussian":
            return float(self.noise_multiplier)
        if self.mechanism == "laplace":
            return 1.0 / float(self.epsilon_per_round)
        return 0.0

    def noise_scale(self, sensitivity: float) -> float:
        """Per-coordinate noise std (gaussian) or Laplace scale b (laplace)."""
        return self.noise_multiplier_of_mechanism * sensitivity


@dataclasses.dataclass(frozen=True)
class PrivacySpec:
    """All privacy options of a run, ``config.privacy``; hashable (a cache key).

    Attributes:
      dp: differential privacy on model updates.
      nopeek: the slow-side loss becomes (1 - alpha) CE + alpha dCor(x, z).
      nopeek_alpha: alpha.
      patch_shuffle: permute the p x p patches of the activation sent to the fast side.
      patch_size: p.
    """

    dp: DpSpec = DpSpec()
    nopeek: bool = False
    nopeek_alpha: float = 0.5
    patch_shuffle: bool = False
    patch_size: int = 2

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> PrivacySpec:
        """The spec of ``config.privacy``; a config without that section gives all-off.

        Args:
          config: a run config (``configs/default.py`` schema).

        Returns:
          The (unvalidated) spec; call :func:`validate_privacy` first.
        """
        p = config.get("privacy")
        if p is None:
            return cls()
        d = p.dp
        return cls(
            dp=DpSpec(
                mechanism=str(d.mechanism),
                placement=str(d.placement),
                clip_norm=float(d.clip_norm),
                noise_multiplier=float(d.noise_multiplier),
                epsilon_per_round=float(d.epsilon_per_round),
                delta=float(d.delta),
            ),
            nopeek=bool(p.nopeek),
            nopeek_alpha=float(p.nopeek_alpha),
            patch_shuffle=bool(p.patch_shuffle),
            patch_size=int(p.patch_size),
        )

    @property
    def steps_active(self) -> bool:
        """Whether any option changes the training steps (NoPeek or patch shuffling)."""
        return self.nopeek or self.patch_shuffle

    def for_steps(self) -> PrivacySpec | None:
        """The part the steps read, normalised; None when it changes nothing.

        Fields of options that are off take their defaults, so equal step programs
        have equal keys.
        """
        if not self.steps_active:
            return None
        default = PrivacySpec()
        return PrivacySpec(
            nopeek=self.nopeek,
            nopeek_alpha=self.nopeek_alpha if self.nopeek else default.nopeek_alpha,
            patch_shuffle=self.patch_shuffle,
            patch_size=self.patch_size if self.patch_shuffle else default.patch_size,
        )


def step_privacy(privacy: PrivacySpec | None) -> PrivacySpec | None:
    """:meth:`PrivacySpec.for_steps` that also accepts None."""
    return None if privacy is None else privacy.for_steps()


def _is_number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and not math.isnan(x)


def validate_privacy(config: ml_collections.ConfigDict) -> None:
    """Checks ``config.privacy``; raises :class:`ConfigError` naming the bad field.

    A config without a ``privacy`` section passes (everything off).

    Args:
      config: the run config.

    Raises:
      ConfigError: a value that cannot work, with the field, the value and the fix.
    """
    p = config.get("privacy")
    if p is None:
        return
    d = p.dp
    _require(
        d.mechanism in DP_MECHANISMS,
        "privacy.dp.mechanism",
        d.mechanism,
        f"choose one of {', '.join(DP_MECHANISMS)}",
    )
    _require(
        d.placement in DP_PLACEMENTS,
        "privacy.dp.placement",
        d.placement,
        f"choose one of {', '.join(DP_PLACEMENTS)}",
    )
    _require(
        _is_number(d.clip_norm) and d.clip_norm > 0,
        "privacy.dp.clip_norm",
        d.clip_norm,
        "use a bound > 0 (inf: no clipping)",
    )
    _require(
        _is_number(d.noise_multiplier) and 0 <= d.noise_multiplier < math.inf,
        "privacy.dp.noise_multiplier",
        d.noise_multiplier,
        "use a finite sigma >= 0 (0: no noise, no privacy)",
    )
    _require(
        _is_number(d.epsilon_per_round) and d.epsilon_per_round > 0,
        "privacy.dp.epsilon_per_round",
        d.epsilon_per_round,
        "use an epsilon > 0 (paper: 0.5; inf: no noise)",
    )
    _require(
        _is_number(d.delta) and 0 < d.delta < 1,
        "privacy.dp.delta",
        d.delta,
        "use a delta in (0, 1) (paper: 1e-5)",
    )
    for f in ("nopeek", "patch_shuffle"):
        _require(isinstance(p[f], bool), f"privacy.{f}", p[f], "use True or False")
    _require(
        _is_number(p.nopeek_alpha) and 0 <= p.nopeek_alpha <= 1,
        "privacy.nopeek_alpha",
        p.nopeek_alpha,
        "use a weight in [0, 1] (paper: 0.5)",
    )
    _require(
        _is_int(p.patch_size) and p.patch_size >= 1,
        "privacy.patch_size",
        p.patch_size,
        "use an integer >= 1 (default 2)",
    )


__all__ = [
    "DP_MECHANISMS",
    "DP_PLACEMENTS",
    "ConfigError",
    "DpSpec",
    "PrivacySpec",
    "step_privacy",
    "validate_privacy",
]
