"""The report: seed aggregation against hand-computed numbers, LaTeX structure, figures, with_caveats status."""

from __future__ import annotations

import re
import statistics
import warnings
from pathlib import Path

import pandas as pd
import pytest

from lai_bench.records.store import SCHEMA, write_record
from lai_bench.report import build_report, latex_escape, main

PARAMS = {"none": 1_727_284, "se": 1_920_820, "dianet": 1_946_132, "dla_l": 2_003_496, "rla": 25_871_000}
TRACEBACK = 'Traceback (most recent call last):\n  File "train.py", line 3, in step\nValueError: loss is nan'

# Hand-chosen accuracies: (top1_best, top1_final) per seed.
NONE_C100 = [(74.0, 73.6), (74.5, 74.2), (75.1, 74.7)]
DLA_C100 = [(77.2, 76.8), (77.6, 77.5), (78.1, 77.7)]
SE_C100 = [(75.0, 74.1), (75.6, 75.3)]
PAPER_NONE_C100 = 73.43


def make_record(
    method: str,
    dataset: str,
    seed: int,
    top1: tuple[float, float] | None = None,
    *,
    status: str = "completed",
    grid: str = "cifar",
    backbone: str = "cifar",
    depth: int = 164,
    opts: dict | None = None,
    epochs: int = 4,
    **overrides,
) -> dict:
    """A record as the trainer writes it; ``top1`` is (best, final)."""
    config = {
        "method": method,
        "backbone": backbone,
        "depth": depth,
        "block": "bottleneck",
        "dataset": dataset,
        "seed": seed,
        "model_opts": opts or {},
        "recipe": backbone,
        "epochs": epochs,
        "lr": 0.1,
    }
    best, final = top1 or (float("nan"), float("nan"))
    history = [
        {
            "epoch": e,
            "train_loss": 3.0 / e + seed * 0.01,
            "train_top1": final * e / epochs,
            "eval_top1": final * e / epochs - seed * 0.1,
            "lr": 0.1,
            "time_s": 1.0,
        }
        for e in range(1, epochs + 1)
    ]
    params = PARAMS[method]
    record = {
        "schema": SCHEMA,
        "run_id": f"{grid}-{method}-{dataset}-{depth}-{seed}-{len(opts or {})}",
        "name": f"{method}-{dataset}-d{depth}-s{seed}",
        "grid": grid,
        "status": status,
        "error": None,
        "diverged_epoch": None,
        "config": config,
        "metrics": {
            "top1_best": best,
            "top1_final": final,
            "top5_best": best + 18,
            "top5_final": final + 18,
            "best_epoch": epochs - 1,
        }
        if top1
        else {},
        "history": history,
        "params": params,
        "flops": params * 150,
        "throughput": {"train_samples_per_s": 1000.0 - 10 * len(method), "infer_samples_per_s": 4000.0},
        "peak_memory_bytes": 10**9,
        "peak_memory_kind": "cuda_max_allocated",
        "wall_time_s": 100.0,
        "code_version": "abc1234",
        "torch_version": "2.13.0",
        "device": "cpu",
        "started_at": "2026-11-24T10:00:00Z",
        "finished_at": "2026-11-24T11:00:00Z",
    }
    record.update(overrides)
    return record


