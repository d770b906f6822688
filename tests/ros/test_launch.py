"""launch/perception.launch.py against the parameter table, without ROS `launch` installed:
the file is read with `ast`, not run."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from segzero_ros.params import PARAM_NAMES, render_params_yaml

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "perception.launch.py"
TREE = ast.parse(LAUNCH.read_text(encoding="utf-8"), filename=str(LAUNCH))


def calls(name: str) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(TREE)
        if isinstance(node, ast.Call)
        and (getattr(node.func, "id", None) == name or getattr(node.func, "attr", None) == name)
    ]


def module_constant(name: str):
    for node in TREE.body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{LAUNCH.name} defines no {name}")


def keywords(call: ast.Call) -> dict[str, ast.expr]:
    return {k.arg: k.value for k in call.keywords}


def declared_arguments() -> set[str]:
    """Names of DeclareLaunchArgument(...) calls: literals, or the loop variable over
    OVERRIDABLE."""
    names = set()
    for call in calls("DeclareLaunchArgument"):
        first = call.args[0]
        if isinstance(first, ast.Constant):
            names.add(first.value)
        else:
            loops = [
                n
                for n in ast.walk(TREE)
                if isinstance(n, ast.For)
                and getattr(n.target, "id", None) == getattr(first, "id", "")
                and getattr(n.iter, "id", None) == "OVERRIDABLE"
                and call in list(ast.walk(n))
            ]
            assert loops, f"cannot tell the name of {ast.unparse(call)}"
            names.update(module_constant("OVERRIDABLE"))
    return names


def test_launch_arguments_are_node_parameters():
    overridable = module_constant("OVERRIDABLE")
    assert set(overridable) <= set(PARAM_NAMES), set(overridable) - set(PARAM_NAMES)
    assert set(overridable) == {
        "reasoning_model",
        "reasoning_url",
        "model_family",
        "segmentation_model",
        "segmentation_family",
        "device",
        "image_topic",
        "compressed",
        "track",
        "use_depth",
        "publish_detections",
    }
    assert declared_arguments() == {"params_file", "tiny", "namespace", *overridable}


def test_params_file_defaults_to_the_packages_config():
    (declare,) = [
        c for c in calls("DeclareLaunchArgument") if ast.unparse(c.args[0]) == "'params_file'"
    ]
    default = ast.unparse(keywords(declare)["default_value"])
    assert "FindPackageShare('segzero_ros')" in default
    assert "'config'" in default and "'perception.yaml'" in default
    assert (ROOT / "config" / "perception.yaml").is_file()


def test_node_action():
    (node,) = calls("Node")
    kw = keywords(node)
    assert ast.literal_eval(kw["package"]) == "segzero_ros"
    assert ast.literal_eval(kw["executable"]) == "segzero_perception"
    assert ast.unparse(kw["name"]) == "NODE_NAME"  # segzero_ros.params.NODE_NAME
    parameters = kw["parameters"]
    assert isinstance(parameters, ast.List) and len(parameters.elts) == 2
    assert [ast.unparse(e) for e in parameters.elts] == ["params_file", "overrides"]
    assert "namespace" in ast.unparse(kw["namespace"])
    assert "'--tiny'" in ast.unparse(kw["arguments"])  # tiny:=true is the console script's --tiny
    assert "'tiny'" in ast.unparse(kw["arguments"])
    # the executable: installed into lib/segzero_ros by CMakeLists.txt
    assert "segzero_perception" in (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")


def test_tiny_and_namespace_arguments():
    declared = {ast.unparse(c.args[0]): keywords(c) for c in calls("DeclareLaunchArgument")}
    assert ast.literal_eval(declared["'tiny'"]["default_value"]) == "false"
    assert ast.literal_eval(declared["'tiny'"]["choices"]) == ["true", "false"]
    assert ast.literal_eval(declared["'namespace'"]["default_value"]) == ""


def test_node_exit_is_handled():
    """The node's exit shuts the launch down: OnProcessExit on the Node, with a handler."""
    (handler,) = calls("OnProcessExit")
    kw = keywords(handler)
    assert ast.unparse(kw["target_action"]) == "node"
    assert ast.unparse(kw["on_exit"]) == "_on_node_exit"
    (function,) = [
        n for n in TREE.body if isinstance(n, ast.FunctionDef) and n.name == "_on_node_exit"
    ]
    body = ast.unparse(function)
    assert "returncode" in body and "raise" in body and "Shutdown(" in body


def test_yaml_keys_are_the_table():
    document = yaml.safe_load((ROOT / "config" / "perception.yaml").read_text(encoding="utf-8"))
    assert list(document) == ["segzero_perception"]
    assert tuple(document["segzero_perception"]["ros__parameters"]) == PARAM_NAMES
    assert (ROOT / "config" / "perception.yaml").read_text(encoding="utf-8") == render_params_yaml()


def test_launch_file_compiles_and_defines_generate_launch_description():
    compile(LAUNCH.read_text(encoding="utf-8"), str(LAUNCH), "exec")
    functions = {n.name for n in TREE.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions
