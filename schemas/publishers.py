"""The publishers file (`--publishers FILE`): who may `POST /topics/<name>`, with which bearer token, where to.

```yaml
publishers:
  - name: shop-backend
    tokenFrom: {env: SHOP_TOKEN}        # or {file: /var/run/secrets/shop-token}
    topics: ["orders.>", "payments.*"]  # NATS-style wildcards, also for Kafka topic names
```
The file holds where each token comes from, never the token itself (it may live in a ConfigMap).
"""

from __future__ import annotations

from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class TokenFrom(_Model):
    """An environment variable or a file (a mounted Kubernetes Secret) holding the token."""

    env: str | None = Field(default=None, min_length=1)
    file: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> TokenFrom:
        if (self.env is None) == (self.file is None):
            raise ValueError("set exactly one of env, file")
        return self


def _check_pattern(p: str) -> str:
    tokens = p.split(".")
    if any(t == "" for t in tokens):
        raise ValueError(f"topic pattern {p!r} has an empty token")
    if ">" in tokens[:-1] or any((">" in t or "*" in t) and t not in (">", "*") for t in tokens):
        raise ValueError(f"topic pattern {p!r}: `*` is a whole token, `>` only the last token")
    return p


TopicPattern = Annotated[str, Field(min_length=1)]


class Publisher(_Model):
    name: str = Field(min_length=1)
    token_from: TokenFrom
    topics: list[TopicPattern] = Field(min_length=1)

    @model_validator(mode="after")
    def _patterns(self) -> Publisher:
        for p in self.topics:
            _check_pattern(p)
        return self


class PublishersFile(_Model):
    publishers: list[Publisher] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> PublishersFile:
        seen: set[str] = set()
        for p in self.publishers:
            if p.name in seen:
                raise ValueError(f"publisher name {p.name!r} appears twice")
            seen.add(p.name)
        return self


class PublishersFileError(ValueError):
    """The publishers file is unreadable or invalid; the message names the file and the field."""


def parse_publishers(text: str, origin: str) -> PublishersFile:
    """Parse the YAML text of a publishers file; errors name `origin` and the field path."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PublishersFileError(f"{origin}: not valid YAML: {exc}") from None
    try:
        return PublishersFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise PublishersFileError(f"{origin}: {where}: {first['msg']}{more}") from None
