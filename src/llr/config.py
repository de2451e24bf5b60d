"""Config validation: the JSON schema in workflow/schemas plus checks the
schema cannot express, each failure reported in one line naming the key."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import yaml

from llr.errors import LLRError

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INT = re.compile(r"[+-]?\d+")


def _key(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def _suggest(name: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_key(e) -> LLRError:
    """additionalProperties failure: name the key that is not a property,
    with the closest allowed name."""
    props = sorted(e.schema.get("properties", {}))
    extra = sorted(k for k in e.instance if k not in props)
    key = _key(e.absolute_path)
    where = "" if key == "<top level>" else f" under {key}"
    bad = extra[0] if extra else "?"
    return LLRError(f"config: unknown key {bad!r}{where}{_suggest(bad, props)}; allowed: {', '.join(props)}")


def _type_hint(value) -> str:
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return (
            f" (a number given as the string {value!r}: YAML reads 1e-3 as a string, write 1.0e-3; "
            f"on the command line --config passes numbers through as they are)"
        )
    return ""


def validate_schema(config: dict, schema_path: str | Path = SCHEMA) -> None:
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(
        validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path)))
    )
    if not errors:
        return
    e = errors[0]
    key = _key(e.absolute_path)
    if e.validator == "additionalProperties":
        raise _unknown_key(e)
    if e.validator == "enum":
        raise LLRError(f"config: {key} = {e.instance!r} not allowed; expected one of {e.validator_value}")
    if e.validator == "required":
        raise LLRError(f"config: {e.message} (at {key})")
    desc = e.schema.get("description")
    raise LLRError(
        f"config: {key} = {e.instance!r} is invalid: {e.message}"
        + _type_hint(e.instance)
        + (f" ({desc})" if desc else "")
    )


def _coerce_numbers(config: dict) -> None:
    """``--config seeds=[1,2]`` reaches the workflow as strings: turn numeric
    strings of the list-valued number keys into numbers, in place."""
    for key, pattern, cast in (("seeds", _INT, int), ("group_ratios", _NUMBER, float)):
        vals = config.get(key)
        if isinstance(vals, (list, tuple)):
            config[key] = [cast(v.strip()) if isinstance(v, str) and pattern.fullmatch(v.strip()) else v for v in vals]
    if isinstance(config.get("threads"), str) and _INT.fullmatch(config["threads"].strip()):
        config["threads"] = int(config["threads"])


def check_config(config: dict, schema_path: str | Path = SCHEMA) -> None:
    """Schema validation, then cross-key checks, then the plugins (imported:
    they register their methods), then every last-layer method's
    hyper-parameters (so that a typo fails before any job runs)."""
    from llr.data.registry import DATASETS

    _coerce_numbers(config)
    validate_schema(config, schema_path)
    for ds in config.get("erm", {}):
        if ds not in DATASETS:
            raise LLRError(
                f"config: unknown key {ds!r} under erm{_suggest(ds, sorted(DATASETS))}; "
                f"expected dataset names from {sorted(DATASETS)}"
            )
    for i, ds in enumerate(config["datasets"]):
        if ds not in DATASETS:
            raise LLRError(
                f"config: datasets[{i}] = {ds!r} is not a registered dataset{_suggest(ds, sorted(DATASETS))}; "
                f"expected one of {sorted(DATASETS)}"
            )
        if ds not in config.get("erm", {}):
            raise LLRError(f"config: erm.{ds} missing; every dataset needs its ERM settings")
        if DATASETS[ds].synthetic and ds not in config.get("synthetic", {}):
            raise LLRError(f"config: synthetic.{ds} missing; a synthetic dataset needs its generator settings")
    if len(set(config["seeds"])) != len(config["seeds"]):
        raise LLRError(f"config: seeds {config['seeds']} contain duplicates")
    from llr.plugins import load_plugin

    for i, spec in enumerate(config.get("plugins") or []):
        try:
            load_plugin(spec)
        except LLRError as e:
            raise LLRError(f"config: plugins[{i}]: {e}") from None
    from llr.lastlayer.registry import check_method_params

    for name, params in (config.get("lastlayer") or {}).items():
        try:
            check_method_params(name, params or {})
        except LLRError as e:
            raise LLRError(f"config: lastlayer.{name}: {e}") from None
