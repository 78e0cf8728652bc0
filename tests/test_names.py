"""No task, backbone or data-set name is written outside the files of that task, backbone or data set: the core reads
them from the registries (docs/design.md). Checked on every string constant of lai_bench's code that is exactly such a
name (prose in docstrings and help text may mention them)."""
import ast
from pathlib import Path

import lai_bench
from lai_bench.models import backbone_info, list_backbones
from lai_bench.tasks import list_tasks, task_class

PACKAGE = Path(lai_bench.__file__).parent
# Names that are also something else, in the one file that defines that something: the recipes are named after the
# papers' training recipes (cifar, imagenet), `synthetic` is also the config field of the synthetic set's options.
ALSO_SOMETHING_ELSE = {
    "config/recipes.py": {"cifar", "imagenet", "cifar10"},  # recipe names; cifar10: torchvision's AutoAugment policy
    "config/run_config.py": {"synthetic"},
    "launch/grid.py": {"synthetic"},
    "train/cli.py": {"synthetic"},
    "tasks/detection/task.py": {"classification"},  # RetinaNet's classification loss (torchvision's key)
    # The papers' table layouts name their rows (the CIFAR table, the DeiT sizes of the ViT table).
    "tasks/classification/tables.py": {"cifar", "deit_tiny", "deit_small", "deit_base"},
}


def owners() -> dict[str, set[str]]:
    """Each registered name -> the files (relative to lai_bench/) allowed to write it."""
    out: dict[str, set[str]] = {}
    for task in list_tasks():
        folder = Path(__import__(task_class(task).__module__, fromlist=["x"]).__file__).parent.relative_to(PACKAGE)
        out.setdefault(task, set()).add(f"{folder}/")
        for dataset in task_class(task).datasets:
            out.setdefault(dataset.name, set()).update({f"{folder}/", "data/"})
    for backbone in list_backbones():
        path = Path(__import__(type(backbone_info(backbone)).__module__, fromlist=["x"]).__file__)
        out.setdefault(backbone, set()).add(str(path.relative_to(PACKAGE)))
    return out


def string_constants(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_task_backbone_or_data_set_name_outside_its_own_files():
    allowed = owners()
    assert {"classification", "detection", "cifar", "imagenet", "coco", "synthetic"} <= set(allowed)
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = str(path.relative_to(PACKAGE))
        for line, text in string_constants(path):
            if text in allowed and not any(where.startswith(owner) for owner in allowed[text]) \
                    and text not in ALSO_SOMETHING_ELSE.get(where, ()):
                found.append(f"{where}:{line}: {text!r}")
    assert found == []


def test_the_check_finds_a_name_written_in_the_core(tmp_path):
    path = tmp_path / "core.py"
    path.write_text('"""A docstring may say detection."""\nif task == "detection":\n    pass\n')
    assert string_constants(path) == [(2, "detection")]
