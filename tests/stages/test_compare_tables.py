"""``compare_tables.xai_table`` on the interpret runs' metrics: baselines as sources, CIs as columns, no verdict rows."""

from __future__ import annotations

import math
from types import SimpleNamespace

from medattn import tracking
from medattn.stages.compare_tables import xai_table


def _run(run_id: str, model: str, methods: str, metrics: dict[str, float]) -> SimpleNamespace:
    return SimpleNamespace(
        info=SimpleNamespace(run_id=run_id),
        data=SimpleNamespace(
            params={"methods": methods},
            metrics=metrics,
            tags={tracking.TAG_MODEL: model, tracking.TAG_PERC_TRAIN: "1.0"},
        ),
    )


def test_xai_table_reads_methods_baselines_and_cis_and_skips_verdicts():
    metrics = {
        "xai_transformer_lrp_pointing_game": 0.6,
        "xai_transformer_lrp_pointing_game_ci_low": 0.5,
        "xai_transformer_lrp_pointing_game_ci_high": 0.7,
        "xai_transformer_lrp_pointing_game_passes": 1.0,
        "xai_transformer_lrp_passes_sanity": 0.0,
        "xai_transformer_lrp_randomized_spearman": 0.1,
        "xai_transformer_lrp_deletion_auc": 0.2,
        "xai_baseline_edge_pointing_game": 0.3,
        "xai_baseline_edge_pointing_game_ci_low": 0.2,
        "xai_baseline_edge_pointing_game_ci_high": 0.4,
        "xai_baseline_randomized_transformer_lrp_mask_mass": 0.05,
        "xai_baseline_random_insertion_auc": 0.4,
        "xai_n_images": 80.0,
        "xai_n_lesion_images": 40.0,
    }
    table = xai_table([_run("r1", "deit_tiny", "transformer-lrp", metrics)])
    got = {(r.method, r.score): (r.value, r.ci_low, r.ci_high) for r in table.itertuples()}
    assert set(got) == {
        ("transformer-lrp", "pointing_game"),
        ("transformer-lrp", "randomized_spearman"),
        ("transformer-lrp", "deletion_auc"),
        ("baseline_edge", "pointing_game"),
        ("baseline_randomized_transformer_lrp", "mask_mass"),
        ("baseline_random", "insertion_auc"),
    }
    assert got[("transformer-lrp", "pointing_game")] == (0.6, 0.5, 0.7)
    assert got[("baseline_edge", "pointing_game")] == (0.3, 0.2, 0.4)
    value, low, high = got[("transformer-lrp", "deletion_auc")]
    assert value == 0.2 and math.isnan(low) and math.isnan(high)
    assert set(table["model"]) == {"deit_tiny"} and set(table["run_id"]) == {"r1"}