def save(folder: Path, record: dict) -> None:
    write_record(folder / f"{record['run_id']}.json", record)


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    """Three grids: an incomplete CIFAR grid, a DSU ablation, a small ImageNet grid; plus two stray JSONs."""
    root = tmp_path_factory.mktemp("results")
    cifar, ablation, imagenet = root / "cifar", root / "dsu_ablation", root / "imagenet"
    for seed in range(3):
        save(cifar, make_record("none", "cifar100", seed, NONE_C100[seed]))
        save(cifar, make_record("none", "cifar10", seed, (93.0 + seed / 10, 92.8)))
        save(cifar, make_record("dla_l", "cifar100", seed, DLA_C100[seed], opts={"backward": True}))
    save(cifar, make_record("se", "cifar100", 0, SE_C100[0]))
    save(cifar, make_record("se", "cifar100", 1, SE_C100[1]))
    save(cifar, make_record("se", "cifar100", 2, status="failed", error=TRACEBACK))
    save(cifar, make_record("dianet", "cifar100", 0, (76.0, 75.5)))
    save(cifar, make_record("dianet", "cifar100", 1, status="diverged", diverged_epoch=12))
    save(cifar, make_record("dianet", "cifar100", 2, status="running", finished_at=None))
    for seed in range(2):
        save(
            ablation,
            make_record(
                "dla_l",
                "cifar100",
                seed,
                (76.5 + seed, 76.0),
                grid="dsu_ablation",
                opts={"backward": False, "cell_type": "dsu"},
            ),
        )
    save(imagenet, make_record("none", "imagenet", 0, (76.1, 75.9), grid="imagenet", backbone="imagenet", depth=50))
    save(imagenet, make_record("rla", "imagenet", 0, (77.5, 77.2), grid="imagenet", backbone="imagenet", depth=50))
    (cifar / "corrupt.json").write_text('{"schema": "lai_bench.record/1", "run_id": "cut-')
    (cifar / "foreign.json").write_text('{"grid": "cifar", "seeds": [0, 1, 2]}')
    return root


@pytest.fixture(scope="module")
def paper_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("paper") / "paper_results.csv"
    path.write_text(
        "method,backbone,depth,dataset,metric,value,unit,source\n"
        f"none,cifar,164,cifar100,top1,{PAPER_NONE_C100},%,DIANet README\n"
        "DIANet,cifar,164,cifar100,top1,76.67,%,DIANet README\n"
        "# a comment line\n"
        "rla,imagenet,50,imagenet,top1_err,22.83,%,RLA-Net README\n"
        "se,cifar,164,cifar100,top1,abc,%,a typo\n"
        "none,cifar,164,cifar100,params,1727284,count,public code\n"
    )
    return path


@pytest.fixture(scope="module")
def report(grid, paper_csv, tmp_path_factory):
    """The report over all three grids; returns (out folder, written paths, warning messages)."""
    out = tmp_path_factory.mktemp("analysis")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = build_report([grid / "cifar", grid / "dsu_ablation", grid / "imagenet"], out, paper=paper_csv)
    return out, written, [str(w.message) for w in caught]


def table(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / "tables" / f"{name}.csv")


def row(frame: pd.DataFrame, **match) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for key, value in match.items():
        mask &= frame[key] == value
    assert mask.sum() == 1, f"{match}: {mask.sum()} rows"
    return frame[mask].iloc[0]


# ------------------------------------------------------------------ aggregation


def test_seeds_are_aggregated_to_mean_and_sample_std(report):
    out, _, _ = report
    cifar = table(out, "cifar")
    resnet = row(cifar, method="none", dataset="cifar100")
    best = [b for b, _ in NONE_C100]
    final = [f for _, f in NONE_C100]
    assert resnet["top1_best_mean"] == pytest.approx(sum(best) / 3)
    assert resnet["top1_best_std"] == pytest.approx(statistics.stdev(best))
    assert resnet["top1_final_mean"] == pytest.approx(sum(final) / 3)
    assert resnet["top1_final_std"] == pytest.approx(statistics.stdev(final))
    assert (resnet["n"], resnet["n_expected"]) == (3, 3)


def test_delta_to_the_paper_and_gain_over_resnet_are_ours_minus_theirs(report):
    out, _, _ = report
    cifar = table(out, "cifar")
    resnet = row(cifar, method="none", dataset="cifar100")
    mean = sum(b for b, _ in NONE_C100) / 3
    assert resnet["paper_top1"] == PAPER_NONE_C100
    assert resnet["delta_top1"] == pytest.approx(mean - PAPER_NONE_C100)
    assert resnet["paper_params_M"] == pytest.approx(1.727284)
    dla = row(cifar, method="dla_l", dataset="cifar100", grid="cifar")
    assert dla["gain"] == pytest.approx(sum(b for b, _ in DLA_C100) / 3 - mean)
    dianet = row(cifar, method="dianet", dataset="cifar100")  # paper row given by display name
    assert dianet["paper_top1"] == 76.67
    assert dianet["paper_gain"] == pytest.approx(76.67 - PAPER_NONE_C100)


