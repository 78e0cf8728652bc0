"""The default job a new user runs first (issue 29): every method learns the synthetic task, and the table, report
and figures say what one seed on synthetic data can and cannot say."""
import dataclasses

import pytest

from lai_bench.launch.grid import read_grid
from lai_bench.launch.state import RunState
from lai_bench.models import list_models
from lai_bench.report import build_frame, load_results
from lai_bench.run import DEFAULT_GRID, build_parser, find_grid, print_results, table_notes
from lai_bench.summary.aggregate import aggregate, variant_labels, with_real_methods
from lai_bench.summary.tables import ONE_SEED_NOTE
from lai_bench.tasks.classification.figures import plot_curves, plot_tradeoff
from lai_bench.tasks.classification.notes import below_level
from lai_bench.tasks.classification.tables import build_tables
from lai_bench.train.lifecycle import Run


def demo():
    return read_grid(find_grid("demo"))


def test_the_default_job_is_the_demo_grid_of_every_method_one_seed_each():
    grid = demo()
    assert DEFAULT_GRID == "demo" and build_parser().parse_args([]).grid == "demo"
    assert sorted(spec.config.method for spec in grid.runs) == sorted(list_models())
    assert {spec.config.seed for spec in grid.runs} == {0}
    assert all(s.config.dataset == "synthetic" and s.config.depth == 20 for s in grid.runs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The demo's plain ResNet-20, trained with the demo's settings (the one run a test can afford)."""
    results = tmp_path_factory.mktemp("results")
    grid = demo()
    spec = next(s for s in grid.runs if s.config.method == "none")
    Run(spec.config, results / grid.name, grid=grid.name, log=lambda s: None).run()
    return dataclasses.replace(grid, runs=[spec]), results


def test_the_demos_plain_resnet_learns_the_task(trained):
    grid, results = trained
    record = load_results([results / grid.name])[0][0]
    assert record["status"] == "completed" and record["metrics"]["top1_final"] >= 90.0


def test_the_final_table_says_chance_one_seed_and_ends_with_the_next_step(trained, capsys):
    grid, results = trained
    assert print_results(grid, results) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    text = "\n".join(lines)
    assert "chance is 10 % top-1" in text and "one seed per configuration" in text and "n too small" in text
    assert "best method" not in text and "below 90 %" not in text
    assert lines[-1].startswith("next: python -m lai_bench.report") and "--grid cifar" in lines[-1]


def test_smoke_output_says_it_is_a_plumbing_check():
    notes = table_notes(read_grid(find_grid("smoke")))
    assert any("plumbing check" in n and "mean nothing" in n for n in notes)
    assert not any("plumbing" in n for n in table_notes(demo()))


def test_the_report_draws_the_chance_line_and_marks_nothing_best_with_one_seed(trained):
    grid, results = trained
    records, _ = load_results([results / grid.name])
    frame, config_cols = build_frame(records)
    agg = aggregate(frame, config_cols)
    named = with_real_methods(agg)
    labels = variant_labels(named, config_cols)
    figures = [plot_tradeoff(named, labels, {}, "synthetic", "flops"),
               plot_curves(records, frame, dict(zip(agg["config_key"], labels)), "synthetic")]
    for fig in figures:
        ax = fig.axes[0]
        assert any(list(line.get_ydata()) == [10.0, 10.0] for line in ax.get_lines()), "no chance line at 10 %"
        assert "one seed per configuration" in fig._suptitle.get_text()
        legend = " ".join(t.get_text() for f_ax in fig.axes if f_ax.get_legend() for t in f_ax.get_legend().texts)
        assert "chance 10 %" in legend and "over seeds" not in legend
    for table in build_tables(agg, config_cols):
        assert not table.best.to_numpy().any() and ONE_SEED_NOTE in table.notes
        assert any(n.startswith("Synthetic data: chance 10 %") for n in table.notes)
        assert not any(n.startswith("Bold:") for n in table.notes)


def test_a_demo_run_below_90_is_named_with_why_even_without_a_loss_history():
    grid = demo()
    falling, unstable, bare, good = grid.runs[:4]
    def done(top1, losses):
        return RunState("completed", record={"status": "completed", "metrics": {"top1_final": top1},
                                             "history": [{"train_loss": x} for x in losses]})
    states = {s.run_id: RunState("missing") for s in grid.runs}
    states.update({falling.run_id: done(60.0, [2.0, 1.0, 0.5]), unstable.run_id: done(10.0, [3.1, 2.4]),
                   bare.run_id: done(50.0, []), good.run_id: done(99.0, [0.1])})
    notes = below_level(grid.runs, {run_id: state.record or {} for run_id, state in states.items()})
    assert len(notes) == 3
    assert f"{falling.name} 60.0 %" in notes[0] and "2.00, 1.00, 0.50" in notes[0] and "still falling" in notes[0]
    assert f"{unstable.name} 10.0 %" in notes[1] and "unstable at lr 0.05" in notes[1]
    assert f"{bare.name} 50.0 %" in notes[2] and "no train loss" in notes[2]
