"""Sweep expansion, skip / resume, and the report from a synthetic results file."""

import shutil

import pytest
from tiny_run import write_sweep

from stepdistill.config import ConfigError
from stepdistill.report import aggregate, mean_se, report
from stepdistill.sweep import append_result, expand, load_sweep, read_results, sweep

# What a stand-in for train() returns: the fields a sweep row takes from a run's metrics.
FAKE_METRICS = {
    "task": "svamp",
    "test_accuracy": 0.5,
    "valid_accuracy": 0.4,
    "train_examples": 1,
    "steps": 1,
    "best_step": 1,
    "run_dir": "x",
    "bf16": False,
}


def without_training(monkeypatch, fake_train):
    """A sweep calls ``fake_train`` instead of training, and the teacher's accuracy is fixed."""
    monkeypatch.setattr("stepdistill.sweep.train", fake_train)
    monkeypatch.setattr("stepdistill.sweep.teacher_test_accuracy", lambda config, task: 0.775)
    monkeypatch.setattr("stepdistill.sweep.ensure_annotations", lambda config, task: None)
    monkeypatch.setattr(
        "stepdistill.sweep.teacher_correctness", lambda config, task, predictions: {}
    )


def test_grid_expands_to_every_combination_with_stable_ids(tmp_path):
    path = write_sweep(
        tmp_path,
        {"mode": ["standard", "dss"], "train_fraction": [0.5, 1.0], "seed": [0, 1]},
        {"epochs": 1},
    )
    configs = expand(load_sweep(path))
    assert len(configs) == 8
    assert configs[0].run_name == "svamp-standard-f0.5-smollm2-135m-s0"
    assert all(c.epochs == 1 and c.output_dir.endswith("out/runs") for c in configs)


def test_bad_grid_values_fail_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="unknown mode"):
        expand(load_sweep(write_sweep(tmp_path, {"mode": ["standard", "magic"]})))
    with pytest.raises(ConfigError, match="unknown config key"):
        expand(load_sweep(write_sweep(tmp_path, {"epoch": [1]})))


def test_sweep_skips_runs_already_in_the_results_file(tmp_path, monkeypatch):
    path = write_sweep(tmp_path, {"mode": ["standard", "dss"], "seed": [0, 1]})
    trained = []

    def fake_train(config, **_):
        trained.append(config.run_name)
        if len(trained) == 3:
            raise KeyboardInterrupt  # a sweep killed during its third run
        return dict(FAKE_METRICS)

    without_training(monkeypatch, fake_train)
    with pytest.raises(KeyboardInterrupt):
        sweep(path)
    results = tmp_path / "out" / "results.jsonl"
    assert len(read_results(results)) == 2
    with results.open("a") as handle:
        handle.write('{"run_id": "torn')  # a crash mid-write leaves a torn line
    trained.clear()
    rows = sweep(path)
    assert trained == ["svamp-dss-f1-smollm2-135m-s0", "svamp-dss-f1-smollm2-135m-s1"]
    assert len(rows) == 4 and len({r["run_id"] for r in rows}) == 4
    assert all(r["bf16"] is False for r in rows)  # the precision each run trained in
    trained.clear()
    sweep(path)
    assert trained == []


def test_only_trains_the_runs_matching_its_patterns_in_the_sweeps_order(
    tmp_path, monkeypatch, capsys
):
    path = write_sweep(tmp_path, {"mode": ["standard", "dss"], "seed": [0, 1]})
    trained = []
    without_training(
        monkeypatch, lambda config, **_: trained.append(config.run_name) or dict(FAKE_METRICS)
    )
    sweep(path, only=["*-dss-*-s1", "*standard*s0"])
    assert trained == ["svamp-standard-f1-smollm2-135m-s0", "svamp-dss-f1-smollm2-135m-s1"]
    assert "4 runs, 0 done, 2 to run (2 of the 4 chosen by --only)" in capsys.readouterr().out
    trained.clear()
    rows = sweep(path, only=["*-s1"])  # the recorded dss s1 is skipped as ever
    assert trained == ["svamp-standard-f1-smollm2-135m-s1"] and len(rows) == 3
    # a pattern that matches no run of the sweep is a typo, not an empty selection
    with pytest.raises(ConfigError, match=r"no run of the sweep matches '\*-s2'"):
        sweep(path, only=["*-s1", "*-s2"])


def test_a_row_records_the_labels_its_run_trained_on(tmp_path, monkeypatch):
    path = write_sweep(tmp_path, {"mode": ["standard", "distill", "dss"]}, {"label_source": "gold"})
    without_training(monkeypatch, lambda config, **_: dict(FAKE_METRICS))
    # distill trains on the teacher's labels whatever label_source says (only dss and
    # single read it), and its row says so
    assert {r["mode"]: r["label_source"] for r in sweep(path)} == {
        "standard": "gold",
        "distill": "teacher",
        "dss": "gold",
    }


