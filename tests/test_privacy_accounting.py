"""ε accounting over rounds (comdml_jax.privacy.accounting)."""

import math

import dp_accounting
import pytest
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant
from scipy.stats import norm

from comdml_jax.privacy import accounting
from comdml_jax.privacy.accounting import Accountant
from configs import default
from configs import privacy as privacy_configs


def _direct(mechanism: str, multiplier: float, q: float, rounds: int, delta: float) -> float:
    """dp_accounting on the events written out here, independently of the module."""
    if mechanism == "gaussian":
        event, acc = (
            dp_accounting.GaussianDpEvent(multiplier),
            rdp_privacy_accountant.RdpAccountant(),
        )
    else:
        event, acc = (
            dp_accounting.LaplaceDpEvent(multiplier),
            pld_privacy_accountant.PLDAccountant(),
        )
    if q < 1:
        event = dp_accounting.PoissonSampledDpEvent(q, event)
    acc.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return acc.get_epsilon(delta)


@pytest.mark.parametrize("mechanism, multiplier", [("gaussian", 1.1), ("laplace", 2.0)])
@pytest.mark.parametrize("q", [0.2, 1.0])
def test_equals_dp_accounting_on_the_same_events(mechanism, multiplier, q):
    acc = Accountant(mechanism, multiplier, q, 1e-5)
    for rounds in (1, 7, 30):
        assert acc.epsilon_after(rounds) == _direct(mechanism, multiplier, q, rounds, 1e-5)


@pytest.mark.parametrize("mechanism, multiplier", [("gaussian", 1.1), ("laplace", 2.0)])
def test_epsilon_grows_with_rounds_and_sampling_amplifies(mechanism, multiplier):
    acc = Accountant(mechanism, multiplier, 0.2, 1e-5)
    eps = [acc.epsilon_after(r) for r in range(0, 8)]
    assert eps[0] == 0.0
    assert all(b > a for a, b in zip(eps, eps[1:], strict=False))
    full = Accountant(mechanism, multiplier, 1.0, 1e-5)
    assert all(acc.epsilon_after(r) < full.epsilon_after(r) for r in (1, 5))


def test_one_unsampled_laplace_round_is_pure_epsilon():
    # Laplace(C / eps) on an L1-sensitivity-C query is eps-DP, so eps(delta) <= 0.5,
    # and for delta = 1e-5 it is barely below.
    eps = Accountant("laplace", 1 / 0.5, 1.0, 1e-5).epsilon_after(1)
    assert 0.49 < eps <= 0.5 + 1e-9


def test_one_unsampled_gaussian_round_bounds_the_exact_curve():
    # Balle & Wang (2018): the Gaussian mechanism's exact delta(eps) =
    # Phi(1/(2s) - eps s) - e^eps Phi(-1/(2s) - eps s). RDP's eps is an upper bound:
    # its delta is <= the target, and it is not loose by more than 30%.
    sigma, delta = 1.0, 1e-5

    def exact_delta(e):
        return norm.cdf(0.5 / sigma - e * sigma) - math.exp(e) * norm.cdf(-0.5 / sigma - e * sigma)

    eps = Accountant("gaussian", sigma, 1.0, delta).epsilon_after(1)
    assert exact_delta(eps) <= delta
    lo, hi = 0.0, 20.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if exact_delta(mid) <= delta else (mid, hi)
    assert hi <= eps < 1.3 * hi


def test_no_noise_gives_infinite_epsilon():
    assert math.isinf(Accountant("gaussian", 0.0, 0.2, 1e-5).epsilon_after(3))
    assert math.isinf(Accountant("laplace", 0.0, 1.0, 1e-5).epsilon_after(1))


def test_resuming_reports_the_same_epsilon():
    acc = Accountant("laplace", 2.0, 0.2, 1e-5)
    before = [acc.epsilon_after(r) for r in (3, 4)]
    accounting._epsilon.cache_clear()  # a fresh process after a restore
    again = Accountant("laplace", 2.0, 0.2, 1e-5)
    assert [again.epsilon_after(r) for r in (3, 4)] == before


def test_accountant_from_config():
    c = default.get_config()
    assert accounting.accountant_from_config(c) is None
    assert accounting.epsilon_metrics(None, 3) == {}
    c = privacy_configs.get_config("dp")
    acc = accounting.accountant_from_config(c)
    assert acc == Accountant("laplace", 2.0, 0.2, 1e-5)
    metrics = accounting.epsilon_metrics(acc, 5)
    assert metrics == {"dp_epsilon": acc.epsilon_after(5), "dp_delta": 1e-5}
    c.privacy.dp.mechanism = "gaussian"
    c.privacy.dp.noise_multiplier = 0.8
    assert accounting.accountant_from_config(c) == Accountant("gaussian", 0.8, 0.2, 1e-5)


@pytest.mark.parametrize(
    "agents, participation, q", [(100, 0.2, 0.2), (7, 0.5, 4 / 7), (10, 1.0, 1.0), (3, 0.01, 1 / 3)]
)
def test_sampling_rate_is_the_drawn_fraction(agents, participation, q):
    # comdml_jax.system.world.sampled_at draws max(1, round(participation * K)) agents.
    c = default.get_config()
    c.num_agents, c.participation = agents, participation
    assert accounting.sampling_rate(c) == pytest.approx(q)


def test_bad_accountant_arguments_are_refused():
    with pytest.raises(ValueError, match="mechanism"):
        Accountant("none", 1.0, 1.0, 1e-5)
    with pytest.raises(ValueError, match="sampling_rate"):
        Accountant("gaussian", 1.0, 0.0, 1e-5)