def test_error_rates_in_the_paper_csv_become_accuracies(report):
    out, _, _ = report
    rla = row(table(out, "imagenet"), method="rla")
    assert rla["paper_top1"] == pytest.approx(100 - 22.83)
    assert rla["delta_top1"] == pytest.approx(77.5 - (100 - 22.83))


def test_markdown_shows_mean_std_n_and_the_headline(report):
    out, _, _ = report
    text = (out / "tables" / "cifar.md").read_text()
    best = [b for b, _ in NONE_C100]
    assert f"{sum(best) / 3:.2f} ± {statistics.stdev(best):.2f}" in text
    assert "Headline: best-epoch top-1" in text and "best test epoch" in text
    header = next(line for line in text.splitlines() if line.startswith("| Method"))
    assert header.index("Top-1 best") < header.index("Top-1 final")
    se_line = next(line for line in text.splitlines() if line.startswith("| SE "))
    assert "2/3" in se_line  # a failed seed shows as n < expected


def test_the_ablation_table_has_one_row_per_setting_with_the_differing_options(report):
    out, _, _ = report
    ablation = table(out, "ablation_dsu")
    assert len(ablation) == 2
    assert {"opt.backward", "opt.cell_type"} <= set(ablation.columns)
    assert sorted(ablation["n"]) == [2, 3]
    header = next(
        line for line in (out / "tables" / "ablation_dsu.md").read_text().splitlines() if line.startswith("| Method")
    )
    assert "| backward |" in header and "| cell_type |" in header


def test_all_runs_keeps_every_configuration(report):
    out, _, _ = report
    all_runs = table(out, "all_runs")
    assert len(all_runs) == 6 + 2  # CIFAR: ResNet x2 datasets, SE, DIANet, DLA-L and its ablation variant
    assert row(all_runs, method="dianet")["n_diverged"] == 1
    assert row(all_runs, method="dianet")["n_running"] == 1
    runs = pd.read_csv(out / "tables" / "runs.csv")
    assert len(runs) == 3 * 3 + 3 + 3 + 2 + 2


# ------------------------------------------------------------------ LaTeX


def tabular_body(tex: str) -> tuple[str, list[str]]:
    """The column spec and the lines between \\begin{tabular} and \\end{tabular}."""
    match = re.search(r"\\begin\{tabular\}\{([^}]*)\}\n(.*?)\\end\{tabular\}", tex, re.S)
    assert match, "no tabular"
    return match.group(1), match.group(2).splitlines()


def columns_in(line: str) -> int:
    """Columns a table row spans, counting \\multicolumn widths."""
    cells = re.split(r"(?<!\\)&", line.removesuffix("\\\\"))
    return sum(int(m.group(1)) if (m := re.match(r"\s*\\multicolumn\{(\d+)\}", c)) else 1 for c in cells)


@pytest.mark.parametrize("name", ["cifar", "imagenet", "ablation_dsu", "all_runs"])
def test_latex_tables_are_well_formed_booktabs(report, name):
    out, _, _ = report
    tex = (out / "tables" / f"{name}.tex").read_text()
    assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") == 1
    assert tex.count("\\begin{table}") == tex.count("\\end{table}") == 1
    assert tex.count("{") - tex.count("\\{") == tex.count("}") - tex.count("\\}")
    spec, body = tabular_body(tex)
    rules = [line.strip() for line in body if line.strip() in ("\\toprule", "\\midrule", "\\bottomrule")]
    assert rules == ["\\toprule", "\\midrule", "\\bottomrule"]
    rows = [line for line in body if line.rstrip().endswith("\\\\")]
    assert len(rows) >= 2
    assert all(columns_in(line) == len(spec) for line in rows), [columns_in(line) for line in rows]
    for line in tex.splitlines():
        if line.startswith("%"):
            continue  # the header comment
        plain = re.sub(r"\$(\\[a-zA-Z]+|-)\$", "", line.removesuffix("%"))  # $\pm$, $\Delta$, $-$, line-end %
        assert not re.search(r"(?<!\\)[_#$%]", plain), line