def test_a_run_another_sweep_recorded_meanwhile_is_not_trained_again(tmp_path, monkeypatch):
    path = write_sweep(tmp_path, {"seed": [0, 1]})
    results = tmp_path / "out" / "results.jsonl"
    trained = []

    def fake_train(config, **_):
        trained.append(config.run_name)
        # meanwhile a narrowed copy of this sweep, run elsewhere, records seed 1
        append_result(results, {"run_id": "svamp-dss-f1-smollm2-135m-s1"})
        return dict(FAKE_METRICS)

    without_training(monkeypatch, fake_train)
    rows = sweep(path)
    assert trained == ["svamp-dss-f1-smollm2-135m-s0"]
    assert sorted(r["run_id"] for r in rows) == [
        "svamp-dss-f1-smollm2-135m-s0",
        "svamp-dss-f1-smollm2-135m-s1",
    ]  # one row each


def test_a_run_another_sweep_finished_meanwhile_is_recorded_once(tmp_path, monkeypatch):
    path = write_sweep(tmp_path, {"seed": [0]})
    results = tmp_path / "out" / "results.jsonl"

    def fake_train(config, **_):
        # a second sweep, started on the same grid, trained this run too and finished first
        append_result(results, {"run_id": config.run_name, "test_accuracy": 0.25})
        return dict(FAKE_METRICS)

    without_training(monkeypatch, fake_train)
    rows = sweep(path)
    assert [r["test_accuracy"] for r in rows] == [0.25]  # the first to finish keeps its row


def test_sweep_writes_its_report_again_after_every_run(tmp_path, monkeypatch):
    from stepdistill.cli import main

    path = write_sweep(tmp_path, {"seed": [0, 1]})
    page = tmp_path / "report" / "report.md"
    listed = []  # runs in the report's every-run table when each training starts

    def fake_train(config, **_):
        listed.append(page.read_text().count("| svamp-dss-") if page.exists() else 0)
        return dict(FAKE_METRICS)

    without_training(monkeypatch, fake_train)
    assert main(["sweep", str(path), "--report", str(page.parent)]) == 0
    assert listed == [0, 1] and "(2 runs)" in page.read_text()


def test_a_report_that_fails_does_not_stop_the_sweep(tmp_path, monkeypatch, capsys):
    def broken_report(results, output):
        raise OSError("disk full")

    path = write_sweep(tmp_path, {"seed": [0, 1]})
    without_training(monkeypatch, lambda config, **_: dict(FAKE_METRICS))
    monkeypatch.setattr("stepdistill.sweep.report", broken_report)
    assert len(sweep(path, report_to=tmp_path / "report")) == 2  # both runs recorded
    assert "report not written to" in capsys.readouterr().out


def test_report_counts_a_run_recorded_twice_once(tmp_path):
    results = tmp_path / "results.jsonl"
    row = {"task": "svamp", "mode": "dss", "train_fraction": 1.0, "seed": 0}
    append_result(results, {**row, "run_id": "a", "test_accuracy": 0.4})
    append_result(results, {**row, "run_id": "a", "test_accuracy": 0.6})  # an older sweep
    append_result(results, {**row, "run_id": "b", "seed": 1, "test_accuracy": 0.5})
    with pytest.warns(UserWarning, match="run a recorded twice; the first row counts"):
        text = report(results).read_text()
    assert "(2 runs)" in text and "| distilling step-by-step | 45.0 ± 5.0 (n=2) |" in text


def test_report_lists_each_runs_training_examples(tmp_path):
    results = tmp_path / "results.jsonl"
    row = {"task": "cqa", "mode": "dss", "train_fraction": 1.0, "seed": 0, "test_accuracy": 0.3}
    append_result(results, {**row, "run_id": "capped", "train_examples": 2000, "steps": 375})
    text = report(results).read_text()
    assert "| capped | 2000 |  | 30.0 |  / 375 |" in text  # 100% of a split capped at 2,000


def test_report_sums_the_wall_time_of_its_runs(tmp_path):
    """A sweep's cost in hours, from the rows; rows without a wall time are counted apart."""
    results = tmp_path / "results.jsonl"
    row = {"task": "svamp", "mode": "dss", "train_fraction": 1.0, "test_accuracy": 0.3}
    append_result(results, {**row, "run_id": "a", "seed": 0, "wall_seconds": 1800.0})
    append_result(results, {**row, "run_id": "b", "seed": 1, "wall_seconds": 5400.0})
    append_result(results, {**row, "run_id": "c", "seed": 2})
    text = report(results).read_text()
    assert "Wall time of the 2 timed runs, training and testing: 2.00 hours." in text
    assert "1 of 3 runs record no wall time." in text
    one = tmp_path / "one.jsonl"
    append_result(one, {**row, "run_id": "a", "seed": 0, "wall_seconds": 1800.0})
    assert "Wall time of the 1 timed run, training and testing: 0.50 hours." in (
        report(one, tmp_path / "one-report").read_text()
    )


