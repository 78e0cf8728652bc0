"""The COCO report: detection records into the box and mask tables (seeds aggregated, published rows beside ours),
never into the classification tables; the AP-vs-GFLOPs figure readable; COCO rows of the paper CSV checked."""

from __future__ import annotations

import statistics
import warnings
from pathlib import Path

import pandas as pd
import pytest
from test_figures import assert_readable, legend_texts
from test_report import columns_in, make_record, save, tabular_body

from lai_bench.core.resources import paper_results_path
from lai_bench.records.store import SCHEMA
from lai_bench.report import build_report, main
from lai_bench.summary.aggregate import COCO_RECORD_METRICS, aggregate, build_frame, load_results
from lai_bench.summary.paper import load_paper
from lai_bench.tasks.detection.report import plot_ap_vs_flops, references

KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# Final-epoch box AP per (detector, method), one value per seed; every other metric is an offset from it.
BOX_AP = {
    ("faster_rcnn", "none"): (36.9, 37.3),
    ("faster_rcnn", "se"): (37.8, 38.4),
    ("faster_rcnn", "dla_l"): (39.1, 39.5),
    ("mask_rcnn", "none"): (37.6, 38.0),
    ("mask_rcnn", "dla_l"): (39.9, 40.3),
}
OFFSET = dict(zip(KEYS, (0.0, 20.0, 3.0, -15.0, 4.0, 11.0)))
SEGM_BELOW_BOX = 3.5  # mask AP = box AP - 3.5
COST = {"none": (41.8e6, 207.0e9), "se": (44.3e6, 207.5e9), "dla_l": (44.9e6, 212.0e9)}  # params, FLOPs


