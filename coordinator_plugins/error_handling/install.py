"""``setup(app, coordinator, config)``, the aiohttp-extension entry point of the plugin, and
``install_enhanced_error_handling(coordinator, config)``, the seed's: each creates an
integration and attaches it to the app (``plugin.attach``)."""

from __future__ import annotations

import atexit
import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from coordinator_plugins.error_handling.config import ErrorHandlingConfig, validate_config
from coordinator_plugins.error_handling.integration import EnhancedErrorHandlingIntegration
from coordinator_plugins.error_handling.plugin import NOT_ATTACHED, attach, check_app

logger = logging.getLogger(__name__)


def setup(
    app: web.Application, coordinator: Any = None, config: Mapping[str, Any] | ErrorHandlingConfig | None = None
) -> EnhancedErrorHandlingIntegration:
    """Install error handling on ``app``: routes, middleware, lifetime. Call before the app starts."""
    check_app(app)  # before anything is opened
    cfg = validate_config(config)
    integ = EnhancedErrorHandlingIntegration(coordinator, cfg)
    attach(integ, app)
    if coordinator is not None:
        coordinator.enhanced_error_handling = integ
    logger.info("error handling installed (database %s, selection %s)", cfg.database, cfg.selection)
    return integ


setup.validate_config = validate_config  # type: ignore[attr-defined]  # used by load_plugins


def _attach_when_app_is_set(coordinator: Any, integ: EnhancedErrorHandlingIntegration) -> bool:
    """Make ``coordinator.app = web.Application()`` attach ``integ`` to that app, as the seed
    coordinator's order needs (it installs in ``__init__`` and creates its app later). Done by
    giving the instance a subclass of its own class whose ``__setattr__`` watches ``app``. False
    when the class cannot be subclassed that way (slots, extension types): then the caller must
    call ``integration.attach(app)``."""
    cls = type(coordinator)
    base_setattr: Callable[..., None] = cls.__setattr__

    def __setattr__(self: Any, name: str, value: Any) -> None:
        base_setattr(self, name, value)
        if name != "app" or not isinstance(value, web.Application) or integ.app is value:
            return
        if integ.app is None:
            attach(integ, value)
            logger.info("error handling attached to the coordinator's new app")
        else:
            logger.warning("coordinator.app was replaced by another app; error handling stays on the first "
                           "(an integration serves one app): call install_enhanced_error_handling again for it")

    try:
        watcher = type(cls.__name__, (cls,), {"__setattr__": __setattr__, "__module__": cls.__module__})
        coordinator.__class__ = watcher
    except TypeError:
        return False
    return True


def install_enhanced_error_handling(
    coordinator: Any, config: Mapping[str, Any] | ErrorHandlingConfig | None = None
) -> EnhancedErrorHandlingIntegration:
    """Seed-compatible entry (SPEC 11): installs on ``coordinator.app``.

    Called before the coordinator has an app (the seed coordinator's order), it installs
    everything that needs no app now and mounts the routes when ``coordinator.app`` is assigned;
    call ``integration.attach(app)`` yourself when the app is never assigned to
    ``coordinator.app`` or is created before this call on another attribute."""
    app = getattr(coordinator, "app", None)
    if isinstance(app, web.Application):
        return setup(app, coordinator, config)
    if app is not None:
        raise ValueError(f"coordinator.app: expected an aiohttp.web.Application or None, got {type(app).__name__}")
    integ = EnhancedErrorHandlingIntegration(coordinator, validate_config(config))
    coordinator.enhanced_error_handling = integ
    if _attach_when_app_is_set(coordinator, integ):
        how = "it attaches itself when the coordinator assigns coordinator.app"
    else:  # (slots, an extension type): only an explicit attach mounts it
        how = f"{type(coordinator).__name__} cannot be watched for coordinator.app: call integration.attach(app)"
    # Loud, because the seed's current coordinator keeps its app in a local variable and never
    # attaches: said again on the first report that arrives unattached, and at exit (issue 28.3).
    logger.warning("installed without an app (%s). Until then %s", how, NOT_ATTACHED)
    atexit.register(_warn_if_never_attached, weakref.ref(integ))
    return integ


def _warn_if_never_attached(ref: weakref.ReferenceType[EnhancedErrorHandlingIntegration]) -> None:
    integ = ref()
    if integ is not None and not integ.attached:
        logger.warning("at exit: %s", NOT_ATTACHED)
