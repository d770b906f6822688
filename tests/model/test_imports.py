"""The project's import graph: no two modules import each other, directly or around a longer
circle (imports inside functions count too), and the pure parts of segzero_model import
without the heavy libraries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("segzero_model", "segzero_ros", "training")
# The modules that must import in milliseconds (STYLE.md): no torch, transformers, sam2, cv2.
PURE = (
    "reasoning.prompts",
    "reasoning.answer_parser",
    "reasoning.reply_format",
    "reasoning.frames",
    "targets",
    "metrics",
    "rewards.registry",
    "device",
)
HEAVY = ("torch", "transformers", "sam2", "cv2")


def module_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the packages (subpackages included)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Every module name an import statement anywhere in `tree` names (functions included);
    for ``from a import b`` both ``a.b`` (b may be a module) and ``a``."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.append(target)
            names += [f"{target}.{alias.name}" for alias in node.names]
    return names


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """Module -> the project modules it imports (explicitly; a package's __init__ counts as the
    package's module)."""
    files = module_files(root, packages)
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names = _imported_names(tree, module, path.name == "__init__.py")
        graph[module] = {name for name in names if name in files and name != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        pending = [iter(sorted(graph[start]))]
        state[start] = 1
        while pending:
            child = next(pending[-1], None)
            if child is None:
                state[path.pop()] = 2
                pending.pop()
            elif state.get(child) == 1:
                return path[path.index(child) :] + [child]
            elif not state.get(child):
                state[child] = 1
                path.append(child)
                pending.append(iter(sorted(graph.get(child, ()))))
    return None


def test_no_two_modules_import_each_other():
    graph = import_graph(ROOT)
    assert len(graph) > 30  # all three packages were read
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph(ROOT)
    # pipeline.py imports the reasoner only inside SegZeroPipeline.from_pretrained.
    assert "segzero_model.reasoning.local" in graph["segzero_model.pipeline"]
    assert "segzero_model.tiny.qwen" in graph["segzero_model.tiny"]
    assert "segzero_model.reasoning.reply_format" in graph["segzero_model.reasoning.answer_parser"]
    assert "segzero_model.reasoning.reply_format" in graph["segzero_model.rewards.single_object"]


def test_the_parser_and_the_rewards_share_the_reply_format_not_each_other():
    graph = import_graph(ROOT)
    parser, rewards = "segzero_model.reasoning.answer_parser", "segzero_model.rewards.single_object"
    assert rewards not in graph[parser]
    assert parser not in graph[rewards]
    assert graph["segzero_model.reasoning.reply_format"] == set()


def test_segzero_model_never_imports_ros_or_training():
    graph = import_graph(ROOT)
    for module, imported in graph.items():
        if module.startswith("segzero_model"):
            outside = {m for m in imported if not m.startswith("segzero_model")}
            assert not outside, f"{module} imports {outside}"


def test_a_circle_is_found(tmp_path):
    """The checks above can fail: a circle through a function-level and a relative import."""
    package = tmp_path / "segzero_model"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from segzero_model.sub import b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("from .c import x\n")
    (package / "sub" / "c.py").write_text("from segzero_model import a\nx = 1\n")
    graph = import_graph(tmp_path, ("segzero_model",))
    assert find_cycle(graph) == [
        "segzero_model.a",
        "segzero_model.sub.b",
        "segzero_model.sub.c",
        "segzero_model.a",
    ]
    (package / "sub" / "c.py").write_text("x = 1\n")
    assert find_cycle(import_graph(tmp_path, ("segzero_model",))) is None


def test_pure_modules_import_without_heavy_libraries():
    code = (
        "import sys\n"
        + "".join(f"import segzero_model.{name}\n" for name in PURE)
        + f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "", f"importing {PURE} loaded {done.stdout.strip()}"


def test_segzero_model_imports_itself_by_absolute_name():
    """One import style: ``from segzero_model.x import y``, never ``from .x import y``."""
    for module, path in module_files(ROOT, ("segzero_model",)).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{module}: relative import of {node.module!r}"