def test_latex_escapes_and_bolds_the_best_value(report):
    out, _, _ = report
    cifar = (out / "tables" / "cifar.tex").read_text()
    dla_best = f"{sum(b for b, _ in DLA_C100) / 3:.2f}"
    assert re.search(r"\\textbf\{" + re.escape(dla_best) + r" \$\\pm\$", cifar)
    assert "\\multicolumn" in cifar and "\\cmidrule" in cifar
    assert "Top-1 best (\\%)" in cifar and "paper\\_results.csv" in cifar
    assert "dsu\\_ablation" in (out / "tables" / "all_runs.tex").read_text()
    assert latex_escape("a_b 5% & x^2 ±") == r"a\_b 5\% \& x\textasciicircum{}2 $\pm$"


def table_rows(text: str, fmt: str) -> list[list[str]]:
    """Body cells of a rendered table: Markdown rows after the alignment line, LaTeX rows after \\midrule."""
    lines = text.splitlines()
    if fmt == "md":
        start = next(i for i, line in enumerate(lines) if line.startswith("| :--")) + 1
        return [re.split(r"(?<!\\)\|", line)[1:-1] for line in lines[start:] if line.startswith("|")]
    body = lines[lines.index("\\midrule") + 1 : lines.index("\\bottomrule")]
    return [re.split(r"(?<!\\)&", line.removesuffix("\\\\")) for line in body]


@pytest.mark.parametrize("name", ["cifar", "imagenet", "ablation_dsu", "all_runs"])
def test_markdown_and_latex_bold_the_same_cells(report, name):
    out, _, _ = report
    md = table_rows((out / "tables" / f"{name}.md").read_text(), "md")
    tex = table_rows((out / "tables" / f"{name}.tex").read_text(), "tex")
    md_bold = [[cell.strip().startswith("**") for cell in line] for line in md]
    tex_bold = [[cell.strip().startswith("\\textbf{") for cell in line] for line in tex]
    # The ImageNet rows ran one seed each: no value is marked best there (a single run's lead may be seed noise).
    assert md_bold == tex_bold and any(map(any, md_bold)) == (name != "imagenet")


def test_every_tied_best_value_is_bold(report):
    out, _, _ = report
    tex = (out / "tables" / "all_runs.tex").read_text()
    resnet = [line for line in tex.splitlines() if line.startswith("ResNet &")]
    assert len(resnet) == 3  # CIFAR-10, CIFAR-100, ImageNet: one parameter count, the lowest
    assert all("\\textbf{1.727}" in line for line in resnet)
    assert tex.count("\\textbf{1.727}") == 3 and "\\textbf{2.003}" not in tex


def test_cmidrules_span_the_column_groups(report):
    out, _, _ = report
    _, body = tabular_body((out / "tables" / "cifar.tex").read_text())
    groups, rules = body[1], body[2]
    spans, start = {}, 1
    for cell in re.split(r"(?<!\\)&", groups.removesuffix("\\\\")):
        match = re.match(r"\s*\\multicolumn\{(\d+)\}\{c\}\{(.*)\}\s*$", cell)
        width, name = (int(match.group(1)), match.group(2)) if match else (1, cell.strip())
        if name:
            spans[name] = (start, start + width - 1)
        start += width
    assert spans == {"CIFAR-10": (3, 8), "CIFAR-100": (9, 19)}  # CIFAR-10 has only ResNet: no gain column
    assert rules == " ".join(f"\\cmidrule(lr){{{a}-{b}}}" for a, b in spans.values())


