"""Rows and bars are named by the method a run built and ordered as a reader expects."""
import pandas as pd

from lai_bench.bench.cli import parse_methods
from lai_bench.summary.aggregate import variant_labels
from lai_bench.summary.display import natural_key


def test_an_old_dla_l_record_with_base_attention_is_labelled_dla_b():
    agg = pd.DataFrame({"method": ["dla_l", "dla_l", "dla_l"], "backbone": "cifar", "depth": 164,
                        "opt.attention": ["light", "base", "base"], "opt.reduction": [4, 4, 16]})
    labels = variant_labels(agg, ["method", "backbone", "depth", "opt.attention", "opt.reduction"])
    assert list(labels) == ["DLA-L", "DLA-B [reduction=4]", "DLA-B [reduction=16]"]


def test_numbers_in_labels_sort_as_numbers():
    assert sorted(["r=16", "r=2", "r=4", "a"], key=natural_key) == ["a", "r=2", "r=4", "r=16"]


def test_the_benchmark_measures_every_method_in_the_papers_order():
    assert [m for m, _ in parse_methods("all", False)] == [
        "none", "se", "eca", "dianet", "mrla_light", "mrla_base", "dense", "rla", "dla_l", "dla_b", "kcla", "dwa", "hc",
        "dhc", "mhc", "laurel", "laurel_lr", "laurel_pa"]


def test_an_unset_dla_path_reads_as_what_the_model_built():
    from lai_bench.summary.aggregate import with_default_options

    def opts(**given):
        return with_default_options({"method": "dla_l", "backbone": "cifar", "model_opts": given})["model_opts"]

    assert opts()["forward_path"] is True and opts()["backward_path"] is True  # a cell exists: both paths on
    assert opts(cell="none")["forward_path"] is False and opts(cell="none")["backward_path"] is False
    assert opts(forward_path=False)["forward_path"] is False and opts(forward_path=False)["backward_path"] is True
    assert opts() == opts(forward_path=True, backward_path=True, cell="dsu")  # the same model: one row
    assert opts()["reduction"] == 4 and opts(stem="deep")["stem"] == "deep"


def test_ablation_labels_say_a_path_only_where_the_cell_does_not_imply_it():
    from lai_bench.summary.aggregate import build_frame

    records = [{"run_id": str(i), "status": "completed", "metrics": {"top1_final": 70.0},
                "config": {"method": "dla_l", "backbone": "cifar", "depth": 164, "dataset": "cifar100", "seed": 0,
                           "model_opts": opts}}
               for i, opts in enumerate([{}, {"cell": "none"}, {"forward_path": False}])]
    frame, config_cols = build_frame(records)
    labels = list(variant_labels(frame, config_cols))
    # The paths a cell implies go unsaid; the one row that turned a path off says so.
    assert labels == ["DLA-L [cell=dsu]", "DLA-L [cell=none]", "DLA-L [cell=dsu, forward_path=False]"], labels
