"""examples/naslib_tnas_vs_bananas.py: TNAS and NASLib's BANANAS in NASLib's Trainer (needs NASLib)."""

from __future__ import annotations

import pytest

from example_loader import load_example
from naslib_bayes.search_spaces.nasbench201 import cell as nb201

pytestmark = pytest.mark.naslib

BUDGET = 12


@pytest.fixture(scope="module")
def example():
    return load_example("naslib_tnas_vs_bananas")


def _argv(nats_csv, out, seeds="0"):
    return ["--benchmark", str(nats_csv), "--dataset", "cifar100", "--seeds", seeds, "--budget", str(BUDGET),
            "--meta-iterations", "20", "--out", str(out)]


@pytest.fixture(scope="module")
def first_run(naslib, example, nats_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("naslib-example")
    return out, example.main(_argv(nats_csv, out))


def test_trajectories_are_naslibs_incumbents_and_the_summary_is_their_regret(first_run, nats_benchmark):
    _, result = first_run
    best = nats_benchmark.best("cifar100")
    assert result["best"] == best
    for name in ("tnas", "bananas"):
        (run,) = result["trajectories"][name]
        assert len(run) == BUDGET
        assert all(later >= earlier for earlier, later in zip(run, run[1:]))  # an incumbent never gets worse
        assert max(run) <= best + 1e-9
        summary = result["summary"][name]
        assert summary["regret"][10] == pytest.approx(best - run[9])
        reached = [i + 1 for i, v in enumerate(run) if v >= best - 1e-9]
        assert summary["queries_to_optimum"] == [reached[0] if reached else BUDGET + 1]


def test_surrogate_is_meta_trained_with_the_seed_without_the_target_once_and_reused(first_run, example, nats_csv,
                                                                                     capsys):
    from naslib_bayes.predictors import surrogate_io

    out, result = first_run
    _, info = surrogate_io.load(out / "surrogate-cifar100-seed0")  # one per target and seed
    assert "cifar100" not in info["meta_datasets"] and info["meta_datasets"] and info["seed"] == 0
    capsys.readouterr()
    again = example.main(_argv(nats_csv, out))
    assert "meta-training" not in capsys.readouterr().out  # the saved surrogate was reused
    assert again["trajectories"] == result["trajectories"]  # same seed, same NASLib searches


def test_a_surrogate_of_another_meta_training_budget_is_not_reused_by_default(first_run, example, nats_csv, capsys):
    """Without --meta-iterations the run meta-trains with TNAS's default budget, so the 20-iteration
    surrogate left in --out is refused, not silently searched with."""
    out, _ = first_run
    argv = _argv(nats_csv, out)
    del argv[argv.index("--meta-iterations"):argv.index("--meta-iterations") + 2]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        example.main(argv)
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert "surrogate-cifar100-seed0 was meta-trained with iterations 20, not" in message and "\n" not in message


def test_a_dataset_the_benchmark_lacks_is_a_one_line_error(naslib, example, nats_csv, tmp_path, capsys):
    argv = _argv(nats_csv, tmp_path)
    argv[argv.index("cifar100")] = "svhn"
    with pytest.raises(SystemExit) as exit_info:
        example.main(argv)
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("error: ") and "svhn" in message and "\n" not in message


def test_cell_strings_of_the_searches_are_nb201_cells(first_run, nats_benchmark):
    # every incumbent value is a benchmark value of some cell on the target
    _, result = first_run
    values = {round(nats_benchmark.query(c, "cifar100", "test_accuracy"), 6) for c in nb201.all_cells()}
    for name in ("tnas", "bananas"):
        assert {round(v, 6) for v in result["trajectories"][name][0]} <= values


@pytest.mark.parametrize("seeds", ["0,a", "0,", "", "-1", "0,0"])
def test_a_malformed_seed_list_is_an_argument_error_not_a_traceback(example, nats_csv, tmp_path, capsys, seeds):
    with pytest.raises(SystemExit) as exit_info:
        example.main(_argv(nats_csv, tmp_path / "out", seeds=seeds))
    assert exit_info.value.code == 2
    assert "--seeds" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_seeds_are_a_list_of_seeds_not_a_count(example, nats_csv, tmp_path):
    assert example.parse_args(_argv(nats_csv, tmp_path, seeds="3")).seeds == [3]
    assert example.parse_args(_argv(nats_csv, tmp_path, seeds="2, 0")).seeds == [2, 0]


def test_an_out_that_is_a_file_is_a_one_line_error(naslib, example, nats_csv, tmp_path, capsys):
    in_the_way = tmp_path / "runs"
    in_the_way.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        example.main(_argv(nats_csv, in_the_way))
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("error: ") and str(in_the_way) in message
    assert in_the_way.read_text() == "not a folder"
