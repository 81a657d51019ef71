"""``python -m pyrovae.evaluate`` on a run trained for one epoch on real MNIST: the JSON keys and
their values, the files it writes, the table, and one-line errors with exit status 2. The data
mirror must be there (the tests fail, not skip, without it: see conftest.mirror)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyrovae import evaluate

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ("elbo", "log_likelihood", "num_samples", "pareto_k_frac_bad", "active_units")
NUMBERS = (
    "elbo",
    "elbo_sampled",
    "elbo_sampled_stderr",
    "log_likelihood",
    "log_likelihood_stderr",
    "psis_log_likelihood",
    "pareto_k_mean",
    "pareto_k_frac_bad",
    "amortization_gap",
    "approximation_gap",
    "inference_gap",
    "elbo_amortized",
    "elbo_optimized",
    "seconds",
)
FAST = [
    "--limit",
    "40",
    "--iwae-samples",
    "200",
    "--nuts",
    "1",
    "--nuts-warmup",
    "100",
    "--nuts-samples",
    "100",
    "--gap-examples",
    "10",
    "--gap-steps",
    "50",
]


@pytest.fixture(scope="module")
def run_dir(small_run) -> Path:
    return small_run


@pytest.fixture(scope="module")
def json_result(run_dir) -> tuple[dict, str]:
    """One evaluation with --json (module-scoped: NUTS and the gaps are the slow parts)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = evaluate.main([str(run_dir), *FAST, "--json"])
    assert code == 0, err.getvalue()
    return json.loads(out.getvalue()), err.getvalue()


def test_json_has_the_required_keys_and_finite_numbers(json_result):
    result, _ = json_result
    for key in REQUIRED + NUMBERS:
        assert key in result, key
    for key in NUMBERS:
        assert isinstance(result[key], float) and math.isfinite(result[key]), key
    assert result["num_samples"] == 200 and result["num_examples"] == 40
    assert result["dataset"] == "mnist" and "seed 123" in result["test_binarization"]
    assert 0 <= result["active_units"] <= 4 and len(result["active_unit_variances"]) == 4
    assert 0.0 <= result["pareto_k_frac_bad"] <= 1.0
    assert set(result["pareto_k_quantiles"]) == {"0.05", "0.25", "0.5", "0.75", "0.95"}


def test_json_numbers_are_consistent(json_result):
    r, _ = json_result
    # IWAE >= ELBO (Burda et al.): nats apart after one epoch, far beyond the Monte Carlo error
    assert r["log_likelihood"] > r["elbo_sampled"] and r["log_likelihood"] > r["elbo"]
    # two ELBO estimates of the same examples: they differ by Monte Carlo error only
    assert abs(r["elbo"] - r["elbo_sampled"]) < r["elbo_sampled_stderr"]
    assert r["amortization_gap"] > 0 and r["gap_examples"] == 10
    nuts = r["nuts"]
    assert nuts["num_examples"] == 1 and nuts["num_chains"] == 2
    (example,) = nuts["examples"]
    for key in ("nuts_mean", "nuts_std", "q_mean", "q_std", "r_hat", "ess_bulk", "mcse_mean"):
        assert len(example[key]) == 4 and all(math.isfinite(v) for v in example[key]), key
    assert isinstance(example["rhat_flag"], bool)


def test_files_are_written_into_the_run_folder(run_dir, json_result):
    result, _ = json_result
    saved = json.loads((run_dir / "evaluation.json").read_text())
    assert saved["log_likelihood"] == result["log_likelihood"]
    for name in ("posterior.png", "khat.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert sorted(result["figures"]) == ["khat.png", "posterior.png"]
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]  # no temporary files