def test_report_says_nothing_of_the_less_data_claim_where_dss_has_not_run(tmp_path):
    """A curve of standard fine-tuning alone (e-SNLI's first runs) is no evidence that DSS
    reaches its full-data mean "at none of the fractions run": the sentence is left out."""
    results = tmp_path / "results.jsonl"
    synthetic_results(results)
    kept = [line for line in results.read_text().splitlines() if '"mode": "standard"' in line]
    results.write_text("\n".join(kept) + "\n")
    text = report(results).read_text()
    assert "| standard fine-tuning (gold) | 42.2 ± 0.6 (n=3)" in text  # the curve is reported
    assert "Distilling step-by-step matches or beats" not in text


def test_mean_and_standard_error():
    assert mean_se([50.0]) == (50.0, 0.0)
    mean, se = mean_se([50.0, 60.0, 70.0])
    assert mean == 60.0 and se == pytest.approx(10 / 3**0.5)


def synthetic_results(path):
    rows = []
    for mode, base in (("standard", 40), ("distill", 38), ("dss", 45), ("single", 41)):
        for fraction in (0.125, 0.25, 0.5, 1.0):
            for seed in range(3):
                rows.append(
                    {
                        "run_id": f"{mode}-{fraction}-{seed}",
                        "task": "svamp",
                        "mode": mode,
                        "label_source": "gold",
                        "train_fraction": fraction,
                        "student": "s",
                        "seed": seed,
                        "test_accuracy": (base + 10 * fraction + seed) / 100,
                        "teacher_test_accuracy": 0.775,
                    }
                )
    for row in rows:
        append_result(path, row)
    return rows


def test_report_tables_and_plots(tmp_path):
    results = tmp_path / "results.jsonl"
    synthetic_results(results)
    table = aggregate(read_results(results))
    cell = table["svamp"][("dss", 1.0)]
    assert (
        cell["n"] == 3
        and cell["mean"] == pytest.approx(56.0)
        and cell["se"] == pytest.approx(1 / 3**0.5)
    )
    path = report(results)
    text = path.read_text()
    assert "| distilling step-by-step | 47.2 ± 0.6 (n=3)" in text
    assert "Teacher (few-shot CoT) test accuracy: 77.5%" in text
    # dss (45 + 10f + seed) − standard (40 + 10f + seed) = +5 in every seed; single is 41.
    assert (
        "| distilling step-by-step − standard fine-tuning (gold) | 100% | 56.0 ± 0.6 | 51.0 ± 0.6 "
        "| +5.0 ± 0.0 | — | [+5.0, +5.0] | — | 3 of 3 | 0.250 |" in text
    )
    assert (
        "| distilling step-by-step − single-task (rationale + label) | 12.5% | 47.2 ± 0.6 "
        "| 43.2 ± 0.6 | +4.0 ± 0.0 | — | [+4.0, +4.0] | — | 3 of 3 | 0.250 |" in text
    )
    # what the teacher's labels cost: distill (38 + ...) − standard (40 + ...) = −2 everywhere
    assert (
        "| standard distillation (teacher labels) − standard fine-tuning (gold) | 100% | 49.0 ± 0.6 "
        "| 51.0 ± 0.6 | -2.0 ± 0.0 | — | [-2.0, -2.0] | — | 0 of 3 | 0.250 |" in text
    )
    # standard on all data: 51.0 mean; dss reaches 46.25 + ... ≥ 51 first at 50% (51.0).
    assert (
        "Standard fine-tuning on 100% of the data: 51.0%. Distilling step-by-step matches or beats that mean with 50% of the data."
        in text
    )
    assert (
        "| dss-1.0-2 |  |  | 57.0 |  /  |  |  |" in text
    )  # every run listed (these have no training-set size, valid accuracy, steps, ...)
    # rows without per-problem data: the seed-paired mean ± se only, and the report says why
    assert "No bootstrap CI or McNemar p: these rows carry no per-problem test results" in text
    for name in (
        "svamp-dss-vs-standard.png",
        "svamp-dss-vs-distill.png",
        "svamp-modes.png",
        "svamp-differences.png",
    ):
        png = path.parent / name
        assert png.is_file() and png.stat().st_size > 10_000, name
        assert f"]({name})" in text
        from PIL import Image

        image = Image.open(png)
        assert (
            image.size[0] >= 600 and len(image.convert("L").getcolors(maxcolors=100_000)) > 20
        )  # not blank