def detection_record(detector: str, method: str, seed: int, *, depth: int = 50, status: str = "completed",
                     pretrained: str | None = "/weights/imagenet.pt", epochs: int = 3) -> dict:
    """A record as the detection task writes it (the spec's schema), final AP from ``BOX_AP``."""
    box = BOX_AP[(detector, method)][seed]
    kinds = ("bbox", "segm") if detector == "mask_rcnn" else ("bbox",)
    final = {f"{kind}_{key}": box + OFFSET[key] - (SEGM_BELOW_BOX if kind == "segm" else 0.0)
             for kind in kinds for key in KEYS}
    history = [{"epoch": e, "train_loss": 2.0 / e, "train_loss_classifier": 1.0 / e, "lr": 0.02, "time_s": 60.0,
                **{f"eval_{k}": v - (epochs - e) for k, v in final.items()}} for e in range(1, epochs + 1)]
    params, flops = COST[method]
    return {
        "schema": SCHEMA,
        "run_id": f"coco-{detector}-{method}-{depth}-{seed}",
        "name": f"{detector}-{method}-coco-d{depth}-s{seed}",
        "grid": "coco",
        "status": status,
        "error": None,
        "diverged_epoch": None,
        "config": {"task": "detection", "detector": detector, "method": method, "backbone": "imagenet",
                   "depth": depth, "dataset": "coco", "seed": seed, "model_opts": {}, "recipe": "coco_1x",
                   "epochs": epochs, "lr": 0.02, "pretrained": pretrained, "min_size": 800, "max_size": 1333},
        "history": history,
        # The best epoch is the last here, but 0.3 above it: the tables must show the final one.
        "metrics": {**{f"{k}_final": v for k, v in final.items()}, **{f"{k}_best": v + 0.3 for k, v in final.items()},
                    "best_epoch": epochs, "train_loss_final": 2.0 / epochs} if status == "completed" else {},
        "params": params,
        "backbone_params": params - 18e6,
        "flops": flops,
        "flops_unsupported": {"aten::topk": 5},
        "throughput": {"infer_images_per_s": 20.0, "infer_step_time_s": 0.1, "batch_size": 2,
                       "image_size": [800, 1333]},
        "wall_time_s": 3600.0,
        "started_at": "2026-12-01T10:00:00Z",
        "finished_at": "2026-12-01T11:00:00Z",
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """Two seeds of Faster R-CNN (ResNet, SE, DLA-L) and Mask R-CNN (ResNet, DLA-L), a running third seed, and one
    CIFAR classification grid in a folder of its own."""
    root = tmp_path_factory.mktemp("results")
    for detector, method in BOX_AP:
        for seed in (0, 1):
            save(root / "coco", detection_record(detector, method, seed))
    running = detection_record("faster_rcnn", "dla_l", 0, status="running")
    running["config"]["seed"] = 2
    save(root / "coco", {**running, "run_id": "coco-running", "name": "faster_rcnn-dla_l-coco-d50-s2",
                         "finished_at": None})
    for seed in (0, 1):
        save(root / "cifar", make_record("none", "cifar100", seed, (74.0 + seed, 73.5)))
        save(root / "cifar", make_record("dla_l", "cifar100", seed, (77.0 + seed, 76.5)))
    return root


@pytest.fixture(scope="module")
def report(results, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("analysis")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shipped paper CSV and the records load without a warning
        written = build_report([results / "coco", results / "cifar"], out, paper=paper_results_path())
    return out, written


def table(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / "tables" / f"{name}.csv")


def our_row(frame: pd.DataFrame, method: str) -> pd.Series:
    rows = frame[(frame["row"] == "ours") & (frame["method"] == method)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


# ------------------------------------------------------------------ tables


def test_the_coco_tables_are_written_per_detector_and_for_masks(report):
    out, written = report
    names = {p.name for p in written["tables"]}
    for stem in ("coco_faster_rcnn_box", "coco_mask_rcnn_box", "coco_mask_rcnn_mask"):
        assert {f"{stem}.md", f"{stem}.tex", f"{stem}.csv"} <= names
    assert not any("retinanet" in name for name in names)  # no RetinaNet records
    assert not any(name.startswith("coco_faster_rcnn_mask") for name in names)
    report_md = (out / "report.md").read_text()
    assert report_md.index("**CIFAR") < report_md.index("**COCO Faster R-CNN") < report_md.index("**All configurations")


@pytest.mark.parametrize("detector,kind,below", [("faster_rcnn", "box", 0.0), ("mask_rcnn", "box", 0.0),
                                                 ("mask_rcnn", "mask", SEGM_BELOW_BOX)])
def test_final_epoch_ap_is_averaged_over_seeds(report, detector, kind, below):
    out, _ = report
    frame = table(out, f"coco_{detector}_{kind}")
    iou = "bbox" if kind == "box" else "segm"
    methods = [m for d, m in BOX_AP if d == detector]
    assert list(frame[frame["row"] == "ours"]["method"]) == methods  # ResNet first, the paper's order
    for method in methods:
        row = our_row(frame, method)
        for key in KEYS:
            seeds = [ap + OFFSET[key] - below for ap in BOX_AP[(detector, method)]]
            assert row[f"{iou}_{key}_final_mean"] == pytest.approx(statistics.mean(seeds))
            assert row[f"{iou}_{key}_final_std"] == pytest.approx(statistics.stdev(seeds))
            assert row[f"{iou}_{key}_best_mean"] == pytest.approx(statistics.mean(seeds) + 0.3)
        assert (row["n"], row["n_expected"]) == (2, 3)  # the grid has seeds 0-2: the third is running
        assert row["params_M"] == pytest.approx(COST[method][0] / 1e6)
        assert row["flops_G"] == pytest.approx(COST[method][1] / 1e9)
        assert row["backbone_params_M"] == pytest.approx(COST[method][0] / 1e6 - 18)
        assert row["init"] == "ImageNet"
    dla = our_row(frame, "dla_l")
    base = statistics.mean(BOX_AP[(detector, "none")])
    assert dla["gain"] == pytest.approx(statistics.mean(BOX_AP[(detector, "dla_l")]) - base)


def test_the_markdown_shows_mean_std_n_and_says_final_epoch(report):
    out, _ = report
    text = (out / "tables" / "coco_faster_rcnn_box.md").read_text()
    seeds = BOX_AP[("faster_rcnn", "dla_l")]
    line = next(line for line in text.splitlines() if line.startswith("| DLA-L "))
    assert f"**{statistics.mean(seeds):.1f} ± {statistics.stdev(seeds):.1f}**" in line  # the best AP: bold
    assert "| 2/3 |" in line  # the third seed is still running
    header = next(line for line in text.splitlines() if line.startswith("| Method"))
    assert header.startswith("| Method | Model | n | Params (M) | GFLOPs | AP | AP50 | AP75 | APS | APM | APL |")
    assert "final epoch" in text.split("\n")[0] and "best epoch's AP is in the CSV" in text
    assert "- ResNet (torchvision): trained longer than 1x" in text
    assert "ResNet-50" in line and "Init" not in header  # every backbone pretrained: no init column


def test_published_rows_stand_beside_ours_with_their_source(report):
    out, _ = report
    for detector, kind, published in (
        ("faster_rcnn", "box", {"ResNet (mmdetection)": 37.4, "ResNet (torchvision)": 37.0}),
        ("mask_rcnn", "box", {"ResNet (mmdetection)": 38.2, "ResNet (torchvision)": 37.9}),
        ("mask_rcnn", "mask", {"ResNet (mmdetection)": 34.7, "ResNet (torchvision)": 34.6}),
    ):
        frame = table(out, f"coco_{detector}_{kind}")
        iou = "bbox" if kind == "box" else "segm"
        refs = frame[frame["row"] == "published"]
        assert dict(zip(refs["label"], refs[f"{iou}_AP_final_mean"])) == published  # R-101 rows: no R-101 runs
        assert refs["source"].str.contains("model zoo|model docs").all()
        assert "26 epochs" in refs[refs["label"] == "ResNet (torchvision)"]["source"].iloc[0]
        text = (out / "tables" / f"coco_{detector}_{kind}.md").read_text()
        lines = [line for line in text.splitlines() if line.startswith("| ResNet")]
        assert [line.split(" | ")[0] for line in lines] == ["| ResNet (mmdetection)", "| ResNet (torchvision)",
                                                           "| ResNet"]
        assert f"| {published['ResNet (mmdetection)']:.1f} |" in lines[0] and "**" not in lines[0]


@pytest.mark.parametrize("name", ["coco_faster_rcnn_box", "coco_mask_rcnn_mask"])
def test_the_latex_tables_are_well_formed(report, name):
    out, _ = report
    tex = (out / "tables" / f"{name}.tex").read_text()
    spec, body = tabular_body(tex)
    rows = [line for line in body if line.rstrip().endswith("\\\\")]
    assert len(rows) >= 5 and all(columns_in(line) == len(spec) for line in rows)
    assert "final epoch" in tex and "\\textbf{" in tex and "\\label{tab:" + name.replace("_", "-") + "}" in tex
    assert "ResNet (mmdetection)" in tex


def test_detection_records_leave_the_classification_tables_as_they_were(results, report, tmp_path):
    out, written = report
    alone = tmp_path / "alone"
    build_report([results / "cifar"], alone, paper=paper_results_path())
    for name in ("cifar.md", "cifar.tex", "cifar.csv", "all_runs.md", "all_runs.tex", "all_runs.csv"):
        assert (out / "tables" / name).read_text() == (alone / "tables" / name).read_text(), name
    names = {p.name for p in written["figures"]}
    assert "curves_cifar100.png" in names and not any(n.endswith("_coco.png") and "ap_vs" not in n for n in names)
    assert "coco_faster_rcnn_box.md" not in {p.name for p in build_report([results / "cifar"], alone)["tables"]}
    runs = pd.read_csv(out / "tables" / "runs.csv")
    assert len(runs) == 11 + 4  # every run is still listed, each task's own
    status = (out / "status.md").read_text()
    assert "faster_rcnn-dla_l-coco-d50-s2" in status  # the running seed
    assert "| DLA-L (Faster R-CNN) | ResNet-50 | COCO | coco | 2/3 |" in status  # short of seeds, detector named


def test_new_classification_records_share_a_row_with_old_ones(tmp_path):
    """A record written after the task split (task: classification, detector: null, ...) and one written before
    it are the same configuration: one row, no ``[task=...]`` label."""
    new_config = {"task": "classification", "detector": None, "pretrained": None, "min_size": 800, "max_size": 1333}
    old = make_record("se", "cifar100", 0, (75.0, 74.0))
    new = make_record("se", "cifar100", 1, (76.0, 75.0))
    new["config"] |= new_config
    save(tmp_path / "runs", old)
    save(tmp_path / "runs", new)
    build_report([tmp_path / "runs"], tmp_path / "out")
    cifar = pd.read_csv(tmp_path / "out" / "tables" / "cifar.csv")
    assert list(cifar["label"]) == ["SE"] and cifar["n"].iloc[0] == 2


def test_randomly_initialised_backbones_are_marked(tmp_path):
    for seed in (0, 1):
        save(tmp_path / "runs", detection_record("faster_rcnn", "none", seed, pretrained=None))
        save(tmp_path / "runs", detection_record("faster_rcnn", "se", seed))
    build_report([tmp_path / "runs"], tmp_path / "out", paper=paper_results_path())
    text = (tmp_path / "out" / "tables" / "coco_faster_rcnn_box.md").read_text()
    assert "| Init |" in text and "not comparable with the published" in text
    resnet = next(line for line in text.splitlines() if line.startswith("| ResNet | ResNet-50 | random"))
    assert "2/2" in resnet
    frame = table(tmp_path / "out", "coco_faster_rcnn_box")
    assert pd.isna(our_row(frame, "se")["gain"])  # no pretrained ResNet to compare with


# ------------------------------------------------------------------ the figure


def loaded(results: Path) -> tuple:
    records, _ = load_results([results / "coco", results / "cifar"])
    frame, config_cols = build_frame(records)
    coco = aggregate(frame[frame["task"] == "detection"], config_cols, COCO_RECORD_METRICS)
    return coco, config_cols


def test_the_ap_vs_gflops_figure_draws_every_point_named_inside_the_canvas(results):
    coco, config_cols = loaded(results)
    fig = plot_ap_vs_flops(coco, config_cols, references(load_paper(paper_results_path())), "coco")
    assert_readable(fig)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["Faster R-CNN", "Mask R-CNN", "Mask R-CNN (mask AP)"]
    for ax, detector in zip(fig.axes, ("faster_rcnn", "mask_rcnn", "mask_rcnn")):
        ours = [line for line in ax.lines if line.get_marker() != "_" and line.get_markerfacecolor() != "none"]
        hollow = [line for line in ax.lines if line.get_markerfacecolor() == "none"]
        assert len(ours) == sum(d == detector for d, _ in BOX_AP) and len(hollow) == 2  # mmdetection, torchvision
        named = [name for text in ax.texts for name in text.get_text().replace("\n", " ").split(", ")]
        expected = {"ResNet", "DLA-L", "ResNet (mmdetection)", "ResNet (torchvision)"}
        assert expected | ({"SE"} if detector == "faster_rcnn" else set()) == set(named)
        assert "AP (%), final epoch" in ax.get_ylabel() and "GFLOPs" in ax.get_xlabel()
    assert set(legend_texts(fig)) == {"ResNet", "SE", "DLA-L", "ResNet (mmdetection)", "ResNet (torchvision)"}


def test_the_report_writes_the_figure_for_coco_only(report):
    out, written = report
    figures = {p.name for p in written["figures"]}
    assert {"ap_vs_flops_coco.png", "ap_vs_flops_coco.pdf"} <= figures
    assert not {"acc_vs_params_coco.png", "curves_coco.png"} & figures  # top-1 figures: classification only
    assert (out / "figures" / "ap_vs_flops_coco.png").stat().st_size > 10_000


# ------------------------------------------------------------------ the paper CSV's COCO rows


def test_the_report_names_the_six_coco_metrics_as_the_evaluation_does():
    from lai_bench.summary.paper import COCO_METRIC_KEYS
    from lai_bench.tasks.detection.evaluate import METRIC_KEYS

    assert COCO_METRIC_KEYS == METRIC_KEYS == KEYS


def test_coco_rows_need_a_known_detector_and_old_files_still_load(tmp_path):
    path = tmp_path / "paper.csv"
    path.write_text(
        "method,backbone,depth,dataset,metric,value,unit,source,detector\n"
        "none,cifar,164,cifar100,top1,73.43,%,DIANet README\n"  # 8 fields: a classification row
        "dla_l,imagenet,50,coco,bbox_AP,39.0,%,DLA paper: Table 4,faster_rcnn\n"
        "dla_l,imagenet,50,coco,params,44.5,M,DLA paper: Table 4,faster_rcnn\n"
        "se,imagenet,50,coco,bbox_AP,38.0,%,no detector\n"
        "se,imagenet,50,coco,bbox_AP,38.0,%,a typo,fast_rcnn\n"
        "se,imagenet,50,imagenet,top1,77.0,%,a mix-up,faster_rcnn\n"
    )
    with pytest.warns(UserWarning) as caught:
        paper = load_paper(path)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3
    assert "line 5" in messages[0] and "bbox_AP needs the detector column" in messages[0]
    assert "line 6" in messages[1] and "unknown detector 'fast_rcnn'" in messages[1]
    assert "line 7" in messages[2] and "leave the detector column empty" in messages[2]
    refs = references(paper)
    assert len(refs) == 1 and refs.iloc[0]["label"] == "DLA-L (DLA paper)"
    assert (refs.iloc[0]["bbox_AP"], refs.iloc[0]["params"]) == (39.0, 44.5)
    old = tmp_path / "old.csv"
    old.write_text("method,backbone,depth,dataset,metric,value,unit,source\nnone,cifar,164,cifar100,top1,73.4,%,x\n")
    assert list(load_paper(old)["detector"]) == [""]


def test_a_paper_row_for_our_method_shows_in_the_table_and_the_cli_runs(results, tmp_path, capsys):
    path = tmp_path / "paper.csv"
    path.write_text(paper_results_path().read_text()
                    + "dla_l,imagenet,50,coco,bbox_AP,39.7,%,DLA paper: Table 4,faster_rcnn\n")
    assert main([str(results / "coco"), "--out", str(tmp_path / "out"), "--paper", str(path)]) == 0
    assert f"wrote {tmp_path / 'out' / 'tables' / 'coco_faster_rcnn_box.md'}" in capsys.readouterr().out
    frame = table(tmp_path / "out", "coco_faster_rcnn_box")
    dla = frame[frame["label"] == "DLA-L (DLA paper)"]
    assert list(dla["bbox_AP_final_mean"]) == [39.7] and list(dla["row"]) == ["published"]
    assert not (tmp_path / "out" / "tables" / "cifar.md").exists()
