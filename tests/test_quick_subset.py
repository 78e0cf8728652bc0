"""The quick subset (`python -m pytest -m "not slow"`, README) keeps at least one test of every test file, so a
change that breaks a file's subject shows in five minutes, not only in the full run."""
import ast
from pathlib import Path

TESTS = Path(__file__).parent


def is_slow(mark: ast.expr) -> bool:
    """Whether a decorator or `pytestmark` entry is `pytest.mark.slow` (called or not, or inside a list)."""
    if isinstance(mark, (ast.List, ast.Tuple)):
        return any(is_slow(m) for m in mark.elts)
    if isinstance(mark, ast.Call):
        mark = mark.func
    return isinstance(mark, ast.Attribute) and mark.attr == "slow"


def quick_tests(path: Path) -> list[str]:
    """The names of the test functions of one file that `-m "not slow"` keeps."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in node.targets):
            if is_slow(node.value):
                return []
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return [f.name for f in functions
            if f.name.startswith("test") and not any(is_slow(d) for d in f.decorator_list)]


def test_the_slow_mark_detector_sees_each_form_it_must():
    source = ("import pytest\n@pytest.mark.slow\ndef test_a(): pass\n@pytest.mark.slow()\ndef test_b(): pass\n"
              "@pytest.mark.parametrize('x', [1])\ndef test_c(x): pass\n")
    tree = ast.parse(source)
    marks = [is_slow(d) for f in tree.body if isinstance(f, ast.FunctionDef) for d in f.decorator_list]
    assert marks == [True, True, False]
    assert is_slow(ast.parse("[pytest.mark.cuda, pytest.mark.slow]").body[0].value)


def test_every_test_file_has_a_test_in_the_quick_subset():
    files = sorted(TESTS.glob("test_*.py"))
    assert len(files) > 40
    without = [f.name for f in files if not quick_tests(f)]
    assert not without, f"test files with every test marked slow (keep one quick test in each): {without}"
