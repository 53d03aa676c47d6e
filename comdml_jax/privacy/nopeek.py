"""NoPeek: the sample distance correlation between the input and the sent activation.

NoPeek (Vepakomma et al., 2020; paper Sec. V-B4, SPEC §8) makes the slow side's loss

    (1 - alpha) * CE(aux(z), y) + alpha * dCor(x, z),

so that the activation z the slow agent sends reveals less about its input x.
dCor is Székely, Rizzo & Bakirov's (2007) sample distance correlation over the
batch: with a_ij = |x_i - x_j| and b_ij = |z_i - z_j| (each sample flattened),
A and B the double-centred matrices (A_ij = a_ij - a_i. - a_.j + a_..),

    dCov²(x, z) = mean(A * B),   dCor²(x, z) = dCov²(x, z) / sqrt(dCov²(x, x) dCov²(z, z)).

Numerics. Pairwise squared distances come from the Gram matrix of the
batch-centred samples (distances do not change under translation, and centring
shrinks the norms the Gram form subtracts), clamped at 0, with an exact 0 on the
diagonal. ``eps`` sits inside every square root (the distances, the
normaliser and dCor itself), so the value and the gradient stay finite also for
a constant batch, where every distance is 0 (dCor is then ~sqrt(eps)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def _centred_distances(x: Array, eps: float) -> Array:
    """[B, B] double-centred distance matrix of the rows of ``x`` [B, D]."""
    x = x - jnp.mean(x, axis=0, keepdims=True)
    sq = jnp.sum(x * x, axis=1)
    gram = jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)  # no TF32 on GPU
    d2 = sq[:, None] + sq[None, :] - 2.0 * gram
    n = x.shape[0]
    d2 = jnp.where(jnp.eye(n, dtype=bool), 0.0, jnp.maximum(d2, 0.0))
    a = jnp.sqrt(d2 + eps)
    return a - a.mean(axis=0, keepdims=True) - a.mean(axis=1, keepdims=True) + a.mean()


def distance_correlation(x: Array, z: Array, eps: float = 1e-9) -> Array:
    """Sample distance correlation dCor(x, z) over the leading (batch) axis.

    Args:
      x: [B, ...] e.g. the slow agent's input images; flattened per sample.
      z: [B, ...] e.g. the activation at the cut; flattened per sample.
      eps: added inside every square root so that value and gradient are finite.

    Returns:
      A float32 scalar in [0, 1] (up to ~sqrt(eps)): 1 when z is a similarity
      transform of x (z = c Q x + b, Q orthogonal), near 0 when independent.
    """
    if x.shape[0] != z.shape[0]:
        raise ValueError(f"x and z need the same batch size; got {x.shape} and {z.shape}")
    x = x.reshape(x.shape[0], -1).astype(jnp.float32)
    z = z.reshape(z.shape[0], -1).astype(jnp.float32)
    a = _centred_distances(x, eps)
    b = _centred_distances(z, eps)
    dcov2_xz = jnp.mean(a * b)
    dvar2_x = jnp.mean(a * a)
    dvar2_z = jnp.mean(b * b)
    dcor2 = dcov2_xz / jnp.sqrt(dvar2_x * dvar2_z + eps)
    return jnp.sqrt(jnp.maximum(dcor2, 0.0) + eps)


def nopeek_loss(ce: Array, x: Array, z: Array, alpha: float) -> Array:
    """(1 - alpha) * ce + alpha * dCor(x, z) (NoPeek; SPEC §8)."""
    return (1.0 - alpha) * ce + alpha * distance_correlation(x, z)
