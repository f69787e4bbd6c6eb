"""A tracking server with MLflow's authentication app (``mlflow server --app-name basic-auth``).

Clients authenticate with ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` (never with
credentials inside a URI, which would end up in logs, params and ``config.yaml``). The server
answers a missing or wrong login with HTTP 401 and a refused action with HTTP 403; MLflow's client
raises both as ``MlflowException("API request to endpoint /api/2.0/mlflow/... failed with error code
403 != 200 ...")``; its artifact proxy (uploads, downloads, deletes) raises ``requests.HTTPError``.
:func:`auth_errors` turns both into one sentence that names the user and what they may not do
(:class:`LoginError`, :class:`PermissionDeniedError`; exit code 2 in the CLI). Deleting artifacts
needs MANAGE rights: :func:`refused` lets housekeeping (pruning checkpoints) keep a file instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

from medattn.errors import ConfigError, MedattnError

ENV_USERNAME = "MLFLOW_TRACKING_USERNAME"
ENV_PASSWORD = "MLFLOW_TRACKING_PASSWORD"  # noqa: S105 - the variable's name, not a password

UNAUTHENTICATED = "UNAUTHENTICATED"
PERMISSION_DENIED = "PERMISSION_DENIED"
_HTTP_CODES = {401: UNAUTHENTICATED, 403: PERMISSION_DENIED}

# What a refused request was trying to do, by REST endpoint (first match wins, most specific first).
ENDPOINT_ACTIONS: tuple[tuple[str, str], ...] = (
    ("/mlflow-artifacts/", "write or delete the artifacts of this run"),
    ("/registered-models/alias", "move an alias of a registered model"),
    ("/model-versions/set-tag", "tag a version of a registered model"),
    ("/model-versions/create", "register a new version of a registered model"),
    ("/model-versions/", "change a version of a registered model"),
    ("/registered-models/create", "create a registered model"),
    ("/registered-models/", "change a registered model"),
    ("/runs/create", "create runs in this experiment"),
    ("/runs/", "write to this run"),
    ("/logged-models", "log models in this experiment"),
    ("/experiments/create", "create experiments"),
    ("/experiments/", "change this experiment"),
    ("/artifacts", "write artifacts"),
    ("/users/", "manage users"),
    ("/permissions/", "manage permissions"),
)
_ENDPOINT = re.compile(r"(?:endpoint|url:) (\S+)")


class LoginError(MedattnError):
    """The tracking server wants a login, or refused the one given (HTTP 401)."""


class PermissionDeniedError(MedattnError):
    """The tracking server refused an action to the logged-in user (HTTP 403)."""


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs, params and messages)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # an unparsable URL (a bad port...): redact it as text
        return redact_secrets(url)
    if password is None:
        return redact_secrets(url)  # a password holding '/' is not parsed by urlsplit, but by SQLAlchemy
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return redact_secrets(urlunsplit(parts._replace(netloc=netloc)))


# ``scheme://user:password@`` anywhere in a text (a URI inside a message, a param, a YAML dump).
_URI_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:'\"]*:)(?P<password>[^\s@'\"]+)(?P<at>@)")


def redact_secrets(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` in it replaced by ``***``.

    Every scheme is covered (``postgresql+psycopg2://``, ``mysql://``, ``http://``...): what medattn
    logs (params, tags, ``config.yaml``, text artifacts) and prints goes through this function.
    """
    return _URI_PASSWORD.sub(lambda m: f"{m['head']}***{m['at']}", str(text))


def redact_value(value):
    """:func:`redact_secrets` applied to every string inside ``value`` (mappings and sequences walked)."""
    if isinstance(value, str):
        return redact_secrets(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    return value


def check_uri_has_no_secret(uri: str, what: str = "--tracking-uri") -> None:
    """Refuse a tracking server URI with a password in it: it would be logged (config, params, output).

    Only ``http(s)://`` URIs are checked: a server takes its login from the environment instead.

    Raises:
        ConfigError: the URI holds ``user:password@``.
    """
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https") and parts.password is not None:
        raise ConfigError(
            f"{what} {redact_url(uri)!r} holds a password, which would be logged; pass the URI without "
            f"credentials and set {ENV_USERNAME} and {ENV_PASSWORD} instead."
        )


def _code(exc: BaseException) -> str | None:
    """``UNAUTHENTICATED`` / ``PERMISSION_DENIED`` for a 401 / 403 from MLflow's client or artifact proxy.

    The two error types are looked up in :data:`sys.modules`, not imported: an error of a package that
    was never loaded cannot have been raised, so checking any other error (a command's ``--help`` exit
    passes here) stays free of MLflow and requests.
    """
    requests = sys.modules.get("requests")
    if requests is not None and isinstance(exc, requests.HTTPError):
        return _HTTP_CODES.get(getattr(exc.response, "status_code", None))
    exceptions = sys.modules.get("mlflow.exceptions")
    if exceptions is None or not isinstance(exc, exceptions.MlflowException):
        return None
    code = getattr(exc, "error_code", None)
    if code in (UNAUTHENTICATED, PERMISSION_DENIED):
        return code
    return _HTTP_CODES.get(exc.get_http_status_code())


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` is the tracking server refusing this user an action (HTTP 403)."""
    return _code(exc) == PERMISSION_DENIED


def refused_action(message: str) -> str:
    """What the refused request was doing, from the endpoint MLflow names in its message."""
    found = _ENDPOINT.search(message)
    endpoint = found.group(1) if found else ""
    return next((action for key, action in ENDPOINT_ACTIONS if key in endpoint), "do this")


def auth_error(exc: BaseException, tracking_uri: str | None = None) -> MedattnError | None:
    """The one-sentence error for a 401 / 403 answer of the tracking server, else ``None``.

    Args:
        exc: an exception raised by MLflow's client.
        tracking_uri: the server (default: MLflow's current tracking URI).
    """
    code = _code(exc)
    if code is None:
        return None
    # mlflow is loaded by now (the error came from it); imported here so that this module's URI
    # redaction serves the command line without loading MLflow
    import mlflow

    server = redact_url(tracking_uri or mlflow.get_tracking_uri())
    user = os.environ.get(ENV_USERNAME)
    if code == UNAUTHENTICATED and not user:
        return LoginError(
            f"the MLflow server {server} requires a login; set {ENV_USERNAME} and {ENV_PASSWORD} "
            "(ask the server's admin for an account)."
        )
    if code == UNAUTHENTICATED:
        return LoginError(
            f"the MLflow server {server} refused the login of user {user!r} (wrong user name or password); "
            f"check {ENV_USERNAME} and {ENV_PASSWORD}."
        )
    return PermissionDeniedError(
        f"user {user or 'anonymous'!r} may not {refused_action(str(exc))} on the MLflow server {server} "
        "(permission denied); ask its admin for EDIT rights on the experiment or registered model."
    )


@contextlib.contextmanager
def auth_errors(tracking_uri: str | None = None) -> Iterator[None]:
    """Re-raise a 401 / 403 of the tracking server as :class:`LoginError` / :class:`PermissionDeniedError`.

    Every other exception passes through unchanged.
    """
    try:
        yield
    except Exception as exc:  # only MLflow's and requests' 401 / 403 are turned (see _code)
        err = auth_error(exc, tracking_uri)
        if err is None:
            raise
        raise err from None
