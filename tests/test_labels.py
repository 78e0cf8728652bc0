"""Rows and bars are named by the method a run built and ordered as a reader expects."""
import pandas as pd

from lai_bench.bench import parse_methods
from lai_bench.report.aggregate import variant_labels
from lai_bench.report.display import natural_key


def test_an_old_dla_l_record_with_base_attention_is_labelled_dla_b():
    agg = pd.DataFrame({"method": ["dla_l", "dla_l", "dla_l"], "backbone": "cifar", "depth": 164,
                        "opt.attention": ["light", "base", "base"], "opt.reduction": [4, 4, 16]})
    labels = variant_labels(agg, ["method", "backbone", "depth", "opt.attention", "opt.reduction"])
    assert list(labels) == ["DLA-L", "DLA-B [reduction=4]", "DLA-B [reduction=16]"]


def test_numbers_in_labels_sort_as_numbers():
    assert sorted(["r=16", "r=2", "r=4", "a"], key=natural_key) == ["a", "r=2", "r=4", "r=16"]


def test_the_benchmark_measures_every_method_in_the_papers_order():
    assert [m for m, _ in parse_methods("all", False)] == [
        "none", "se", "eca", "dianet", "mrla_light", "mrla_base", "dense", "rla", "dla_l", "dla_b"]