def test_paired_differences_pair_runs_by_seed():
    from stepdistill.report import paired_differences

    rows = [
        {"task": "svamp", "mode": m, "train_fraction": 1.0, "seed": seed, "test_accuracy": acc}
        for m, seed, acc in (
            ("dss", 0, 0.50),
            ("standard", 0, 0.52),
            ("dss", 1, 0.60),
            ("standard", 1, 0.55),
            ("dss", 2, 0.70),
        )
    ]  # seed 2 has no standard run: not paired
    d = paired_differences(rows, "svamp", "dss", "standard")[1.0]
    assert (
        d["n"] == 2
        and (d["higher"], d["lower"], d["equal"]) == (1, 1, 0)
        and d["mean"] == pytest.approx(1.5)
        and d["se"] == pytest.approx(3.5)
    )
    # the seeds' differences −2 and +5: t(1) = 12.706, so 1.5 ± 12.706 · 3.5 = [−43.0, +46.0]
    assert d["seed_ci"] == (pytest.approx(-42.972, abs=1e-2), pytest.approx(45.972, abs=1e-2))
    assert d["sign_p"] == 1.0


def test_one_seed_shows_no_standard_error():
    from stepdistill.report import cell_text

    assert cell_text({"mean": 12.5, "se": 0.0, "n": 1}) == "12.5 (n=1)"
    assert cell_text({"mean": 47.25, "se": 0.61, "n": 3}) == "47.2 ± 0.6 (n=3)"
    assert cell_text(None) == ""


def test_a_rerun_reuses_the_name_of_a_run_killed_before_its_first_checkpoint(tmp_path, monkeypatch):
    from stepdistill.run_folder import save_run_files
    from stepdistill.sweep import earlier_folders, remove_unstarted
    from stepdistill.tasks import load_task

    path = write_sweep(tmp_path, {"mode": ["dss"], "seed": [0]})
    config = expand(load_sweep(path))[0]
    runs = tmp_path / "out" / "runs"
    name = config.run_name
    for folder in (name, f"{name}-2"):  # two kills before the first checkpoint
        save_run_files(runs / folder, config, load_task("svamp"))
    started = runs / f"{name}-3"  # one that has a checkpoint: resumable, kept
    save_run_files(started, config, load_task("svamp"))
    (started / "checkpoint").mkdir()
    other = runs / f"{name}-4"  # same name, another config: not this run, kept
    save_run_files(other, config.__class__(**{**config.to_dict(), "epochs": 9}), load_task("svamp"))
    removed = remove_unstarted(earlier_folders(config))
    assert sorted(p.name for p in removed) == [name, f"{name}-2"]
    assert sorted(p.name for p in runs.iterdir()) == [f"{name}-3", f"{name}-4"]

    # Through the sweep: the unstarted folder is gone before training starts again.
    shutil.rmtree(started)
    save_run_files(runs / name, config, load_task("svamp"))
    seen = []

    def fake_train(config, **_):
        seen.append((runs / name).exists())
        return dict(FAKE_METRICS)

    without_training(monkeypatch, fake_train)
    sweep(path)
    assert seen == [False]


def test_under_a_multi_process_launch_only_rank_0_writes_rows_and_removes_folders(
    tmp_path, monkeypatch
):
    from stepdistill.run_folder import save_run_files
    from stepdistill.tasks import load_task

    path = write_sweep(tmp_path, {"mode": ["dss"], "seed": [0, 1]})
    config = expand(load_sweep(path))[0]
    unstarted = tmp_path / "out" / "runs" / config.run_name
    save_run_files(unstarted, config, load_task("svamp"))
    trained = []

    def fake_train(config, **_):
        trained.append(config.run_name)
        return dict(FAKE_METRICS)

    without_training(monkeypatch, fake_train)
    monkeypatch.setenv("RANK", "1")
    assert sweep(path) == []  # every process trains every run ...
    assert len(trained) == 2
    assert unstarted.is_dir()  # ... but rank 1 leaves run folders to rank 0
    monkeypatch.setenv("RANK", "0")
    rows = sweep(path)  # ... and rank 0 writes each run's row, once
    assert [r["run_id"] for r in rows] == [c.run_name for c in expand(load_sweep(path))]
    assert not unstarted.exists()


def record(correct: str, ids: list[str] | None = None) -> dict:
    """A results row's per-problem fields for ``correct`` ('0'/'1' per test problem)."""
    from stepdistill.stats import ids_digest

    ids = ids or [f"q{i}" for i in range(len(correct))]
    return {"test_correct": correct, "test_ids": ids_digest(ids)}


