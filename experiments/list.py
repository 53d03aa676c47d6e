"""Lists the registered models, methods, schedulers, data sets, partitions, topologies, AllReduces.

    python -m experiments.list            # all registries, one line per entry
    python -m experiments.list methods    # one registry
    python -m experiments.list --json     # machine-readable

Each entry is what its config field accepts (e.g. ``--config.model.name=resnet20_basic``).
"""

from __future__ import annotations

import argparse
import json
import sys


def format_registries(tables: dict[str, dict[str, str]], fields: dict[str, str]) -> str:
    """Plain-text listing: a heading per registry (with its config field), one line per entry."""
    out = []
    for reg, entries in tables.items():
        out.append(f"{reg} (--config.{fields[reg]}):")
        width = max((len(k) for k in entries), default=0)
        for k, text in entries.items():
            out.append(f"  {k:<{width}}  {text}".rstrip())
        out.append("")
    return "\n".join(out)


def render(names: list[str], as_json: bool = False) -> str:
    """The listing of the registries ``names`` (all when empty), as text or JSON.

    Raises:
      ValueError: an unknown registry name.
    """
    from comdml_jax.registries import CONFIG_FIELDS, registries

    tables = registries()
    unknown = [n for n in names if n not in tables]
    if unknown:
        raise ValueError(f"unknown registry {unknown}; choose from {', '.join(tables)}")
    if names:
        tables = {k: tables[k] for k in names}
    return json.dumps(tables, indent=2) if as_json else format_registries(tables, CONFIG_FIELDS)


def main(argv: list[str] | None = None) -> int:
    # argparse, not absl flags: importing this module must not define flags that
    # another launcher (experiments.plan's --json) defines too.
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("registries", nargs="*", help="registries to list (default: all)")
    p.add_argument("--json", action="store_true", help="print {registry: {name: description}}")
    args = p.parse_args(argv)
    try:
        print(render(args.registries, args.json))
    except ValueError as err:
        p.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
