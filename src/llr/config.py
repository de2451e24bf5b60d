"""Config validation: the JSON schema in workflow/schemas plus checks the
schema cannot express, each failure reported in one line naming the key."""

from __future__ import annotations

from pathlib import Path

import yaml

from llr.errors import LLRError

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def _key(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def validate_schema(config: dict, schema_path: str | Path = SCHEMA) -> None:
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if not errors:
        return
    e = errors[0]
    key = _key(e.absolute_path)
    if e.validator == "additionalProperties":
        allowed = sorted(e.schema.get("properties", {}))
        extra = sorted(set(e.instance) - set(allowed))
        pat = e.schema.get("patternProperties")
        where = "" if key == "<top level>" else f" under {key}"
        hint = f"allowed: {', '.join(allowed)}" if allowed else f"allowed names match {list(pat or {})}"
        raise LLRError(f"config: unknown key {extra[0]!r}{where}; {hint}")
    if e.validator == "enum":
        raise LLRError(f"config: {key} = {e.instance!r} not allowed; expected one of {e.validator_value}")
    if e.validator == "required":
        raise LLRError(f"config: {e.message} (at {key})")
    desc = e.schema.get("description")
    raise LLRError(f"config: {key} = {e.instance!r} is invalid: {e.message}" + (f" ({desc})" if desc else ""))


def check_config(config: dict, schema_path: str | Path = SCHEMA) -> None:
    """Schema validation, then cross-key checks."""
    from llr.data import DATASETS

    validate_schema(config, schema_path)
    for ds in config["datasets"]:
        if ds not in DATASETS:
            raise LLRError(f"config: datasets lists {ds!r}; expected names from {sorted(DATASETS)}")
        if ds not in config.get("erm", {}):
            raise LLRError(f"config: erm.{ds} missing; every dataset needs its ERM settings")
        if DATASETS[ds].synthetic and ds not in config.get("synthetic", {}):
            raise LLRError(f"config: synthetic.{ds} missing; a synthetic dataset needs its generator settings")
    if len(set(config["seeds"])) != len(config["seeds"]):
        raise LLRError(f"config: seeds {config['seeds']} contain duplicates")