def paired_rows(per_seed: dict[int, tuple[str, str]], overrides: dict | None = None) -> list[dict]:
    """dss and standard rows, one each per seed, from their '0'/'1' strings."""
    rows = []
    for seed, (dss, standard) in per_seed.items():
        for mode, correct in (("dss", dss), ("standard", standard)):
            rows.append(
                {
                    "run_id": f"{mode}-{seed}",
                    "task": "svamp",
                    "mode": mode,
                    "train_fraction": 1.0,
                    "seed": seed,
                    "test_accuracy": correct.count("1") / len(correct),
                    **record(correct),
                    **(overrides or {}).get((mode, seed), {}),
                }
            )
    return rows


def test_report_gives_the_bootstrap_interval_and_the_mcnemar_p(tmp_path):
    from stepdistill.report import comparison_table
    from stepdistill.stats import mcnemar_exact, paired_bootstrap

    # 20 problems; per seed dss right on 12, 14, 13 and standard on 10, 10, 9:
    # b (dss right, standard wrong) = 3, 4, 4 and c = 1, 0, 0
    per_seed = {
        0: ("1" * 12 + "0" * 8, "1" * 9 + "0" * 3 + "1" + "0" * 7),
        1: ("1" * 14 + "0" * 6, "1" * 10 + "0" * 10),
        2: ("1" * 13 + "0" * 7, "1" * 9 + "0" * 11),
    }
    results = tmp_path / "results.jsonl"
    for row in paired_rows(per_seed):
        append_result(results, row)
    [entry] = comparison_table(read_results(results))
    assert (entry["task"], entry["first"], entry["second"], entry["fraction"]) == (
        "svamp",
        "dss",
        "standard",
        1.0,
    )
    assert (entry["b"], entry["c"], entry["n"], entry["problems"]) == (11, 1, 3, 60)
    assert entry["mean"] == pytest.approx(100 * (2 / 20 + 4 / 20 + 4 / 20) / 3)
    assert entry["first_accuracy"]["mean"] == pytest.approx(65.0)
    assert entry["second_accuracy"]["mean"] == pytest.approx(100 * 29 / 60)
    assert entry["p"] == pytest.approx(mcnemar_exact(11, 1)) and entry["p"] < 0.01
    low, high = entry["ci"]
    assert (low, high) == paired_bootstrap([(3, 1, 20), (4, 0, 20), (4, 0, 20)])
    assert low < entry["mean"] < high and entry["gaps"] == {}

    # seed level: differences 10, 20, 20 points: mean 16.67, s = 5.774, se = 3.333, so
    # t(2) = 4.3027 gives 16.67 ± 14.34 = [+2.3, +31.0]; 3 of 3 higher, sign p = 0.25
    assert entry["seed_ci"] == (pytest.approx(2.324, abs=1e-3), pytest.approx(31.009, abs=1e-3))
    assert (entry["higher"], entry["lower"], entry["equal"], entry["sign_p"]) == (3, 0, 0, 0.25)

    text = report(results).read_text()
    line = (
        f"| distilling step-by-step − standard fine-tuning (gold) | 100% | 65.0 ± 2.9 | 48.3 ± 1.7 "
        f"| +16.7 ± 3.3 | [{low:+.1f}, {high:+.1f}] | [+2.3, +31.0] | {entry['p']:.3f} (11 / 1) "
        "| 3 of 3 | 0.250 |"
    )
    assert line in text
    assert "exact two-sided McNemar" in text and "No bootstrap CI or McNemar p" not in text
    assert "the bootstrap CI is the headline interval" in text
    assert (results.parent / "report" / "svamp-differences.png").stat().st_size > 5_000


