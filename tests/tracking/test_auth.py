"""``medattn.tracking.auth``: a server's 401 / 403 as one sentence naming the user; no secret in URIs."""

from __future__ import annotations

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, PERMISSION_DENIED, UNAUTHENTICATED

from medattn import api, tracking
from medattn.errors import ConfigError, MedattnError
from medattn.tracking import auth, models

SERVER = "http://127.0.0.1:5999"


def _refused(endpoint: str, code: int = PERMISSION_DENIED) -> MlflowException:
    """What MLflow's REST client raises for a non-JSON error answer of the auth app."""
    status = 403 if code == PERMISSION_DENIED else 401
    return MlflowException(
        f"API request to endpoint {endpoint} failed with error code {status} != 200. Response body: 'Permission denied'",
        error_code=code,
    )


@pytest.mark.parametrize(
    ("endpoint", "action"),
    [
        ("/api/2.0/mlflow/registered-models/alias", "move an alias of a registered model"),
        ("/api/2.0/mlflow/runs/create", "create runs in this experiment"),
        ("/api/2.0/mlflow/runs/log-batch", "write to this run"),
        ("/api/2.0/mlflow/model-versions/create", "register a new version of a registered model"),
        ("/api/2.0/mlflow/unknown", "do this"),
    ],
)
def test_permission_denied_names_user_and_action(monkeypatch, endpoint, action):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "reader")
    err = auth.auth_error(_refused(endpoint), SERVER)
    assert isinstance(err, auth.PermissionDeniedError) and isinstance(err, MedattnError)
    assert str(err) == (
        f"user 'reader' may not {action} on the MLflow server {SERVER} (permission denied); "
        "ask its admin for EDIT rights on the experiment or registered model."
    )


def test_login_errors_with_and_without_a_user(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "editor")
    err = auth.auth_error(_refused("/api/2.0/mlflow/experiments/search", UNAUTHENTICATED), SERVER)
    assert isinstance(err, auth.LoginError)
    assert "refused the login of user 'editor' (wrong user name or password)" in str(err)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    err = auth.auth_error(_refused("/api/2.0/mlflow/experiments/search", UNAUTHENTICATED), SERVER)
    assert str(err).startswith(f"the MLflow server {SERVER} requires a login; set MLFLOW_TRACKING_USERNAME")


def test_other_errors_pass_through():
    other = MlflowException("no such run", error_code=INVALID_PARAMETER_VALUE)
    assert auth.auth_error(other) is None
    assert auth.auth_error(ValueError("x")) is None
    with pytest.raises(MlflowException), auth.auth_errors():
        raise other
    with pytest.raises(auth.PermissionDeniedError), auth.auth_errors(SERVER):
        raise _refused("/api/2.0/mlflow/runs/create")


def test_no_password_in_a_tracking_uri():
    assert tracking.redact_url("http://bob:s3cret@host:5000/x") == "http://bob:***@host:5000/x"
    assert tracking.redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
    with pytest.raises(ConfigError, match=r"holds a password") as info:
        tracking.check_uri_has_no_secret("https://bob:s3cret@mlflow.example.org")
    assert "s3cret" not in str(info.value)
    tracking.check_uri_has_no_secret("https://mlflow.example.org")  # no error
    tracking.check_uri_has_no_secret("sqlite:///mlflow.db")


def test_connect_refuses_a_password_in_the_uri(tmp_path):
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_USERNAME"):
        tracking.connect("http://bob:s3cret@127.0.0.1:1")


def test_cli_turns_a_403_into_exit_2(cli, one_error_line, monkeypatch):
    """A refused write deep inside a stage reaches the user as the permission sentence, exit 2."""

    def refused(cfg):
        raise _refused("/api/2.0/mlflow/registered-models/alias")

    monkeypatch.setattr(api, "promote", refused)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "reader")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", SERVER)
    res = cli(["promote", "--experiment", "medattn-demo"], exit_code=None)
    line = one_error_line(res, "user 'reader' may not move an alias of a registered model")
    assert "Permission denied" not in line and "403" not in line


def _proxy_refusal(status: int) -> requests.HTTPError:
    """What MLflow's artifact proxy client raises (``augmented_raise_for_status``) for a refused request."""
    resp = requests.Response()
    resp.status_code = status
    url = f"{SERVER}/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/checkpoints/best.pt"
    return requests.HTTPError(
        f"{status} Client Error: Forbidden for url: {url}. Response text: Permission denied", response=resp
    )


def test_artifact_proxy_refusals(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "editor")
    err = auth.auth_error(_proxy_refusal(403), SERVER)
    assert isinstance(err, auth.PermissionDeniedError)
    assert "user 'editor' may not write or delete the artifacts of this run" in str(err)
    assert auth.refused(_proxy_refusal(403)) and auth.refused(_refused("/api/2.0/mlflow/runs/create"))
    assert not auth.refused(_proxy_refusal(404)) and not auth.refused(_proxy_refusal(401))
    assert isinstance(auth.auth_error(_proxy_refusal(401), SERVER), auth.LoginError)
    assert auth.auth_error(_proxy_refusal(500), SERVER) is None


def test_pruning_keeps_best_pt_when_the_server_refuses_the_delete(monkeypatch):
    """Only MANAGE rights delete artifacts: an EDIT user's training run keeps checkpoints/best.pt."""

    class RefusingRepo:
        def delete_artifacts(self, path):
            raise _proxy_refusal(403)

    assert models._delete_artifacts(RefusingRepo(), "checkpoints/best.pt") is False

    class BrokenRepo:
        def delete_artifacts(self, path):
            raise _proxy_refusal(500)

    with pytest.raises(requests.HTTPError):
        models._delete_artifacts(BrokenRepo(), "checkpoints/best.pt")
