"""``medattn test``: test a trained model on one split."""

from __future__ import annotations

from typing import Annotated

import typer

from medattn.cli.options import (
    DeviceOpt,
    GpuIdOpt,
    InferenceBatchSizeOpt,
    ModelUriOpt,
    NumWorkersOpt,
    QuietOpt,
    SourceCkptOpt,
    SourceDataDirOpt,
    TrackingUriOpt,
    choices,
    device_of,
    done,
    given,
    option,
    run_experiment,
    source_run_id,
)
from medattn.config import SPLIT_ALIASES, check_subgroups
from medattn.stages.evaluate import TestConfig

RunIdOpt = source_run_id("tested")
ExperimentOpt = run_experiment("test")

# clinical evaluation options (docs/evaluation.md)
_SubgroupsOpt = Annotated[
    str,
    option(
        "--subgroups",
        help="Comma-separated subgroup attributes: sex, age (20-year bands), site. ISIC 2020 reads sex, age_approx and "
        "anatom_site_general_challenge; MIMIC-CXR sex and age from --patients-csv; any other data set the sex/age/site "
        "columns of its label table (e.g. the demo set's labels.csv).",
    ),
]
_PatientsCsvOpt = Annotated[
    str | None,
    option("--patients-csv", help="MIMIC-CXR only: MIMIC-IV's hosp/patients.csv.gz, for the sex and age subgroups."),
]
_MinSubgroupPositivesOpt = Annotated[
    int,
    option(
        "--min-subgroup-positives",
        help="A subgroup with fewer positives (or negatives) is reported as too small, without metrics.",
    ),
]


def clinical_line(m: dict[str, float]) -> str:
    """``ECE 0.081 [..], Brier 0.17, sensitivity at 90 % specificity 0.62 (threshold chosen on val)``."""
    nan = float("nan")
    text = (
        f"ECE {m.get('test_ece', nan):.4f} [{m.get('test_ece_ci_low', nan):.4f}, {m.get('test_ece_ci_high', nan):.4f}]"
    )
    text += f", Brier {m.get('test_brier', nan):.4f}"
    if "test_ece_change" in m:
        text += f" (ECE {m['test_ece_change']:+.4f} against the uncalibrated model)"
    if "test_sens_at_spec90" in m:
        text += f", sensitivity at 90 % specificity {m['test_sens_at_spec90']:.4f} (threshold chosen on val)"
    return text


def command(
    run_id: RunIdOpt = None,
    model_uri: ModelUriOpt = None,
    ckpt: SourceCkptOpt = None,
    split: Annotated[
        str,
        option("--split", help="Split to test (the seed's Test/Validation/Train accepted).", **choices(SPLIT_ALIASES)),
    ] = TestConfig.split,
    data_dir: SourceDataDirOpt = None,
    batch_size: InferenceBatchSizeOpt = TestConfig.batch_size,
    num_workers: NumWorkersOpt = TestConfig.num_workers,
    device: DeviceOpt = None,
    gpu_id: GpuIdOpt = None,
    n_boot: Annotated[
        int, option("--n-boot", help="Bootstrap resamples for the 95 % CIs of AUC and balanced accuracy.")
    ] = TestConfig.n_boot,
    experiment: ExperimentOpt = None,
    tracking_uri: TrackingUriOpt = None,
    quiet: QuietOpt = False,
    subgroups: _SubgroupsOpt = "",
    patients_csv: _PatientsCsvOpt = TestConfig.patients_csv,
    min_subgroup_positives: _MinSubgroupPositivesOpt = TestConfig.min_subgroup_positives,
) -> None:
    """Test a trained model on a split: test_* metrics with bootstrap CIs, predictions.csv, ROC and
    confusion-matrix figures, logged to a new run tagged with its source run.

    Every run also logs calibration (test_ece, test_brier, figures/reliability.png) and, for binary
    tasks, sensitivity/specificity at operating points whose thresholds are chosen on the validation
    split (test_sens_at_spec90, ...; params threshold_spec90, ...); --subgroups adds per-subgroup
    metrics (docs/evaluation.md).

    The metrics are named test_* whatever --split is; the split is the run's param and its tag
    medattn.split (medattn compare only reads test runs of the test split)."""
    # loaded when the command runs: --help and shell completion stay free of torch and MLflow
    from medattn import api

    cfg = TestConfig(
        run_id=given(run_id),
        model_uri=given(model_uri),
        ckpt=ckpt,
        split=split,
        data_dir=data_dir,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device_of(device, gpu_id) or TestConfig.device,
        tracking_uri=tracking_uri,
        experiment=experiment,
        n_boot=n_boot,
        subgroups=check_subgroups(subgroups),
        patients_csv=given(patients_csv),
        min_subgroup_positives=min_subgroup_positives,
    )
    result = api.test(cfg, progress=not quiet)
    m = result.metrics
    nan = float("nan")
    typer.echo(
        f"test AUC {m.get('test_auc', nan):.4f} "
        f"[{m.get('test_auc_ci_low', nan):.4f}, {m.get('test_auc_ci_high', nan):.4f}], "
        f"balanced accuracy {m.get('test_balanced_accuracy', nan):.4f}, "
        f"sensitivity {m.get('test_sensitivity', nan):.4f}, specificity {m.get('test_specificity', nan):.4f}"
    )
    typer.echo(clinical_line(m))
    if "test_oracle_auc" in m:  # a data set with a known ceiling (the demo set's oracle_prob)
        typer.echo(
            f"oracle AUC {m['test_oracle_auc']:.4f} [{m.get('test_oracle_auc_ci_low', nan):.4f}, "
            f"{m.get('test_oracle_auc_ci_high', nan):.4f}], gap {m['test_oracle_gap']:+.4f} "
            f"[{m.get('test_oracle_gap_ci_low', nan):+.4f}, {m.get('test_oracle_gap_ci_high', nan):+.4f}] (paired)"
        )
    done("test", result.run_id, result.tracking_uri)