def test_the_table_states_the_numbers_and_the_binarization(run_dir, tmp_path, capsys):
    run_dir = Path(shutil.copytree(run_dir, tmp_path / "run"))  # leave the shared run alone
    code = evaluate.main(
        [
            str(run_dir),
            "--limit",
            "20",
            "--iwae-samples",
            "50",
            "--nuts",
            "0",
            "--gap-examples",
            "0",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    for text in (
        "ELBO, closed-form KL",
        "log p(x), IWAE, K = 50",
        "PSIS Pareto k-hat",
        "active units:",
        "seed 123",
        "evaluation.json",
    ):
        assert text in out, text
    assert "NUTS" not in out and "gaps on" not in out
    saved = json.loads((run_dir / "evaluation.json").read_text())
    assert saved["nuts"] is None and saved["num_samples"] == 50


def _one_line_error(code: int, err: str, out: str = "") -> None:
    assert code == 2
    # the threads chosen on a busy machine may be noted before the one error line
    lines = [line for line in err.strip().splitlines() if not line.startswith("threads: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert out == ""


@pytest.mark.parametrize(
    "args",
    [
        ["--iwae-samples", "0"],
        ["--limit", "0"],
        ["--nuts", "-1"],
        ["--gap-examples", "-2"],
        ["--nuts-samples", "2"],
        ["--iwae-samples", "many"],
        ["--no-such-option"],
    ],
)
def test_bad_options_exit_2_with_one_line(run_dir, capsys, args):
    code = evaluate.main([str(run_dir), *args])
    captured = capsys.readouterr()
    _one_line_error(code, captured.err, captured.out)


def test_a_folder_without_a_run_exits_2(tmp_path, capsys):
    code = evaluate.main([str(tmp_path), "--limit", "5"])
    captured = capsys.readouterr()
    _one_line_error(code, captured.err, captured.out)
    assert "best.pt" in captured.err


def test_the_module_runs_as_a_command_and_fails_cleanly(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pyrovae.evaluate", str(tmp_path / "missing"), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    _one_line_error(proc.returncode, proc.stderr, proc.stdout)
    assert "does not exist" in proc.stderr


# ---- gaps that rest on an unreliable log p(x) ------------------------------------------------


def test_gap_flags_follow_the_pareto_k_of_the_gap_examples():
    good = evaluate.gap_flags(np.array([0.1, 0.69, -np.inf, 0.7]), 4)
    assert good == {"gaps_reliable": True, "gap_pareto_k_frac_bad": 0.0}
    bad = evaluate.gap_flags(np.array([0.1, 0.71, np.inf, np.nan]), 4)  # the test double
    assert bad["gaps_reliable"] is False and bad["gap_pareto_k_frac_bad"] == 0.75
    assert "3 of 4" in bad["gaps_note"] and "lower bounds" in bad["gaps_note"]
    unknown = evaluate.gap_flags(None, 4)
    assert unknown["gaps_reliable"] is False and unknown["gap_pareto_k_frac_bad"] is None


def _table_lines(result: dict) -> dict[str, str]:
    text = evaluate.format_table(result)
    return {name: next(line for line in text.splitlines() if line.strip().startswith(name))
            for name in ("inference gap", "= approximation gap", "+ amortization gap")}


def test_the_table_marks_gaps_that_are_lower_bounds(json_result):
    result, _ = json_result
    flagged = {**result, **evaluate.gap_flags(np.array([0.9] * 10), 10)}
    flagged["approximation_gap"] = -0.58  # as observed: negative, since IWAE < log p(x)
    lines = _table_lines(flagged)
    assert "[LOWER BOUND]" in lines["inference gap"]
    assert "[LOWER BOUND]" in lines["= approximation gap"] and "-0.58" in lines[
        "= approximation gap"]
    assert "[LOWER BOUND]" not in lines["+ amortization gap"]
    assert "10 of 10 gap examples" in evaluate.format_table(flagged)
    clean = {**result, **evaluate.gap_flags(np.array([0.3] * 10), 10)}
    clean.pop("gaps_note", None)
    assert not any("[LOWER BOUND]" in line for line in _table_lines(clean).values())
    assert "LOWER BOUND" not in evaluate.format_table(clean)


def test_json_says_whether_the_gaps_are_reliable(json_result):
    r, _ = json_result
    assert isinstance(r["gaps_reliable"], bool)
    frac = r["gap_pareto_k_frac_bad"]
    assert 0.0 <= frac <= 1.0 and r["gaps_reliable"] == (frac == 0.0)
    assert ("gaps_note" in r) == (not r["gaps_reliable"])
    # after one epoch most of the first 10 test images have k-hat > 0.7 (as over all 40)
    assert frac > 0 and r["pareto_k_frac_bad"] > 0


# ---- a fast, readable default report ---------------------------------------------------------


def test_the_default_report_is_fast_and_warnings_sit_inside_it(run_dir, tmp_path, capsys):
    """NUTS runs only on request; its warnings appear inside the report, after the header,
    saying what they concern; k-hat is explained on the line under it; the NUTS section is one
    line per example (the per-dimension numbers are in evaluation.json)."""
    assert evaluate.Options().nuts_examples == 0
    parent = tmp_path / "runs"
    shutil.copytree(run_dir, parent / "version_0")
    code = evaluate.main([str(parent), "--limit", "20", "--iwae-samples", "50",
                          "--gap-examples", "0", "--json"])
    captured = capsys.readouterr()
    assert code == 0
    assert f"using {parent / 'version_0'}, the latest of the 1 runs in {parent}" in captured.err
    result = json.loads(captured.out)
    assert result["nuts"] is None
    example = {"index": 0, "max_r_hat": 1.2, "min_ess_bulk": 12.0, "divergences": 0,
               "rhat_flag": True, "ess_flag": True, "mean_z": [0.5, -1.5], "std_ratio": [1, 2],
               "nuts_mean": [0, 0], "nuts_std": [1, 1], "q_mean": [0, 0], "q_std": [1, 1]}
    warning = "NUTS r-hat 1.200 > 1.01 for test example 0: the chains have not mixed"
    result["nuts"] = {"num_chains": 2, "num_samples": 50, "num_warmup": 50,
                      "examples": [example], "warnings": [warning]}
    lines = evaluate.format_table(result).splitlines()
    assert lines[0].startswith("pyrovae.evaluate ")  # the header first
    at = next(i for i, line in enumerate(lines) if warning in line)
    assert 0 < at < lines.index("nats per example (± std. error over examples)")
    assert "concern the NUTS reference posterior only" in lines[at - 1]
    khat = next(i for i, line in enumerate(lines) if line.startswith("PSIS Pareto k-hat"))
    assert "not an error" in lines[khat + 1] and "heavy-tailed" in lines[khat + 1]
    nuts = next(i for i, line in enumerate(lines) if line.startswith("NUTS reference"))
    assert lines[nuts + 1].startswith("  test example 0: max r-hat 1.200")
    assert "mean |q - NUTS| mean 1.00 NUTS sd, q sd / NUTS sd 1.50" in lines[nuts + 1]
    wrote = next(i for i, line in enumerate(lines) if line.startswith("wrote "))
    assert len([line for line in lines[nuts:wrote] if line.strip()]) == 2  # heading, example


def test_figures_of_an_earlier_evaluation_that_this_one_did_not_draw_are_removed(tmp_path):
    """The run folder's figures are those of its evaluation.json: an evaluation without NUTS
    (or with K < 25, no PSIS) removes the posterior.png (khat.png) of an earlier one, and says
    so."""
    for name in (evaluate.KHAT_FIGURE, evaluate.POSTERIOR_FIGURE, "samples.png"):
        (tmp_path / name).write_bytes(b"png")
    assert evaluate._remove_stale_figures(tmp_path, [evaluate.KHAT_FIGURE]) == [
        evaluate.POSTERIOR_FIGURE]
    assert sorted(p.name for p in tmp_path.iterdir()) == [evaluate.KHAT_FIGURE, "samples.png"]
    assert evaluate._remove_stale_figures(tmp_path, []) == [evaluate.KHAT_FIGURE]