def test_the_student_is_compared_with_its_teacher_problem_by_problem(tmp_path):
    from stepdistill.report import teacher_differences
    from stepdistill.stats import mcnemar_exact, paired_bootstrap

    # 10 problems; the teacher right on the first 7. dss right on 8 and 9 of them,
    # b (dss right, teacher wrong) = 2, 3 and c = 1, 1
    teacher = "1" * 7 + "0" * 3
    per_seed = {0: ("1" * 6 + "0" + "1" * 2 + "0", teacher), 1: ("1" * 5 + "0" + "1" * 4, teacher)}
    overrides = {("dss", s): {"teacher_test_correct": teacher} for s in per_seed}
    overrides[("standard", 1)] = {"teacher_test_correct": teacher[:5]}  # not the same problems
    results = tmp_path / "results.jsonl"
    for row in paired_rows(per_seed, overrides):
        append_result(results, row)
    differences = teacher_differences(read_results(results), "svamp")
    assert list(differences) == [("dss", 1.0)]  # standard: a seed without the teacher's record
    d = differences[("dss", 1.0)]
    assert (d["b"], d["c"], d["n"]) == (5, 2, 2)
    assert d["mean"] == pytest.approx(15.0) and d["se"] == pytest.approx(5.0)
    assert (d["student"], d["teacher"]) == (pytest.approx(85.0), pytest.approx(70.0))
    assert d["ci"] == paired_bootstrap([(2, 1, 10), (3, 1, 10)])
    assert d["p"] == mcnemar_exact(5, 2)
    text = report(results).read_text()
    ci = f"[{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]"
    # the seeds: +10 and +20 points, se 5, t(1) = 12.706: 15 ± 63.5 = [−48.5, +78.5]
    assert d["seed_ci"] == (pytest.approx(-48.531, abs=1e-3), pytest.approx(78.531, abs=1e-3))
    assert (d["higher"], d["lower"], d["sign_p"]) == (2, 0, 0.5)
    line = (
        f"| distilling step-by-step (n=2) | 100% | 85.0 | 70.0 | +15.0 ± 5.0 | {ci} "
        "| [-48.5, +78.5] | 0.453 (5 / 2) | 2 of 2 | 0.500 |"
    )
    assert line in text


def test_runs_tested_on_different_problems_are_not_paired_problem_by_problem(tmp_path):
    from stepdistill.report import paired_differences

    per_seed = {0: ("1100", "1000"), 1: ("1110", "0110")}
    # seed 1's standard run answered the same number of problems, but other ones
    other = {("standard", 1): record("0110", ["x", "y", "z", "w"])}
    rows = paired_rows(per_seed, other)
    d = paired_differences(rows, "svamp", "dss", "standard")[1.0]
    assert d["ci"] is None and d["p"] is None and d["b"] is None
    assert d["gaps"] == {"mismatched": [1]}
    assert d["mean"] == pytest.approx(25.0) and d["n"] == 2  # the seed-paired mean stays
    results = tmp_path / "results.jsonl"
    for row in rows:
        append_result(results, row)
    text = report(results).read_text()
    assert "| +25.0 ± 0.0 | — | [+25.0, +25.0] | — | 2 of 2 | 0.500 |" in text
    assert "- dss − standard, 100%: the two runs were tested on different problems: seed 1" in text


def test_a_seed_without_per_problem_data_leaves_the_comparison_to_the_seed_paired_mean(tmp_path):
    from stepdistill.report import paired_differences

    old = {("dss", 0): {"test_correct": None, "test_ids": None}}  # an older row
    rows = paired_rows({0: ("1100", "1000"), 1: ("1110", "0110"), 2: ("11", "01")}, old)
    d = paired_differences(rows, "svamp", "dss", "standard")[1.0]
    assert d["ci"] is None and d["gaps"] == {"missing": [0]}
    results = tmp_path / "results.jsonl"
    for row in rows:
        append_result(results, row)
    assert "- dss − standard, 100%: no per-problem data" in report(results).read_text()


def test_a_sweep_row_carries_its_runs_per_problem_correctness(tmp_path, monkeypatch):
    from stepdistill.io import write_jsonl
    from stepdistill.stats import ids_digest

    path = write_sweep(tmp_path, {"mode": ["standard", "dss"], "seed": [0, 1]})
    written = {}

    def fake_train(config, **_):
        # a finished run folder, as train() leaves it: predictions in test order
        folder = tmp_path / "out" / "runs" / config.run_name
        correct = [(i + config.seed + (config.mode == "dss")) % 3 != 0 for i in range(9)]
        predictions = [
            {"id": f"p{i}", "gold": "1", "prediction": "1", "correct": ok}
            for i, ok in enumerate(correct)
        ]
        write_jsonl(folder / "predictions" / "test.jsonl", predictions)
        written[config.run_name] = correct
        return {**FAKE_METRICS, "run_dir": str(folder), "test_accuracy": sum(correct) / 9}

    without_training(monkeypatch, fake_train)
    rows = sweep(path)
    assert len(rows) == 4
    for row in rows:
        correct = written[row["run_id"]]
        assert row["test_correct"] == "".join("1" if ok else "0" for ok in correct)
        assert row["test_ids"] == ids_digest(f"p{i}" for i in range(9))
    text = report(tmp_path / "out" / "results.jsonl").read_text()
    assert "| two-level bootstrap 95% CI | seed t 95% | pooled McNemar p (b / c) |" in text
    assert "No bootstrap CI or McNemar p" not in text


