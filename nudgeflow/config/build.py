"""From a loaded configuration to the pure engine: the one way every caller builds it.

The worker, the backtest and the bench all build their `Engine` here, so a rule behaves
the same live and in a replay. The HMAC secrets (discount codes; tracked links and open
pixels, engine/links.py) come from the environment only and are never logged
(docs/architecture.md, "Secrets").
"""

from __future__ import annotations

import logging
import os

from nudgeflow.config.loader import NudgeflowConfig
from nudgeflow.config.settings import WorkerSettings
from nudgeflow.engine.core import Engine
from nudgeflow.engine.durations import parse_duration
from nudgeflow.engine.links import LinkSigner
from nudgeflow.engine.rules import under_budget
from nudgeflow.engine.sandbox.budget import DEFAULT_BUDGET, Budget
from nudgeflow.engine.templates import Templates

log = logging.getLogger(__name__)

SECRET_ENV = "NUDGEFLOW_SECRET"
LINK_SECRET_ENV = "NUDGEFLOW_LINK_SECRET"
DEV_SECRET = b"nudgeflow-dev-secret-change-me"


def engine_secret(*, warn: bool = True) -> bytes:
    """`NUDGEFLOW_SECRET`, or the development secret (with a warning) when it is unset."""
    secret = os.environ.get(SECRET_ENV)
    if secret:
        return secret.encode()
    if warn:
        log.warning("%s is not set; using the development secret", SECRET_ENV)
    return DEV_SECRET


def link_secret() -> bytes:
    """`NUDGEFLOW_LINK_SECRET` (rotating it voids the links already sent), else the engine
    secret (the signer derives its own key from it, engine/links.py)."""
    secret = os.environ.get(LINK_SECRET_ENV)
    return secret.encode() if secret else engine_secret(warn=False)


def link_signer(settings: WorkerSettings) -> LinkSigner:
    """The worker's signer: its secret, public base URL and TTL (settings)."""
    return LinkSigner(link_secret(), settings.link_base(), parse_duration(settings.link_ttl))


def build_engine(
    config: NudgeflowConfig,
    *,
    secret: bytes,
    budget: Budget = DEFAULT_BUDGET,
    links: LinkSigner | None = None,
) -> Engine:
    """The engine for `config`: its rules, limits, and templates rendered under `budget`;
    `track_link` / `track_open` sign with `links` (default: `secret`, a local base URL)."""
    templates = Templates(
        config.templates_dir,
        secret=secret,
        inline=config.inline_templates,
        budget=budget,
        links=links,
    )
    rules = under_budget(config.rules, budget)  # expressions under the same budget
    return Engine(rules, config.limits, templates, dedupe=config.dedupe)