def test_latex_escapes_text_cells_and_keeps_the_float(tmp_path):
    odd = "odd_grid & 50% #1 ~x ^y"
    save(tmp_path / "odd", make_record("none", "cifar10", 0, (90.0, 89.0), grid=odd, run_id="odd-0"))
    save(tmp_path / "odd", make_record("none", "cifar10", 1, (91.0, 90.5), grid=odd, run_id="odd-1"))
    build_report(tmp_path / "odd", tmp_path / "out")
    tex = (tmp_path / "out" / "tables" / "all_runs.tex").read_text()
    (cells,) = table_rows(tex, "tex")
    assert cells[1].strip() == r"odd\_grid \& 50\% \#1 \textasciitilde x \textasciicircum y"
    assert cells[5].strip() == r"90.50 $\pm$ 0.71"  # one configuration: nothing to single out, no bold
    md = (tmp_path / "out" / "tables" / "all_runs.md").read_text()
    assert "\\textbf" not in tex and not any("**" in cell for cell in table_rows(md, "md")[0])
    assert "\\multicolumn" not in tex and "\\cmidrule" not in tex  # no column groups
    assert "\\label{tab:all-runs}" in tex and "\\resizebox{\\linewidth}{!}{%" in tex
    assert "\\end{tabular}%\n}\n\\end{table}\n" in tex
    cifar = (tmp_path / "out" / "tables" / "cifar.tex").read_text()
    assert "\\multicolumn{2}{c}{} & \\multicolumn{6}{c}{CIFAR-10} \\\\\n\\cmidrule(lr){3-8}\n" in cifar


def test_labels_with_brackets_are_braced_in_latex(report):
    out, _, _ = report
    tex = (out / "tables" / "cifar.tex").read_text()
    assert "\nDLA-L {[}backward=True, cell\\_type=default{]} & ResNet-164 &" in tex