def test_a_tiny_sweep_end_to_end_records_each_runs_test_predictions(tiny_causal, tmp_path):
    """Real training (a tiny model, a toy task): each row's ``test_correct`` is its run's
    ``predictions/test.jsonl``, and the report compares the runs problem by problem. (After
    2 steps the tiny model answers every problem wrong; rows with varied answers are
    ``test_a_sweep_row_carries_its_runs_per_problem_correctness``.)"""
    import json

    from reliability_helpers import annotate_toy, make_train_task

    from stepdistill.io import read_jsonl

    task = make_train_task(tmp_path, train_rows=12, test_rows=8)
    annotations = annotate_toy(task, tmp_path / "annotations")
    base = {
        "task": str(task),
        "student": str(tiny_causal),
        "annotations": str(annotations),
        "max_steps": 2,
        "batch_size": 4,
        "learning_rate": 3e-3,
        "threads": 1,
        "max_rationale_tokens": 4,
        "bf16": False,
    }
    spec = tmp_path / "sweep.yaml"
    grid = {"mode": ["standard", "dss"], "seed": [0, 1]}
    spec.write_text(
        json.dumps({"name": "e2e", "output_dir": str(tmp_path / "out"), "base": base, "grid": grid})
    )
    rows = sweep(spec)
    assert len(rows) == 4
    for row in rows:
        predictions = read_jsonl(
            tmp_path / "out" / "runs" / row["run_id"] / "predictions" / "test.jsonl"
        )
        assert len(predictions) == 8
        assert row["test_correct"] == "".join("1" if p["correct"] else "0" for p in predictions)
        assert row["test_correct"].count("1") / 8 == pytest.approx(row["test_accuracy"])
        assert [h["step"] for h in row["valid_history"]] == [2]  # its one evaluation
    assert len({row["test_ids"] for row in rows}) == 1  # every run: the same test problems
    # the teacher's correctness on the same problems, in the same order
    teacher = {r["id"]: r["teacher_correct"] for r in read_jsonl(annotations / "test.jsonl")}
    for row in rows:
        predictions = read_jsonl(
            tmp_path / "out" / "runs" / row["run_id"] / "predictions" / "test.jsonl"
        )
        assert row["teacher_test_correct"] == "".join(
            "1" if teacher[p["id"]] else "0" for p in predictions
        )
    text = report(tmp_path / "out" / "results.jsonl").read_text()
    assert "The student against its teacher" in text
    [dss_row] = [
        line for line in text.splitlines() if line.startswith("| distilling step-by-step (n=2)")
    ]
    assert "| 100% |" in dss_row
    [line] = [
        line
        for line in text.splitlines()
        if line.startswith("| distilling step-by-step − standard")
    ]
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    assert cells[5].startswith("[") and cells[7] != "—"  # a bootstrap CI and a McNemar p
    assert cells[6].startswith("[")  # two seeds: a seed t interval
    assert " of 2" in cells[8]  # two seeds paired ("0 of 2 (2 level)" where they tie)


def test_a_list_of_grids_expands_each_and_order_by_seed_interleaves_them(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "output_dir: out\norder_by: seed\ngrid:\n"
        "  - {seed: [0, 1], mode: [standard, label-first]}\n"
        "  - {seed: [0, 1], mode: [dss], rationale_filter: [true]}\n"
    )
    names = [c.run_name for c in expand(load_sweep(path))]
    assert names == [
        "svamp-standard-f1-smollm2-135m-s0",
        "svamp-label-first-f1-smollm2-135m-s0",
        "svamp-dss-filtered-f1-smollm2-135m-s0",
        "svamp-standard-f1-smollm2-135m-s1",
        "svamp-label-first-f1-smollm2-135m-s1",
        "svamp-dss-filtered-f1-smollm2-135m-s1",
    ]
    path.write_text("grid: [{seed: [0]}]\norder_by: mode\n")
    with pytest.raises(ConfigError, match="order_by"):
        load_sweep(path)


def test_a_recipe_names_the_run_and_its_report_row(tmp_path, monkeypatch):
    path = write_sweep(
        tmp_path,
        [{"mode": ["standard"]}, {"mode": ["dss"], "recipe": ["dss-llama3"]}],
    )
    assert [c.run_name for c in expand(load_sweep(path))] == [
        "svamp-standard-f1-smollm2-135m-s0",
        "svamp-dss-llama3-f1-smollm2-135m-s0",
    ]
    without_training(monkeypatch, lambda config, **_: dict(FAKE_METRICS))
    rows = sweep(path)
    assert [r.get("recipe") for r in rows] == [None, "dss-llama3"]
    from stepdistill.report import variant

    assert [variant(r) for r in rows] == ["standard", "dss-llama3"]


