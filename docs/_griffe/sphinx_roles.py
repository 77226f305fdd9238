"""Griffe extension for the docs build: Sphinx cross-reference roles in docstrings become links.

The provider's docstrings use Sphinx roles (``:class:`~a.b.C```, ``:meth:`count_ingested```,
``:meth:`Title <a.b.C.m>```). The mkdocstrings "sphinx" docstring parser reads ``:param:`` and
friends but leaves these roles as text. This extension rewrites each role, once the package is
loaded, into a mkdocs-autorefs cross-reference (``[`C`][a.b.C]``) when its target is an object
that the API reference renders, and into plain inline code otherwise. It never produces a link
that could dangle, so the strict build stays clean whatever the docstrings reference. It also
turns Sphinx's literal-block marker (``Example::`` before an indented block) into ``Example:``;
the indented block is a Markdown code block as it is.

"Rendered" is decided conservatively from the ``::: module`` lines of ``docs/reference/*.md`` and
the handler options in ``mkdocs.yml`` (``filters: ["!^_"]``, no ``show_if_no_docstring``): an
object is linked only when it lives in a listed module, is no alias, has no private name below
that module, and has a docstring (modules are always rendered).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?P<role>class|meth|func|mod|data|attr|exc|obj):`(?P<body>[^`]+)`")
_TITLED = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$", re.DOTALL)
_REFERENCE_DIR = Path(__file__).resolve().parent.parent / "reference"
_DIRECTIVE = re.compile(r"^:::\s+(?P<path>[\w.]+)\s*$", re.MULTILINE)
# "Text::" before a blank line and an indented block is Sphinx's literal-block marker: "Text:".
_LITERAL_MARKER = re.compile(r"(?<=\S)::(?=\n[ \t]*\n)")


def _rendered_modules() -> set[str]:
    modules: set[str] = set()
    for page in _REFERENCE_DIR.glob("*.md"):
        modules.update(match.group("path") for match in _DIRECTIVE.finditer(page.read_text(encoding="utf-8")))
    return modules


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles into autorefs links (rendered targets) or inline code (others)."""

    def __init__(self) -> None:
        super().__init__()
        self._modules = _rendered_modules()

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite the roles of every docstring of ``pkg``, once it is fully loaded."""
        self._walk(pkg, pkg)

    # -- traversal -----------------------------------------------------------------------------

    def _walk(self, obj: griffe.Object, root: griffe.Module) -> None:
        if obj.docstring is not None and ":" in obj.docstring.value:
            value = _ROLE.sub(lambda match: self._rewrite(match, obj, root), obj.docstring.value)
            obj.docstring.value = _LITERAL_MARKER.sub(":", value)
        for member in obj.members.values():
            if not member.is_alias:
                self._walk(member, root)

    # -- one role ------------------------------------------------------------------------------

    def _rewrite(self, match: re.Match[str], context: griffe.Object, root: griffe.Module) -> str:
        body = " ".join(match.group("body").split())
        titled = _TITLED.match(body)
        if titled:
            title, target = titled.group("title"), titled.group("target").strip()
        else:
            title, target = None, body
        short = target.startswith("~")
        target = target.lstrip("~")
        if title is None:
            title = target.rsplit(".", 1)[-1] if short else target
        if match.group("role") in ("meth", "func") and not title.endswith(")"):
            title = f"{title}()"
        resolved = self._resolve(target, context, root)
        if resolved is not None and self._is_rendered(resolved):
            return f"[`{title}`][{resolved.path}]"
        return f"`{title}`"

    def _resolve(self, target: str, context: griffe.Object, root: griffe.Module) -> griffe.Object | None:
        if target.startswith("."):  # relative module reference such as ._store
            return None
        scopes: list[griffe.Object] = []
        scope: griffe.Object | None = context
        while scope is not None:
            scopes.append(scope)
            scope = scope.parent
        candidates = [target] + [f"{scope.path}.{target}" for scope in scopes]
        for path in candidates:
            found = _lookup(root, path)
            if found is not None:
                return found
        return None

    def _is_rendered(self, obj: griffe.Object) -> bool:
        if obj.is_alias:
            return False
        by_length = sorted(self._modules, key=len, reverse=True)
        module = next((m for m in by_length if obj.path == m or obj.path.startswith(m + ".")), None)
        if module is None:
            return False
        if obj.path == module:
            return True
        below = obj.path[len(module) + 1 :].split(".")
        if any(part.startswith("_") for part in below):
            return False
        return obj.docstring is not None and bool(obj.docstring.value.strip())


def _lookup(root: griffe.Module, path: str) -> griffe.Object | None:
    if path != root.path and not path.startswith(root.path + "."):
        return None
    current: Any = root
    for part in path[len(root.path) + 1 :].split(".") if path != root.path else []:
        members = getattr(current, "members", None)
        if not members or part not in members:
            return None
        current = members[part]
        if current.is_alias:
            try:
                current = current.final_target
            except Exception:
                return None
    return current