def test_the_package_runs_as_a_module_and_exports_its_names():
    import subprocess
    import sys

    import lai_bench.report as report_package

    assert all(hasattr(report_package, name) for name in report_package.__all__)
    command = [sys.executable, "-m", "lai_bench.report", "--help"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert done.returncode == 0 and done.stdout.startswith("usage: python -m lai_bench.report")
    assert all(option in done.stdout for option in ("--out", "--paper", "--metric", "--expected"))


# ------------------------------------------------------------------ figures


def test_every_figure_is_written_as_png_and_pdf(report):
    out, written, _ = report
    stems = [
        f"{kind}_{dataset}"
        for dataset in ("cifar10", "cifar100", "imagenet")
        for kind in ("acc_vs_params", "acc_vs_flops", "curves")
    ] + ["ablation_dsu"]
    for stem in stems:
        png, pdf = out / "figures" / f"{stem}.png", out / "figures" / f"{stem}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000, stem
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1_000, stem
    assert sorted(written["figures"]) == sorted(out / "figures" / f"{s}.{e}" for s in stems for e in ("png", "pdf"))


# ------------------------------------------------------------------ status and honesty


def test_status_lists_failed_diverged_and_running_runs(report):
    out, written, _ = report
    status = (out / "status.md").read_text()
    failed = next(line for line in status.splitlines() if "se-cifar100-d164-s2" in line)
    assert "ValueError: loss is nan" in failed and "Traceback" not in failed
    diverged = next(line for line in status.splitlines() if "dianet-cifar100-d164-s1" in line)
    assert "epoch 12" in diverged
    assert "## Running" in status and "dianet-cifar100-d164-s2" in status
    assert "| all | 16 | 1 | 1 | 1 | 19 |" in status  # completed, diverged, failed, running, total
    assert "2/3" in status  # SE and DIANet have fewer completed seeds than the grid
    csv = pd.read_csv(out / "status.csv")
    assert sorted(csv["status"].unique()) == ["completed", "diverged", "failed", "running"]


def test_corrupt_and_foreign_json_are_named_and_skipped(report):
    out, _, messages = report
    assert any("corrupt.json" in m for m in messages)
    assert any("foreign.json" in m for m in messages)
    status = (out / "status.md").read_text()
    assert "corrupt.json" in status and "foreign.json" in status


def test_a_bad_paper_row_is_named_by_its_line(report):
    _, _, messages = report
    bad = [m for m in messages if "line 6" in m]
    assert len(bad) == 1 and "abc" in bad[0]


def test_the_cli_reports_missing_runs_and_the_final_epoch_headline(grid, paper_csv, tmp_path, capsys):
    expected = tmp_path / "expected.txt"
    ids = [p.stem for p in (grid / "cifar").glob("*.json") if p.stem not in ("corrupt", "foreign")]
    expected.write_text("\n".join(ids) + "\nghost-run-7   none-cifar100-d164-s3\n# comment\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(
            [
                str(grid / "cifar"),
                "--out",
                str(tmp_path / "out"),
                "--paper",
                str(paper_csv),
                "--metric",
                "final",
                "--expected",
                str(expected),
            ]
        )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"wrote {tmp_path / 'out' / 'tables' / 'cifar.tex'}" in printed
    assert f"wrote {tmp_path / 'out' / 'status.md'}" in printed
    status = (tmp_path / "out" / "status.md").read_text()
    assert "ghost-run-7" in status and "none-cifar100-d164-s3" in status
    resnet = row(pd.read_csv(tmp_path / "out" / "tables" / "cifar.csv"), method="none", dataset="cifar100")
    assert resnet["delta_top1"] == pytest.approx(sum(f for _, f in NONE_C100) / 3 - PAPER_NONE_C100)
    header = next(
        line
        for line in (tmp_path / "out" / "tables" / "cifar.md").read_text().splitlines()
        if line.startswith("| Method")
    )
    assert header.index("Top-1 final") < header.index("Top-1 best")
    assert not (tmp_path / "out" / "tables" / "imagenet.md").exists()  # no ImageNet records given


def test_the_cli_refuses_a_missing_folder(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "nope" in capsys.readouterr().err


def test_tables_are_written_only_for_records_that_exist(tmp_path):
    save(tmp_path / "smoke", make_record("none", "synthetic", 0, (12.0, 11.0), grid="smoke", depth=20))
    save(tmp_path / "smoke", make_record("dla_l", "synthetic", 0, status="running", grid="smoke", depth=20))
    stale = tmp_path / "out" / "tables" / "imagenet.md"  # left by an earlier report over other records
    stale.parent.mkdir(parents=True)
    stale.write_text("old numbers")
    keep = tmp_path / "out" / "tables" / "my_notes.md"
    keep.write_text("not ours")
    written = build_report(tmp_path / "smoke", tmp_path / "out")
    assert not stale.exists() and keep.exists() and written["removed"] == [stale]
    names = sorted(p.name for p in written["tables"])
    assert names == ["all_runs.csv", "all_runs.md", "all_runs.tex", "runs.csv"]
    assert (tmp_path / "out" / "figures" / "acc_vs_params_synthetic.png").is_file()
    assert "dla_l-synthetic-d20-s0" in (tmp_path / "out" / "status.md").read_text()


def test_an_empty_folder_gives_a_status_and_no_tables(tmp_path):
    (tmp_path / "empty").mkdir()
    written = build_report(tmp_path / "empty", tmp_path / "out")
    assert written["tables"] == [] and written["figures"] == []
    assert "0 run record(s) loaded" in (tmp_path / "out" / "status.md").read_text()


# ------------------------------------------------------------------ a real grid, end to end


@pytest.mark.slow
def test_a_real_tiny_grid_becomes_tables_and_figures(tmp_path):
    """Records written by real training runs (CIFAR-10 files on disk) -> the CLI's tables, status and figures."""
    import yaml
    from data_files import make_separable_cifar

    from lai_bench.launch.grid import read_grid
    from lai_bench.launch.launcher import launch

    make_separable_cifar(tmp_path / "data", 10, n_train=64, n_test=24)
    base = {"backbone": "cifar", "depth": 8, "dataset": "cifar10", "data_root": str(tmp_path / "data"),
            "recipe": "smoke", "epochs": 2, "batch_size": 16, "eval_batch_size": 24, "measure": False}
    grid_path = tmp_path / "tiny.yaml"
    grid_path.write_text(yaml.safe_dump({"name": "tiny", "base": base, "grid": {
        # dla_l with cell spelled out as its default is the same model as dla_l without it: one row, two grids' worth.
        "variant": [{"method": "none"}, {"method": "dla_l"}, {"method": "dla_l", "model_opts.cell": "lstm"}],
        "seed": [0, 1]}}))
    plan, outcomes = launch(read_grid(grid_path), tmp_path / "results", "debug", log=lambda s: None)
    assert [o.status for o in outcomes] == ["completed"] * 6
    # Another grid spelling out the default and setting a non-semantic key: a new run id, the same row.
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"name": "other", "base": {**base, "method": "dla_l", "seed": 2, "workers": 0,
                                                               "model_opts": {"cell": "dsu"}}}))
    assert [o.status for o in launch(read_grid(other), tmp_path / "results", "debug", log=lambda s: None)[1]] == [
        "completed"]

    out = tmp_path / "analysis"
    assert main([str(tmp_path / "results"), "--out", str(out), "--metric", "final"]) == 0
    records = {p.stem: __import__("json").loads(p.read_text())
               for p in (tmp_path / "results").rglob("*.json") if p.name != "jobs.json"}
    cifar = pd.read_csv(out / "tables" / "cifar.csv")
    assert len(cifar) == 3  # ResNet, DLA-L (dsu, 3 seeds over two grids), DLA-L (lstm)
    dsu = row(cifar, label="DLA-L [cell=dsu]")
    finals = [r["metrics"]["top1_final"] for r in records.values()
              if r["config"]["method"] == "dla_l" and r["config"]["model_opts"].get("cell", "dsu") == "dsu"]
    assert len(finals) == 3 and dsu["n"] == 3
    assert dsu["top1_final_mean"] == pytest.approx(statistics.mean(finals))
    assert dsu["top1_final_std"] == pytest.approx(statistics.stdev(finals))
    params = {r["config"]["model_opts"].get("cell", "dsu"): r["params"] for r in records.values()
              if r["config"]["method"] == "dla_l"}
    assert dsu["params_M"] == pytest.approx(params["dsu"] / 1e6)
    md = (out / "tables" / "cifar.md").read_text()
    assert "DLA-L [cell=dsu]" in md and "DLA-L [cell=lstm]" in md and "measure" not in md
    status = (out / "status.md").read_text()
    assert "7 run record(s) loaded" in status and "jobs.json" not in status
    for stem in ("acc_vs_params_cifar10", "acc_vs_flops_cifar10", "curves_cifar10"):
        for suffix in (".png", ".pdf"):
            assert (out / "figures" / f"{stem}{suffix}").stat().st_size > 1000


