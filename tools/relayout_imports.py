"""Rewrite pre-relayout genrouter module paths to their new homes (see docs/package-layout.md).

For a branch written before the package was laid out by feature: run from the repository root
after merging, then ``ruff check --fix`` (import order) and ``ruff format``. It rewrites
``genrouter._clock`` -> ``genrouter.engine._clock`` style references (imports, monkeypatch
strings, docs) and ``src/genrouter/_x.py`` paths in src, tests, bench, examples, deploy, docs,
README.md and pyproject.toml; in src, ``from genrouter.backends.fal import`` becomes
``from genrouter.backends.fal._backend import``. It moves no file: ``git mv`` a new root module
into its package yourself and add it to MOVES.

    python tools/relayout_imports.py
"""

import pathlib
import re

MOVES = {
    # engine
    "_execution": "engine._execution",
    "_attempts": "engine._attempts",
    "_abandoned": "engine._abandoned",
    "_eager": "engine._eager",
    "_deadline": "engine._deadline",
    "_progress": "engine._progress",
    "_backoff": "engine._backoff",
    "_clock": "engine._clock",
    "_virtual_time": "engine._virtual_time",
    "_testing_mode": "engine._testing_mode",
    "_webhook_hub": "engine._webhook_hub",
    "_completion": "engine._completion",  # h13b's branch adds it at the root: git mv it here
    # catalog
    "catalog": "catalog",
    "_catalog_params": "catalog._params",
    "_catalog_schema": "catalog._schema",
    "_pricing": "catalog._pricing",
    "_deployments": "catalog._deployments",
    "_workflows": "catalog._workflows",
    # batch
    "batch": "batch",
    "_batch_input": "batch._input",
    "_batch_report": "batch._report",
    "_manifest": "batch._manifest",
    # testing
    "testing": "testing",
    "_modal_testing": "testing._modal",
    "_comfy_testing": "testing._comfy",
    "_contract": "testing._contract",
    # webhooks
    "webhooks": "webhooks",
    "_standard_webhooks": "webhooks._standard",
    # cli
    "cli": "cli",
    "_live": "cli._live",
    "_models_listing": "cli._models_listing",
    # utilities
    "_lean_httpx": "util._lean_httpx",
    "_png": "util._png",
    "_media": "util._media",
    "_secrets": "util._secrets",
    "_header_rules": "util._header_rules",
    # backends, per provider
    "backends.fal": "backends.fal._backend",
    "backends._fal_translate": "backends.fal._translate",
    "backends._fal_storage": "backends.fal._storage",
    "backends.replicate": "backends.replicate._backend",
    "backends._replicate_translate": "backends.replicate._translate",
    "backends._replicate_files": "backends.replicate._files",
    "backends._replicate_reconcile": "backends.replicate._reconcile",
    "backends.modal": "backends.modal._backend",
    "backends._modal_sdk": "backends.modal._sdk",
    "backends._modal_capacity": "backends.modal._capacity",
    "backends._modal_cost": "backends.modal._cost",
    "backends.simulated": "backends.simulated._backend",
    "backends._sim_autoscale": "backends.simulated._autoscale",
}
PACKAGES_FROM_MODULE = {"catalog", "batch", "testing", "webhooks", "cli"}
PUBLIC_PROVIDER_PKGS = {"backends.fal", "backends.replicate", "backends.modal", "backends.simulated"}

SKIP = {"docs/package-layout.md", "tools/relayout_imports.py"}
KINDS = {".py", ".md", ".toml", ".yaml", ".txt", ".cfg"}


def _alternation(names: list[str]) -> str:
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


def main() -> None:
    dotted = {o: n for o, n in MOVES.items() if o != n and o not in PUBLIC_PROVIDER_PKGS}
    pat_dotted = re.compile(r"genrouter\.(" + _alternation(list(dotted)) + r")(?![\w])")
    pat_provider_src = re.compile(r"from genrouter\.(backends\.(?:fal|replicate|modal|simulated)) import")
    paths = {}
    for old, new in MOVES.items():
        old_path = "genrouter/" + old.replace(".", "/") + ".py"
        new_path = (
            "genrouter/" + new.replace(".", "/") + ("/__init__.py" if old in PACKAGES_FROM_MODULE else ".py")
        )
        if old_path != new_path:
            paths[old_path] = new_path
    pat_path = re.compile("(" + _alternation(list(paths)) + r")(?![\w])")
    pat_from_pkg = re.compile(r"from genrouter import _testing_mode\b")
    root = pathlib.Path(".")
    files = [
        p
        for d in ("src", "tests", "bench", "examples", "deploy", "docs")
        for p in root.joinpath(d).rglob("*")
        if p.suffix in KINDS and p.is_file()
    ]
    files += [root / "README.md", root / "pyproject.toml"]
    for f in files:
        if str(f) in SKIP:
            continue
        text = f.read_text()
        new = pat_dotted.sub(lambda m: "genrouter." + dotted[m.group(1)], text)
        new = pat_path.sub(lambda m: paths[m.group(1)], new)
        new = pat_from_pkg.sub("from genrouter.engine import _testing_mode", new)
        if str(f).startswith("src/"):
            new = pat_provider_src.sub(lambda m: f"from genrouter.{m.group(1)}._backend import", new)
        if new != text:
            f.write_text(new)
            print("rewrote", f)


if __name__ == "__main__":
    main()
