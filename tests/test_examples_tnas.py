"""examples/tnas_transfer.py and examples/tnas_predictor.py on the real NAS-Bench-201 file.

One tiny meta-training (the first transfer run's) is shared by every test of this module.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from example_loader import load_example
from naslib_bayes.predictors import surrogate_io

TARGET = "cifar100"
BUDGET = 12
# 50 = one validation of meta-training: fewer would keep the untrained weights (see meta_train's eval_every)
TINY_META = ["--meta-iterations", "50"]
REGRET_AT = (1, 5, 10)  # those of the example's steps within BUDGET


@pytest.fixture(scope="module")
def transfer():
    return load_example("tnas_transfer")


@pytest.fixture(scope="module")
def predictor():
    return load_example("tnas_predictor")


def transfer_argv(nats_csv, out, *extra):
    return ["--benchmark", str(nats_csv), "--target", TARGET, "--budget", str(BUDGET), "--out", str(out),
            *TINY_META, *extra]


@pytest.fixture(scope="module")
def first_run(transfer, nats_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("tnas-transfer")
    return out, transfer.main(transfer_argv(nats_csv, out, "--with-gp-bo"))


def assert_one_line_error(capsys, exit_info, *names):
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("error: ") and "\n" not in message
    for name in names:
        assert name in message


# ---- tnas_transfer.py -------------------------------------------------------------------------
def test_the_surrogate_is_meta_trained_without_the_target_and_saved_for_the_cli(first_run):
    out, result = first_run
    assert result["surrogate"]["meta_trained_now"]
    surrogate, info = surrogate_io.load(out)  # what `search --surrogate OUT` reads
    assert TARGET not in info["meta_datasets"] and info["meta_datasets"] == ["cifar10", "ImageNet16-120"]
    assert TARGET not in surrogate.config.meta_datasets
    assert info["meta_train"]["iterations"] == 50


def test_regrets_are_the_optimum_minus_the_incumbent_of_the_cells_each_method_queried(first_run, nats_benchmark):
    _, result = first_run
    best = nats_benchmark.best(TARGET)
    assert result["best"] == best
    assert set(result["methods"]) == {"tnas", "transfer-topk", "rs", "gp-bo"}
    for name, row in result["methods"].items():
        archs = row["architectures"]
        assert len(archs) == BUDGET and len(set(archs)) == BUDGET, name  # no cell queried twice
        accuracy = [nats_benchmark.query(a, TARGET) for a in archs]
        assert row["accuracies"] == pytest.approx(accuracy)
        assert row["incumbent"] == pytest.approx(np.maximum.accumulate(accuracy).tolist())
        assert sorted(row["regret"]) == list(REGRET_AT)
        for k in REGRET_AT:
            assert row["regret"][k] == pytest.approx(best - max(accuracy[:k])), (name, k)
        reached = [i for i, a in enumerate(accuracy, start=1) if a >= best - 1e-9]
        assert row["reached_optimum_at"] == (reached[0] if reached else None)


def test_tnas_starts_with_the_top_of_the_surrogates_prior(first_run):
    _, result = first_run
    tnas = result["methods"]["tnas"]
    assert result["initial_design"] == tnas["architectures"][:5] == result["prior_top"]
    # the optimum is in the initial design exactly when the prior ranks it in the top 5
    in_initial = tnas["reached_optimum_at"] is not None and tnas["reached_optimum_at"] <= 5
    assert (result["prior_rank_of_optimum"] <= 5) == in_initial
    assert 1 <= result["prior_rank_of_optimum"] <= 15625


def test_a_second_run_reuses_the_saved_surrogate_and_repeats_every_search(first_run, transfer, nats_csv, capsys):
    out, result = first_run
    saved = (out / "surrogate.pt").stat().st_mtime_ns
    capsys.readouterr()
    again = transfer.main(transfer_argv(nats_csv, out))
    printed = capsys.readouterr().out
    assert "meta-training on" not in printed and "reusing" in printed
    assert not again["surrogate"]["meta_trained_now"]
    assert (out / "surrogate.pt").stat().st_mtime_ns == saved
    assert set(again["methods"]) == {"tnas", "transfer-topk", "rs"}  # gp-bo only with --with-gp-bo
    for name, row in again["methods"].items():
        assert row == result["methods"][name], name  # same seed, same surrogate: same trajectory
    assert again["prior_rank_of_optimum"] == result["prior_rank_of_optimum"]
    table = {line.split()[0]: line.split() for line in printed.splitlines() if line.strip()}
    for name, row in again["methods"].items():  # the printed table shows the returned regrets
        assert [float(v) for v in table[name][1:4]] == [round(row["regret"][k], 3) for k in REGRET_AT]


def test_a_saved_surrogate_that_has_seen_the_target_is_refused(first_run, transfer, nats_csv, capsys):
    out, _ = first_run  # meta-trained on cifar10 and ImageNet16-120
    argv = transfer_argv(nats_csv, out)
    argv[argv.index(TARGET)] = "cifar10"
    with pytest.raises(SystemExit) as exit_info:
        transfer.main(argv)
    assert_one_line_error(capsys, exit_info, "cifar10", "--out")


@pytest.mark.parametrize("option, value, name", [("--seed", "1", "seed 0, not 1"),
                                                 ("--meta-iterations", "7", "iterations 50, not 7")])
def test_a_saved_surrogate_of_another_seed_or_budget_is_refused(first_run, transfer, nats_csv, capsys, option, value,
                                                                name):
    out, _ = first_run
    argv = transfer_argv(nats_csv, out)
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    with pytest.raises(SystemExit) as exit_info:
        transfer.main(argv)
    assert_one_line_error(capsys, exit_info, name, "--out")


def test_a_missing_benchmark_is_a_one_line_error_naming_it(transfer, tmp_path, capsys):
    missing = tmp_path / "no-such-benchmark.csv"
    with pytest.raises(SystemExit) as exit_info:
        transfer.main(transfer_argv(missing, tmp_path / "out"))
    assert_one_line_error(capsys, exit_info, str(missing))
    assert not (tmp_path / "out").exists()


def test_an_unknown_target_is_a_one_line_error_naming_it(transfer, nats_csv, tmp_path, capsys):
    argv = transfer_argv(nats_csv, tmp_path)
    argv[argv.index(TARGET)] = "svhn"
    with pytest.raises(SystemExit) as exit_info:
        transfer.main(argv)
    assert_one_line_error(capsys, exit_info, "svhn")


# ---- tnas_predictor.py ------------------------------------------------------------------------
TRAIN, TEST = 30, 300


def predictor_argv(nats_csv, *extra):
    return ["--benchmark", str(nats_csv), "--target", TARGET, "--train-size", str(TRAIN),
            "--test-size", str(TEST), *extra]


@pytest.fixture(scope="module")
def predicted(first_run, predictor, nats_csv):
    out, _ = first_run
    return predictor.main(predictor_argv(nats_csv, "--surrogate", str(out)))


def test_predictors_are_scored_on_target_cells_disjoint_from_their_training_cells(predicted, nats_benchmark):
    assert len(predicted["xtrain"]) == TRAIN and len(predicted["xtest"]) == TEST
    assert len(set(predicted["xtrain"])) == TRAIN and len(set(predicted["xtest"])) == TEST
    assert not set(predicted["xtrain"]) & set(predicted["xtest"])
    for archs, values in ((predicted["xtrain"], predicted["ytrain"]), (predicted["xtest"], predicted["ytest"])):
        assert np.allclose(values, [nats_benchmark.query(a, TARGET) for a in archs])
    assert TARGET not in predicted["meta_datasets"]
    assert set(predicted["predictors"]) == {"meta-learned", "no meta-learning"}


def test_query_is_the_mean_of_predict_dist_and_the_scores_are_computed_from_them(predicted):
    ytest = predicted["ytest"]
    for name, row in predicted["predictors"].items():
        assert row["query"].shape == row["mean"].shape == row["std"].shape == (TEST,)
        np.testing.assert_array_equal(row["query"], row["mean"])
        assert np.isfinite(row["std"]).all() and (row["std"] >= 0).all()
        for key in ("spearman", "kendall"):
            assert -1.0 <= row[key] <= 1.0, (name, key)
        # Spearman = Pearson correlation of the ranks, computed here independently
        ranks = np.corrcoef(stats.rankdata(row["query"]), stats.rankdata(ytest))[0, 1]
        assert row["spearman"] == pytest.approx(ranks)
        assert row["coverage"] == pytest.approx(np.mean(np.abs(ytest - row["mean"]) <= 2 * row["std"]))
    # the two predictors start from different kernels, so they cannot agree cell for cell
    assert not np.allclose(predicted["predictors"]["meta-learned"]["query"],
                           predicted["predictors"]["no meta-learning"]["query"])


def test_the_predictor_meta_trains_into_out_without_the_target_then_reuses_it(predictor, nats_csv, tmp_path, capsys):
    argv = predictor_argv(nats_csv, "--out", str(tmp_path), "--meta-iterations", "5")
    first = predictor.main(argv)
    assert "meta-training on" in capsys.readouterr().out
    _, info = surrogate_io.load(tmp_path)
    assert TARGET not in info["meta_datasets"] and info["meta_train"]["iterations"] == 5
    second = predictor.main(argv)
    assert "meta-training on" not in capsys.readouterr().out
    assert second["xtest"] == first["xtest"]
    for name, row in first["predictors"].items():  # same seed, same cells, same predictions
        np.testing.assert_array_equal(second["predictors"][name]["query"], row["query"])


def test_a_given_surrogate_that_has_seen_the_target_is_refused_naming_surrogate(first_run, predictor, nats_csv,
                                                                               capsys):
    out, _ = first_run  # meta-trained on cifar10 and ImageNet16-120
    argv = predictor_argv(nats_csv, "--surrogate", str(out))
    argv[argv.index(TARGET)] = "cifar10"
    with pytest.raises(SystemExit) as exit_info:
        predictor.main(argv)
    assert_one_line_error(capsys, exit_info, "cifar10", "--surrogate")  # the option to change, not --out


def test_a_missing_surrogate_is_a_one_line_error_naming_it(predictor, nats_csv, tmp_path, capsys):
    missing = tmp_path / "no-surrogate"
    with pytest.raises(SystemExit) as exit_info:
        predictor.main(predictor_argv(nats_csv, "--surrogate", str(missing)))
    assert_one_line_error(capsys, exit_info, str(missing))


@pytest.mark.parametrize("example, argv", [
    ("transfer", lambda csv, out: transfer_argv(csv, out, "--seed", "-1")),
    ("predictor", lambda csv, out: predictor_argv(csv, "--out", str(out), "--seed", "-1")),
])
def test_a_negative_seed_is_refused_before_anything_runs(transfer, predictor, nats_csv, tmp_path, capsys, example,
                                                         argv):
    # numpy's generators refuse negative seeds: it surfaced as a traceback after meta-training began
    module = {"transfer": transfer, "predictor": predictor}[example]
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv(nats_csv, tmp_path / "out"))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert "argument --seed: expected an integer from 0 to 4294967295, got '-1'" in err
    assert not (tmp_path / "out").exists()


def test_summarise_finds_the_first_query_matching_the_optimum_and_the_regrets(transfer):
    # hand-made: the incumbent reaches the optimum 73.5 at query 5, exactly (the tolerance is for rounding only)
    incumbent = [70.0, 71.0, 71.0, 73.5 - 1e-10, 73.5, 73.5, 73.5, 73.5, 73.5, 73.5, 73.5, 73.5]
    result = {"report_optimum": 73.5, "incumbent_report_accuracy": incumbent,
              "trajectory": [{"architecture": f"cell{i}", "accuracy": a} for i, a in enumerate(incumbent)]}
    summary = transfer.summarise(result)
    assert summary["reached_optimum_at"] == 4  # 73.5 - 1e-10 counts: within 1e-9
    assert summary["regret"] == pytest.approx({1: 3.5, 5: 0.0, 10: 0.0})  # 20 is past the 12 queries
    never = transfer.summarise({**result, "incumbent_report_accuracy": [70.0] * 12})
    assert never["reached_optimum_at"] is None


@pytest.mark.parametrize("example, argv", [
    ("transfer", lambda csv, out: transfer_argv(csv, out)),
    ("predictor", lambda csv, out: predictor_argv(csv, "--out", str(out), *TINY_META)),
])
def test_an_out_that_is_a_file_is_refused_before_meta_training(transfer, predictor, nats_csv, tmp_path, capsys,
                                                               example, argv):
    module = {"transfer": transfer, "predictor": predictor}[example]
    in_the_way = tmp_path / "runs"
    in_the_way.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        module.main(argv(nats_csv, in_the_way))
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    assert "meta-training on" not in captured.out  # refused before the meta-training it could not save
    message = captured.err.strip()
    assert message.startswith("error: ") and "\n" not in message and str(in_the_way) in message
