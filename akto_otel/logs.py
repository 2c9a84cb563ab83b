"""Local logging of akto_otel: level from LOG_LEVEL, a file in LOG_DIR when set.

Nothing happens at import; :func:`setup_logging` runs when a guard is built. The
file name matches the reference connector's (``akto-agent-sdk.log``). The token is
never logged; payloads only with ``LOG_PAYLOADS=true``, and then redacted.

Usage::

    setup_logging(Settings.from_env())
"""

from __future__ import annotations

import logging
import os
import threading

from akto_otel.config import Settings

__all__ = ["LOG_FILE_NAME", "setup_logging"]

LOG_FILE_NAME = "akto-agent-sdk.log"
_lock = threading.Lock()
_files: set[str] = set()


def setup_logging(settings: Settings) -> None:
    """Set the ``akto_otel`` logger's level and add the LOG_DIR file handler once."""
    logger = logging.getLogger("akto_otel")
    logger.setLevel(settings.log_level)
    if not settings.log_dir:
        return
    path = os.path.join(os.path.expanduser(settings.log_dir), LOG_FILE_NAME)
    with _lock:
        if path in _files:
            return
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            handler = logging.FileHandler(path, encoding="utf-8")
        except OSError as exc:
            logger.warning("cannot log to %s: %s", path, exc.strerror or type(exc).__name__)
            return
        handler.setLevel(settings.log_level)
        handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
        logger.addHandler(handler)
        _files.add(path)
