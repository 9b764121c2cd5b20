"""The GPU benchmark's arithmetic and its CPU (tiny) mode, including trials sharing a device."""
import pytest

from benchmarks.bench_gpu_training import main, project


def test_projection_is_the_protocols_image_count_over_the_rates():
    # 3 folds of 300 cells: each fold trains on 200 (160 train + 40 early-stopping) and scores 100
    p = project(train_ips=100.0, eval_ips=200.0, n_cells=300, n_trials=2, n_folds=3, mean_epochs=10, inner_val=0.2)
    per_epoch = 160 / 100 + 40 / 200
    assert p["search_s"] == pytest.approx(2 * 3 * (10 * per_epoch + 100 / 200))
    assert p["refit_s"] == pytest.approx(10 * 300 / 100)
    doubled = project(train_ips=200.0, eval_ips=400.0, n_cells=300, n_trials=2, n_folds=3, mean_epochs=10)
    assert doubled["search_s"] == pytest.approx(p["search_s"] / 2)


def test_tiny_cpu_mode_with_two_processes_sums_their_rates(capsys):
    out = main(["--backbones", "mobilenet_v2", "--processes", "2", "--device", "cpu"])
    assert out["tiny"] and out["processes"] == 2
    row = out["rows"][0]
    assert row["train_ips_bs8"] > 0 and row["eval_ips_bs8"] > 0
    # the refit runs alone: projected at one trial's share of the aggregate rate
    # (the row's rates are rounded to 0.1 images/s)
    assert row["refit_s"] == pytest.approx(2 * project(row["train_ips_bs8"], row["eval_ips_bs8"])["refit_s"], rel=0.01)
    assert "TRIALS_PER_GPU=2" in capsys.readouterr().out
