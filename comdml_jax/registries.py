"""Every registry by name, with a one-line description of each entry (``experiments/list.py``).

The registries themselves live with what they hold (models in
``models/resnet.py``, methods in ``methods/base.py``, ...); this module only
gathers them for listing.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Mapping


def _first_line(doc: str | None) -> str:
    """The first sentence-line of a docstring (up to the first blank line), joined."""
    if not doc:
        return ""
    para = inspect.cleandoc(doc).split("\n\n", 1)[0]
    return " ".join(line.strip() for line in para.splitlines())


def _module_entry(module_doc: str | None, key: str) -> str:
    """The first sentence after ````key``:`` in a module docstring's list of entries."""
    if not module_doc:
        return ""
    lines = inspect.cleandoc(module_doc).splitlines()
    pat = re.compile(rf"^\s*-?\s*``{re.escape(key)}``\s*(?:\([^)]*\))?\s*:\s*(.*)$")
    for i, line in enumerate(lines):
        m = pat.match(line)
        if not m:
            continue
        text = [m.group(1)]
        for more in lines[i + 1 :]:
            if not more.strip() or more.lstrip().startswith("-"):
                break
            text.append(more.strip())
        joined = " ".join(text)
        end = re.search(r"\.(\s|$)", joined)
        return joined[: end.start() + 1] if end else joined
    return ""


def describe(key: str, obj, registry_module: str = "") -> str:
    """A one-line description of one registry entry.

    The first found of: the object's docstring; the docstring of a function
    named ``key`` in the object's module (registries of lambdas); the
    ````key``: ...`` line of the registry module's docstring; the object's own
    module docstring (one module per entry, as for methods).

    Args:
      key: the registry name.
      obj: the registered object (class, function, spec).
      registry_module: the module that holds the registry.

    Returns:
      One line, possibly empty.
    """
    if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismethod(obj):
        text = _first_line(obj.__doc__)
        if text:
            return text
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    same_name = getattr(module, key, None) if module else None
    if callable(same_name) and same_name is not obj and same_name.__doc__:
        return _first_line(same_name.__doc__)
    reg = sys.modules.get(registry_module)
    text = _module_entry(getattr(reg, "__doc__", None), key)
    if text:
        return text
    if module is not None and module.__name__ != registry_module:
        return _first_line(module.__doc__)
    return ""


def _model_line(name: str, builder: Callable) -> str:
    from comdml_jax.models.resnet import build_model

    text = _first_line(builder.__doc__)
    model = build_model(name, conv_impl="xla", bn_impl="plain")  # no device query
    kind = "basic-block" if name.endswith("_basic") else "bottleneck"
    shape = f"{kind} ResNet, {sum(model.stage_layers)} weight layers in {model.num_stages} stages"
    return f"{text} ({shape})" if text else shape


def _dataset_line(spec) -> str:
    valid = ", has a valid split (data.include_valid)" if spec.has_valid else ""
    return f"{spec.num_classes} classes, source version {spec.version}{valid}"


def registries() -> dict[str, dict[str, str]]:
    """Registry name -> {entry name -> one-line description}, each sorted by entry name.

    Returns:
      ``models``, ``methods``, ``schedulers``, ``datasets``, ``partitions``,
      ``topologies`` and ``allreduce`` (the config field each one is chosen by is
      in :data:`CONFIG_FIELDS`).
    """
    import comdml_jax.system  # noqa: F401  (registers the exact scheduler)
    from comdml_jax.data.partition import PARTITIONS
    from comdml_jax.data.sources import DATASETS
    from comdml_jax.methods import METHODS
    from comdml_jax.models.resnet import MODELS
    from comdml_jax.system.scheduler import SCHEDULERS
    from comdml_jax.system.timing import ALLREDUCE
    from comdml_jax.system.topology import TOPOLOGIES

    def table(reg: Mapping, module: str, line=None) -> dict[str, str]:
        return {k: (line(k, v) if line else describe(k, v, module)) for k, v in sorted(reg.items())}

    return {
        "models": table(MODELS, "comdml_jax.models.resnet", _model_line),
        "methods": table(METHODS, "comdml_jax.methods.base"),
        "schedulers": table(SCHEDULERS, "comdml_jax.system.scheduler"),
        "datasets": table(DATASETS, "comdml_jax.data.sources", lambda k, v: _dataset_line(v)),
        "partitions": table(PARTITIONS, "comdml_jax.data.partition"),
        "topologies": table(TOPOLOGIES, "comdml_jax.system.topology"),
        "allreduce": table(ALLREDUCE, "comdml_jax.system.timing"),
    }


CONFIG_FIELDS = {
    "models": "model.name",
    "methods": "method",
    "schedulers": "system.scheduler",
    "datasets": "data.name",
    "partitions": "data.partition",
    "topologies": "system.topology.kind",
    "allreduce": "system.allreduce",
}
