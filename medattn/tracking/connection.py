"""The tracking store: where it is and whether it answers.

Default store: ``sqlite:///<cwd>/mlflow.db`` with artifacts under ``<cwd>/mlruns``;
``MLFLOW_TRACKING_URI`` or ``--tracking-uri`` point anywhere else (:func:`resolve_tracking_uri`).
:func:`connect` refuses a URI with a secret in it, and checks that an http(s) server or a database
answers within a few seconds, so a wrong URI is one sentence instead of minutes of retries. The
artifact root, the ``mlflow ui`` command and run URLs are derived from the URI here too.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse, urlsplit, urlunsplit

from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from medattn.errors import MedattnError
from medattn.tracking.auth import auth_error, check_uri_has_no_secret, redact_secrets, redact_url
from medattn.tracking.store import open_store

HTTP_PROBE_TIMEOUT_S = 5.0
"""Seconds ``connect`` waits for an http(s) tracking server to answer before giving up."""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db``."""
    if uri:
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def artifact_root(uri: str) -> Path | None:
    """Local artifact root for a sqlite store (``mlruns`` beside the database), else ``None``."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        db = unquote(uri[len("sqlite:///") :])
        if db in ("", ":memory:"):
            return Path.cwd().resolve() / "mlruns"
        return Path(db).resolve().parent / "mlruns"
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path)).resolve()
    return None


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI over this store."""
    if urlparse(uri).scheme in ("http", "https"):
        return f"open {uri}"
    return f"mlflow ui --backend-store-uri {uri}"


def run_url(ui_base: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of a run under the UI at ``ui_base`` (a server URL); a ``user:password@``
    in it is left out (a browser asks for the login)."""
    parts = urlsplit(ui_base)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    base = urlunsplit(parts._replace(netloc=netloc, query="", fragment="")).rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def _probe_http(uri: str, timeout: float = HTTP_PROBE_TIMEOUT_S) -> None:
    """Fail fast when an http(s) tracking server does not answer at all.

    Any HTTP response (even 401 or 404) counts as reachable; only a refused, unresolvable or
    silent server is an error here, so that authentication and API errors still come from MLflow.

    Raises:
        MedattnError: no answer within ``timeout`` seconds.
    """
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 - the user's own tracking URI
            pass
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MedattnError(
            f"cannot reach the MLflow tracking server {redact_url(uri)!r} ({str(reason)[:120] or type(exc).__name__}); "
            "start it or check --tracking-uri and MLFLOW_TRACKING_URI."
        ) from None


DB_PROBE_TIMEOUT_S = 5
"""Seconds ``connect`` waits for a database tracking store to accept a connection."""


def _probe_database(uri: str) -> None:
    """Fail fast when a database tracking store (PostgreSQL, MySQL, ...) does not accept a connection.

    MLflow retries an unreachable database with exponential backoff for about 100 s before raising;
    one direct connection attempt here turns that into one sentence at once.

    Raises:
        MedattnError: the driver is missing or the database refuses or does not answer.
    """
    import sqlalchemy  # MLflow's own dependency; imported here only for database stores

    args = {"connect_timeout": DB_PROBE_TIMEOUT_S} if uri.startswith(("postgresql", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=args)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except (SQLAlchemyError, ImportError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (install the database driver the URI names)" if isinstance(exc, ImportError) else ""
        raise MedattnError(
            redact_secrets(
                f"cannot reach the MLflow tracking store {redact_url(uri)!r} ({first[:160]}){hint}; check "
                "--tracking-uri or MLFLOW_TRACKING_URI."
            )
        ) from None


def connect(uri: str | None = None) -> str:
    """Point MLflow at the store and check that it answers.

    Returns:
        The resolved tracking URI.

    Raises:
        MedattnError: the store cannot be reached or opened.
    """
    resolved = resolve_tracking_uri(uri)
    check_uri_has_no_secret(resolved)  # credentials come from MLFLOW_TRACKING_USERNAME/PASSWORD, never the URI
    scheme = urlparse(resolved).scheme
    if scheme in ("http", "https"):
        _probe_http(resolved)  # MLflow itself retries an unreachable server for minutes
    elif scheme not in ("", "file", "sqlite", "databricks", "databricks-uc", "uc"):
        _probe_database(resolved)  # and an unreachable database for about 100 s
    try:
        open_store(resolved)  # of many processes, one at a time creates or repairs a sqlite store
    except (MlflowException, OSError, ConnectionError, SQLAlchemyError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (install the database driver the URI names)" if isinstance(exc, ImportError) else ""
        raise auth_error(exc, resolved) or MedattnError(
            redact_secrets(
                f"cannot reach the MLflow tracking store {redact_url(resolved)!r} ({first[:160]}){hint}; check "
                "--tracking-uri or MLFLOW_TRACKING_URI."
            )
        ) from None
    return resolved
