"""Evaluator.each: every agent's accuracy equals that agent's model evaluated alone."""

import jax
import jax.numpy as jnp
import numpy as np

from comdml_jax.models.resnet import build_model
from comdml_jax.train.evaluate import Evaluator


def test_each_equals_every_model_evaluated_alone():
    model = build_model("tiny", num_classes=10)
    inits = [model.init(k) for k in jax.random.split(jax.random.key(3), 3)]
    params = jax.tree.map(lambda *x: jnp.stack(x), *[p for p, _ in inits])
    stats = jax.tree.map(lambda *x: jnp.stack(x), *[s for _, s in inits])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 50)
    ev = Evaluator(model, x, y, (0.5,) * 3, (0.25,) * 3, batch_size=16)  # 16, 16, 16, 2
    for limit in (0, 37):
        got = ev.each(params, stats, limit)
        want = [ev(p, s, limit)[1] for p, s in inits]
        assert got.shape == (3,)
        np.testing.assert_array_equal(got, want)
    # and by hand for one agent: correct predictions over the first 37 images
    xs = (jnp.asarray(x[:37], jnp.float32) * (1.0 / 255.0) - 0.5) / 0.25
    logits, _ = model.apply(inits[1][0], inits[1][1], xs, False)
    by_hand = float(np.mean(np.argmax(np.asarray(logits), -1) == y[:37]))
    assert abs(ev.each(params, stats, 37)[1] - by_hand) < 1e-12