def test_the_ablation_table_shows_the_refresh_context_pair(tmp_path):
    """ablation_dsu.yaml's pair: the public code's sample-0 refresh (spelled out or left to the default) against
    each sample's own context; one row each, the option in its own column."""
    folder = tmp_path / "ablation_dsu"
    save(folder, make_record("dla_l", "cifar100", 0, (76.0, 75.0), grid="ablation_dsu",
                             opts={"cell": "dsu", "refresh_context": "sample0"}))
    save(folder, make_record("dla_l", "cifar100", 1, (76.4, 75.2), grid="ablation_dsu"))  # the default: sample0
    save(folder, make_record("dla_l", "cifar100", 0, (76.8, 76.1), grid="ablation_dsu",
                             opts={"refresh_context": "per_sample"}))
    out = tmp_path / "analysis"
    build_report([folder], out)
    ablation = table(out, "ablation_dsu")
    assert sorted(ablation["opt.refresh_context"]) == ["per_sample", "sample0"]
    assert dict(zip(ablation["opt.refresh_context"], ablation["n"])) == {"sample0": 2, "per_sample": 1}
    header = next(
        line for line in (out / "tables" / "ablation_dsu.md").read_text().splitlines() if line.startswith("| Method")
    )
    assert "| refresh_context |" in header
