"""The code of the stack's two Lambda functions: the text CloudFormation receives inline (``Code.ZipFile``).

The functions' code lives in files of its own: the scaler is :mod:`gpu_transcribe.aws.pipeline.scaler_lambda`
(sent as it is), the notifier :mod:`gpu_transcribe.aws.pipeline.notifier_lambda` with what it uses of
:mod:`gpu_transcribe_api.webhook_common` (the signing it shares with the HTTP API's callbacks). Inline code is
limited to 4,096 bytes (CloudFormation, ``AWS::Lambda::Function Code``), and so is a template parameter's
value, which is how the template receives it (``ScalerCode``, ``NotifierCode`` in ``stack.yaml``). The two
files together are over that limit with their docstrings, so :func:`notifier_source` joins them into one
program without docstrings, annotations and unused definitions, with short local names: the same program,
smaller; the tests run this text.
"""

from __future__ import annotations

import ast
import re
from importlib import resources

#: CloudFormation's limit on inline Lambda code (``Code.ZipFile``) and on a parameter's value, bytes.
INLINE_CODE_LIMIT_BYTES = 4096


def scaler_source() -> str:
    """The scaler's Python source (:mod:`gpu_transcribe.aws.pipeline.scaler_lambda`), inlined as the Lambda's
    code.

    Raises:
        ValueError: it outgrew CloudFormation's 4,096-byte inline limit.
    """
    scaler = resources.files("gpu_transcribe.aws.pipeline").joinpath("scaler_lambda.py")
    source = scaler.read_text(encoding="utf-8")
    size = len(source.encode())
    if size > INLINE_CODE_LIMIT_BYTES:
        raise ValueError(
            f"the scaler's source is {size} bytes, over the {INLINE_CODE_LIMIT_BYTES}-byte limit"
        )
    return source


def _statements(source: str) -> list[ast.stmt]:
    """``source``'s top-level statements without docstrings, annotations, ``__future__`` and
    ``gpu_transcribe_api.webhook_common`` imports (the notifier's inline code defines those names itself)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Module):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                node.body = node.body[1:] or [ast.Pass()]
        if isinstance(node, ast.FunctionDef):
            node.returns = None
            arguments = node.args
            for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
                arg.annotation = None
            for maybe in (arguments.vararg, arguments.kwarg):
                if maybe is not None:
                    maybe.annotation = None
    return [
        node
        for node in tree.body
        if not (
            isinstance(node, ast.ImportFrom)
            and node.module in ("__future__", "gpu_transcribe_api.webhook_common")
        )
        and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
    ]


def _defined(node: ast.stmt) -> set[str]:
    """The names a top-level statement binds."""
    if isinstance(node, ast.FunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Assign):
        return {target.id for target in node.targets if isinstance(target, ast.Name)}
    if isinstance(node, ast.Import | ast.ImportFrom):
        return {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return set()


def _used(nodes: list[ast.stmt]) -> set[str]:
    return {name.id for node in nodes for name in ast.walk(node) if isinstance(name, ast.Name)}


def _shorten_locals(nodes: list[ast.stmt]) -> None:
    """Rename the variables each top-level function assigns (not its parameters, which callers may pass by
    keyword) to the shortest names no part of ``nodes`` uses; comprehension and ``except ... as`` names
    included. The program does the same; its local names are most of what is left to cut."""
    used = {n.id for node in nodes for n in ast.walk(node) if isinstance(n, ast.Name)}
    used |= {n.arg for node in nodes for n in ast.walk(node) if isinstance(n, ast.arg)}
    letters = "abcdefghijklmnopqrstuvwxyz"
    short = [name for name in [*letters, *(a + b for a in letters for b in letters)] if name not in used]
    for function in (node for node in nodes if isinstance(node, ast.FunctionDef)):
        inner = list(ast.walk(function))
        handlers = [n for n in inner if isinstance(n, ast.ExceptHandler) and n.name]
        assigned = {n.id for n in inner if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        assigned |= {str(handler.name) for handler in handlers}
        assigned -= {n.arg for n in inner if isinstance(n, ast.arg)}
        assigned -= {name for n in inner if isinstance(n, ast.Global | ast.Nonlocal) for name in n.names}
        mapping = dict(zip(sorted(name for name in assigned if len(name) > 1), short, strict=False))
        for n in inner:
            if isinstance(n, ast.Name) and n.id in mapping:
                n.id = mapping[n.id]
        for handler in handlers:
            handler.name = mapping.get(str(handler.name), handler.name)


def notifier_source() -> str:
    """The notifier Lambda's inline code: what :mod:`gpu_transcribe.aws.pipeline.notifier_lambda` uses of
    :mod:`gpu_transcribe_api.webhook_common`, then the notifier, without docstrings, annotations and unused
    definitions or imports, with short local names (:func:`_shorten_locals`), indented by one space (the
    same program, smaller; the tests run this text).

    Raises:
        ValueError: it outgrew CloudFormation's 4,096-byte inline limit.
    """
    common = _statements(
        resources.files("gpu_transcribe_api").joinpath("webhook_common.py").read_text(encoding="utf-8")
    )
    notifier = _statements(
        resources.files("gpu_transcribe.aws.pipeline")
        .joinpath("notifier_lambda.py")
        .read_text(encoding="utf-8")
    )
    needed = _used(notifier)
    kept: list[ast.stmt] = []
    while True:  # the common definitions the notifier needs, and those they need
        kept = [
            node
            for node in common
            if _defined(node) & needed and not isinstance(node, ast.Import | ast.ImportFrom)
        ]
        grown = needed | _used(kept)
        if grown == needed:
            break
        needed = grown
    program = [*kept, *(node for node in notifier if not isinstance(node, ast.Import | ast.ImportFrom))]
    needed = _used(program)
    modules: dict[str, None] = {}  # ``import a, b`` in one line: fewer bytes
    body: list[ast.stmt] = []
    for node in [*common, *notifier]:
        if isinstance(node, ast.Import):
            modules |= {alias.name: None for alias in node.names if alias.name.split(".")[0] in needed}
        elif isinstance(node, ast.ImportFrom):
            node.names = [alias for alias in node.names if (alias.asname or alias.name) in needed]
            if node.names and ast.unparse(node) not in {ast.unparse(seen) for seen in body}:
                body.append(node)
    _shorten_locals(program)
    body = [ast.Import(names=[ast.alias(name) for name in modules]), *body, *program]
    text = ast.unparse(ast.Module(body=body, type_ignores=[]))
    lines = [
        re.sub(r"^(?:    )+", lambda m: " " * (len(m.group(0)) // 4), line) for line in text.splitlines()
    ]
    source = "\n".join(line for line in lines if line.strip()) + "\n"
    size = len(source.encode())
    if size > INLINE_CODE_LIMIT_BYTES:
        raise ValueError(
            f"the notifier's source is {size} bytes, over the {INLINE_CODE_LIMIT_BYTES}-byte limit"
        )
    return source
