"""From a loaded configuration to the pure engine: the one way every caller builds it.

The worker, the backtest and the bench all build their `Engine` here, so a rule behaves
the same live and in a replay. The HMAC secret (discount codes, signed links) comes from
the environment only and is never logged (docs/architecture.md, "Secrets").
"""

from __future__ import annotations

import logging
import os

from nudgeflow.config.loader import NudgeflowConfig
from nudgeflow.engine.core import Engine
from nudgeflow.engine.sandbox.budget import DEFAULT_BUDGET, Budget
from nudgeflow.engine.templates import Templates

log = logging.getLogger(__name__)

SECRET_ENV = "NUDGEFLOW_SECRET"
DEV_SECRET = b"nudgeflow-dev-secret-change-me"


def engine_secret(*, warn: bool = True) -> bytes:
    """`NUDGEFLOW_SECRET`, or the development secret (with a warning) when it is unset."""
    secret = os.environ.get(SECRET_ENV)
    if secret:
        return secret.encode()
    if warn:
        log.warning("%s is not set; using the development secret", SECRET_ENV)
    return DEV_SECRET


def build_engine(
    config: NudgeflowConfig, *, secret: bytes, budget: Budget = DEFAULT_BUDGET
) -> Engine:
    """The engine for `config`: its rules, limits, and templates rendered under `budget`."""
    templates = Templates(
        config.templates_dir, secret=secret, inline=config.inline_templates, budget=budget
    )
    return Engine(config.rules, config.limits, templates, dedupe=config.dedupe)
