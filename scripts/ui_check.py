"""Check the MLflow UI in a real browser: are medattn's runs and their metrics listed?

Starts ``mlflow ui`` on ``127.0.0.1`` (a free port) over a tracking store, opens the experiment
page in headless Chromium (Debian's ``chromium`` package), saves a screenshot, dumps the rendered
DOM and checks that every top-level run name of the experiment appears in the runs table
(``#/experiments/<id>/runs``; nested runs sit collapsed under their parent there, so they are
checked through the REST API only); the run page of the run with most metrics must list its first five
metric names (the runs table renders metric columns lazily, off screen). The UI server's REST API (``/api/2.0/mlflow/runs/search``) is queried as
well, so a failure says whether the data or the page is missing. The server is always stopped.

Without ``--tracking-uri`` the script builds a throwaway store holding two tiny training runs
(DeiT with one layer, 32 px, 1 epoch, on a small synthetic set). The screenshots are written to
``--out`` and, unless ``--no-log``, logged to a run ``ui-check`` (tag ``medattn.kind=ui_check``)
of the same experiment, as ``ui_check/experiment.png`` and ``ui_check/run.png``.

Usage::

    .venv/bin/python scripts/ui_check.py --out ui_check            # own tiny store
    .venv/bin/python scripts/ui_check.py --tracking-uri sqlite:///mlflow.db --experiment medattn-demo

Exit codes: 0 the runs are listed, 1 they are not (or the UI did not start), 2 bad input
(no Chromium, unknown experiment, no runs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
HOST = "127.0.0.1"
UI_CHECK_KIND = "ui_check"
SCREENSHOT_ARTIFACT_DIR = "ui_check"


@dataclass
class UiCheckResult:
    """What the check saw: the run names expected and found, the metric names, the screenshots."""

    ok: bool
    url: str
    expected_runs: list[str]
    missing_in_dom: list[str]
    missing_in_api: list[str]
    metrics_expected: list[str]
    metrics_missing: list[str]
    screenshots: list[Path]
    log_run_id: str | None = None
    messages: list[str] = field(default_factory=list)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def seed_store(uri: str, workdir: Path, experiment: str) -> list[str]:
    """Train two tiny runs (DeiT, 1 layer, 32 px, 1 epoch) into ``experiment``; returns their ids."""
    from medattn import api
    from medattn.data import write_synthetic

    data = workdir / "demo_data"
    write_synthetic(data, n=40, img_size=32, seed=0)
    ids = []
    for name, lr in (("ui-check-lr1e-3", 1e-3), ("ui-check-lr3e-4", 3e-4)):
        cfg = api.resolve_train_config(
            {
                "run_name": name,
                "dataset": "demo",
                "data_dir": str(data),
                "model": "deit_tiny",
                "nr_layers": 1,
                "img_size": 32,
                "batch_size": 16,
                "lr": lr,
                "epochs": 1,
                "system_metrics": False,
                "pretrained": "none",
                "experiment": experiment,
                "tracking_uri": uri,
                "device": "cpu",
            }
        )
        ids.append(api.train(cfg, progress=False).run_id)
    return ids


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - 127.0.0.1 only
        return resp.read()


def _post_json(url: str, payload: dict, timeout: float = 10.0) -> dict:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - 127.0.0.1 only
        return json.loads(resp.read() or b"{}")


def start_ui(uri: str, port: int, log_path: Path) -> subprocess.Popen:
    """Start ``mlflow ui`` on 127.0.0.1:``port`` in its own process group, output to ``log_path``."""
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child, closed in stop_ui
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc._medattn_log = log  # type: ignore[attr-defined]
    return proc


def stop_ui(proc: subprocess.Popen) -> None:
    """Stop the UI server and its workers (its own process group), then close its log."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
    log = getattr(proc, "_medattn_log", None)
    if log is not None:
        log.close()


