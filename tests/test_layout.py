"""The source tree's own rules, read from the source: the hand-kept module indexes in package docstrings, and
the one place that makes boto3 clients.

- A package whose ``__init__`` docstring has a ``Modules`` section lists exactly its modules and subpackages
  there (as ``:mod:`` references): none missing, none that does not exist. :data:`INDEXED` names the packages
  that must keep such an index.
- boto3 sessions and clients are made in ``gpu_transcribe/aws/clients.py`` only; code that runs inside AWS
  Lambda (a module with a top-level ``handler(event, context)``) is shipped alone and makes its own.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("gpu_transcribe", "gpu_transcribe_engine", "gpu_transcribe_api")

#: Packages whose ``__init__`` docstring must list their modules.
INDEXED = (
    "gpu_transcribe.account",
    "gpu_transcribe.aws",
    "gpu_transcribe.aws.ec2",
    "gpu_transcribe.aws.pipeline",
    "gpu_transcribe.correct",
    "gpu_transcribe.instance",
    "gpu_transcribe.settings",
    "gpu_transcribe.ssh",
    "gpu_transcribe.warm",
)

#: The one module allowed to make boto3 sessions and clients.
CLIENT_FACTORY = REPO / "gpu_transcribe" / "aws" / "clients.py"

_MOD_REF = re.compile(r":mod:`~?([\w.]+)`")
_MODULES_HEADING = re.compile(r"^Modules\b", re.MULTILINE)


def _packages() -> list[str]:
    found = []
    for root in ROOTS:
        for init in sorted((REPO / root).rglob("__init__.py")):
            found.append(".".join(init.parent.relative_to(REPO).parts))
    return found


def _package_dir(package: str) -> Path:
    return REPO.joinpath(*package.split("."))


def _children(package: str) -> set[str]:
    """The modules (``*.py`` but ``__init__``) and subpackages directly inside ``package``."""
    directory = _package_dir(package)
    modules = {p.stem for p in directory.glob("*.py") if p.name != "__init__.py"}
    subpackages = {p.name for p in directory.iterdir() if (p / "__init__.py").is_file()}
    return modules | subpackages


def _index(package: str) -> set[str] | None:
    """The children of ``package`` its docstring's ``Modules`` section names, or ``None`` without one."""
    tree = ast.parse((_package_dir(package) / "__init__.py").read_text(encoding="utf-8"))
    docstring = ast.get_docstring(tree) or ""
    heading = _MODULES_HEADING.search(docstring)
    if heading is None:
        return None
    named = set()
    for ref in _MOD_REF.findall(docstring[heading.start() :]):
        full = package + ref if ref.startswith(".") else ref
        if full.startswith(package + "."):
            named.add(full[len(package) + 1 :].split(".")[0])
    return named


def test_the_indexed_packages_exist() -> None:
    packages = set(_packages())
    assert [p for p in INDEXED if p not in packages] == []


@pytest.mark.parametrize("package", _packages())
def test_a_package_index_names_exactly_its_modules(package: str) -> None:
    index = _index(package)
    if index is None:
        assert package not in INDEXED, f"{package}/__init__.py has no 'Modules' section listing its modules"
        return
    children = _children(package)
    assert sorted(children - index) == [], f"{package}: modules missing from the docstring's index"
    assert sorted(index - children) == [], f"{package}: the docstring's index names modules that do not exist"


def _is_lambda_code(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.FunctionDef)
        and node.name == "handler"
        and [arg.arg for arg in node.args.args[:2]] == ["event", "context"]
        for node in tree.body
    )


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _client_calls(tree: ast.Module) -> list[str]:
    """``line: call`` for every call that makes a boto3 session or a client: ``boto3.Session(...)``,
    ``botocore.session.Session(...)``, ``X.client("service", ...)`` and ``X.resource("service", ...)``."""
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = _dotted(node.func)
        service_call = (
            node.func.attr in ("client", "resource")
            and bool(node.args)
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        )
        if service_call or name in ("boto3.Session", "botocore.session.Session", "boto3.session.Session"):
            calls.append(f"{node.lineno}: {name}")
    return calls


def test_boto3_clients_are_made_only_by_the_client_factory() -> None:
    found = {}
    for path in sorted((REPO / "gpu_transcribe").rglob("*.py")):
        if path == CLIENT_FACTORY:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        calls = _client_calls(tree)
        if calls and not _is_lambda_code(tree):
            found[str(path.relative_to(REPO))] = calls
    assert found == {}, f"make clients with gpu_transcribe.aws.clients' factories instead: {found}"


def test_the_client_factory_check_sees_the_factorys_own_calls() -> None:
    """The scan above would see a misplaced factory: it finds the calls in clients.py itself."""
    calls = _client_calls(ast.parse(CLIENT_FACTORY.read_text(encoding="utf-8")))
    assert any("boto3.Session" in call for call in calls)
    assert any("session.client" in call for call in calls)