def test_an_unstarted_folder_with_a_tensorboard_log_is_removed_and_palm_replay_still_matches(
    tmp_path, monkeypatch
):
    from stepdistill.config import TrainConfig
    from stepdistill.sweep import earlier_folders, remove_unstarted, same_run

    assert same_run(TrainConfig(teacher="palm-replay"), TrainConfig(teacher="replay"))
    assert same_run(TrainConfig(device="cpu"), TrainConfig(device="cuda:1"))
    assert not same_run(TrainConfig(seed=1), TrainConfig(seed=2))
    config = expand(load_sweep(write_sweep(tmp_path, {"seed": [0]})))[0]
    folder = tmp_path / "out" / "runs" / config.run_name
    folder.mkdir(parents=True)
    saved = TrainConfig(**{**config.to_dict(), "teacher": "palm-replay"})
    from stepdistill.run_folder import save_run_files
    from stepdistill.tasks import load_task

    save_run_files(folder, saved, load_task("svamp"))
    (folder / "tensorboard").mkdir()
    (folder / "tensorboard" / "events.out").write_text("x")
    assert earlier_folders(config) == [folder]  # saved as palm-replay, still this run
    assert remove_unstarted([folder]) == [folder] and not folder.exists()


def test_the_teacher_line_names_each_teacher_and_never_averages_them():
    from stepdistill.report import teacher_line

    rows = [
        {"task": "svamp", "mode": "dss", "teacher_test_accuracy": 0.775},
        {"task": "svamp", "mode": "standard", "teacher_test_accuracy": 0.775},
        {"task": "svamp", "mode": "dss", "recipe": "dss-llama3", "teacher_test_accuracy": 0.68},
    ]
    assert teacher_line(rows[:2], "svamp") == "77.5%"
    assert teacher_line(rows, "svamp") == "68.0% (dss-llama3); 77.5% (dss, standard)"
    assert teacher_line(rows, "cqa") is None


def test_the_report_shows_validation_after_each_epoch_and_the_kept_epoch(tmp_path):
    def history(*accuracies):
        return [
            {"step": 10 * (i + 1), "epoch": float(i + 1), "valid_accuracy": a}
            for i, a in enumerate(accuracies)
        ]

    results = tmp_path / "results.jsonl"
    for seed, (curve, best) in enumerate(
        [(history(0.2, 0.4, 0.4), 20), (history(0.3, 0.3, 0.5), 30)]
    ):
        append_result(
            results,
            {
                "run_id": f"dss-{seed}",
                "task": "svamp",
                "mode": "dss",
                "train_fraction": 1.0,
                "seed": seed,
                "test_accuracy": 0.5,
                "best_step": best,
                "valid_history": curve,
            },
        )
    # a row without a history (written before rows carried one) is left out of the table
    append_result(
        results,
        {
            "run_id": "std-0",
            "task": "svamp",
            "mode": "standard",
            "train_fraction": 1.0,
            "seed": 0,
            "test_accuracy": 0.5,
        },
    )
    text = report(results).read_text()
    assert "| mode | data | 1 | 2 | 3 | kept |" in text
    assert "| distilling step-by-step | 100% | 25.0 | 35.0 | 45.0 | 2, 3 |" in text
    assert "| standard fine-tuning (gold) | 100% |" not in text.split("after each epoch")[1]


def test_the_statistics_cells_of_one_seed_and_of_seeds_that_tie():
    from stepdistill.report import statistics_text

    one = {"ci": (-0.7, 0.3), "p": 0.476, "b": 345, "c": 365, "seed_ci": None, "n": 1}
    one |= {"higher": 0, "lower": 1, "equal": 0, "sign_p": 1.0}
    # one seed: a bootstrap over its problems, no seed interval, a sign test that says nothing
    assert statistics_text(one) == "[-0.7, +0.3] | — | 0.476 (345 / 365) | 0 of 1 | 1.000"
    tied = {"ci": None, "seed_ci": (-1.0, 3.0), "n": 4, "higher": 2, "lower": 0, "equal": 2}
    tied |= {"sign_p": 0.5}
    assert statistics_text(tied) == "— | [-1.0, +3.0] | — | 2 of 4 (2 level) | 0.500"


def test_the_plots_draw_the_teacher_at_its_accuracy_on_a_numeric_axis(tmp_path, monkeypatch):
    # the teacher's accuracy once reached the plots as the report's text ("77.5%"), which
    # made matplotlib's y axis categorical: every curve lost its scale
    import matplotlib.axes

    drawn = []
    original = matplotlib.axes.Axes.axhline

    def axhline(self, y=0, *args, **kwargs):
        drawn.append(y)
        return original(self, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", axhline)
    results = tmp_path / "results.jsonl"
    synthetic_results(results)
    report(results)
    assert drawn and all(isinstance(y, float) and y == pytest.approx(77.5) for y in drawn)