def wait_for_ui(base: str, proc: subprocess.Popen, timeout: float) -> None:
    """Poll ``/health`` until the server answers; RuntimeError if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow ui exited with code {proc.returncode} before answering")
        try:
            if _get(f"{base}/health", timeout=2.0).strip():
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(0.5)
    raise RuntimeError(f"mlflow ui did not answer on {base} within {timeout:.0f} s")


def chromium(
    url: str,
    user_data: Path,
    *,
    screenshot: Path | None = None,
    dump_dom: bool = False,
    budget_ms: int = 15000,
    timeout: float = 120.0,
    binary: str = CHROMIUM,
) -> str:
    """Open ``url`` in headless Chromium; save a screenshot or return the rendered DOM.

    ``--virtual-time-budget`` lets the React app fetch and render before the capture.
    """
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={user_data}",
        f"--virtual-time-budget={budget_ms}",
        "--window-size=1400,900",
    ]
    if screenshot is not None:
        cmd.append(f"--screenshot={screenshot}")
    if dump_dom:
        cmd.append("--dump-dom")
    cmd.append(url)
    done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited with {done.returncode}: {done.stderr.decode(errors='replace')[-400:]}")
    return done.stdout.decode(errors="replace")


def log_screenshots(uri: str, experiment_id: str, shots: list[Path]) -> str:
    """Log the screenshots to a new ``ui-check`` run of the experiment; returns its id."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    run = client.create_run(experiment_id, run_name="ui-check", tags={"medattn.kind": UI_CHECK_KIND})
    for shot in shots:
        client.log_artifact(run.info.run_id, str(shot), SCREENSHOT_ARTIFACT_DIR)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def check_ui(
    uri: str,
    experiment: str,
    out: Path,
    *,
    log: bool = True,
    binary: str = CHROMIUM,
    startup_timeout: float = 90.0,
    budget_ms: int = 15000,
) -> UiCheckResult:
    """Run the whole check against the store ``uri``; the server is always stopped.

    Raises:
        ValueError: unknown experiment, or an experiment without runs.
        FileNotFoundError: no Chromium at ``binary``.
    """
    import mlflow

    if not Path(binary).is_file():
        raise FileNotFoundError(
            f"no Chromium at {binary}; install Debian's chromium package (apt-get install chromium)."
        )
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"experiment {experiment!r} does not exist in {uri}.")
    runs = [
        r
        for r in client.search_runs([exp.experiment_id], max_results=200)
        if r.data.tags.get("medattn.kind") != UI_CHECK_KIND
    ]
    if not runs:
        raise ValueError(f"experiment {experiment!r} has no runs to look for.")
    names = sorted({r.info.run_name for r in runs})
    # Nested runs (the demo's children) sit collapsed under their parent in the runs table; the
    # page must show the top-level runs, the REST API every run.
    top_level = sorted({r.info.run_name for r in runs if "mlflow.parentRunId" not in r.data.tags})
    probe = max(runs, key=lambda r: len(r.data.metrics))
    metric_names = sorted(probe.data.metrics)[:5]
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://{HOST}:{port}"
    # The runs table ("Training runs"); the experiment's landing page is the GenAI overview in MLflow 3.
    url = f"{base}/#/experiments/{exp.experiment_id}/runs"
    run_url = f"{base}/#/experiments/{exp.experiment_id}/runs/{probe.info.run_id}"
    shots = [out / "experiment.png", out / "run.png"]
    messages: list[str] = []
    proc = start_ui(uri, port, out / "mlflow-ui.log")
    profile = Path(tempfile.mkdtemp(prefix="medattn-chromium-"))
    try:
        wait_for_ui(base, proc, startup_timeout)
        found = _post_json(
            f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp.experiment_id], "max_results": 200}
        )
        api_names = {r["info"].get("run_name") for r in found.get("runs", [])}
        missing_api = [n for n in names if n not in api_names]
        dom = chromium(url, profile, screenshot=shots[0], dump_dom=True, budget_ms=budget_ms, binary=binary)
        missing_dom = [n for n in top_level if n not in dom]
        run_dom = chromium(run_url, profile, screenshot=shots[1], dump_dom=True, budget_ms=budget_ms, binary=binary)
        missing_metrics = [m for m in metric_names if m not in run_dom]
    finally:
        stop_ui(proc)
        shutil.rmtree(profile, ignore_errors=True)
    (out / "experiment.html").write_text(dom)
    (out / "run.html").write_text(run_dom)
    ok = not (missing_dom or missing_api or missing_metrics) and all(s.is_file() and s.stat().st_size for s in shots)
    log_id = log_screenshots(uri, exp.experiment_id, shots) if log else None
    return UiCheckResult(
        ok, url, names, missing_dom, missing_api, metric_names, missing_metrics, shots, log_id, messages
    )


def main(argv: list[str] | None = None) -> int:
    """Command line of the UI check; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", help="Store to show (default: a new store with two tiny training runs).")
    parser.add_argument("--experiment", default="medattn-ui-check", help="Experiment whose runs must be listed.")
    parser.add_argument(
        "--out", type=Path, default=Path("ui_check"), help="Folder for screenshots, DOM dumps, server log."
    )
    parser.add_argument("--chromium", default=CHROMIUM, help="Chromium binary.")
    parser.add_argument("--budget-ms", type=int, default=15000, help="Chromium --virtual-time-budget in ms.")
    parser.add_argument("--no-log", action="store_true", help="Do not log the screenshots to the store.")
    args = parser.parse_args(argv)
    if not Path(args.chromium).is_file():
        print(f"Error: no Chromium at {args.chromium}; install Debian's chromium package.", file=sys.stderr)
        return 2
    uri = args.tracking_uri
    if uri is None:
        work = Path(tempfile.mkdtemp(prefix="medattn-ui-check-"))
        uri = f"sqlite:///{work / 'mlflow.db'}"
        from medattn import tracking

        tracking.connect(uri)
        tracking.ensure_experiment(args.experiment, uri)
        print(f"training two tiny runs into {uri} ...")
        seed_store(uri, work, args.experiment)
    try:
        result = check_ui(
            uri, args.experiment, args.out, log=not args.no_log, binary=args.chromium, budget_ms=args.budget_ms
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"UI check failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"UI at {result.url}: runs {result.expected_runs}; missing in page {result.missing_in_dom}, "
        f"missing in REST API {result.missing_in_api}; metrics {result.metrics_expected}, missing on the run "
        f"page {result.metrics_missing}"
    )
    print(
        f"screenshots: {', '.join(str(s) for s in result.screenshots)}"
        + (f"; logged to run {result.log_run_id} ({SCREENSHOT_ARTIFACT_DIR}/) in {uri}" if result.log_run_id else "")
    )
    print("UI check passed" if result.ok else "UI check FAILED")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
