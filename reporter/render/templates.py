"""The one jinja2 Environment: template lookup, filters, autoescaping.

Where it sits: every renderer that uses a template gets it from
:func:`environment`. Templates come from a user's folder first (to override a
single one), then from the package's ``templates/``.

Trust: the shipped templates are part of the package. A user's folder is text from
outside: with one, every template renders in jinja2's sandbox, which refuses
access to Python internals (``''.__class__.__mro__``), so a template can show the
run's data in any shape but cannot run code. A template that cannot be read, or is
not UTF-8, is a TemplateError that says so.

Compiled templates are cached in the reporter cache folder (``jinja/``, and
``jinja-sandbox/`` for a user's folder).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import jinja2
import jinja2.sandbox
import markupsafe

from ..names import printable

__all__ = [
    "environment",
    "templates_dir",
]


def templates_dir() -> Path:
    """The shipped templates: inside the installed package, else the source checkout's."""
    installed = Path(str(resources.files("reporter"))) / "templates"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "templates"


def _autoescape(name: str | None) -> bool:
    # On for every template, whatever its suffix (select_autoescape() misses .j2),
    # except plain-text ones, where HTML entities would be wrong.
    return not (name or "").endswith((".txt", ".txt.j2"))


class _Loader(jinja2.FileSystemLoader):
    """A folder of templates whose read failures say they are read failures."""

    def get_source(self, environment, template):
        try:
            return super().get_source(environment, template)
        except jinja2.TemplateNotFound:
            raise
        except (OSError, UnicodeDecodeError) as exc:
            why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror
            error = jinja2.TemplateError(f"cannot read it: {why or exc}")
            error.name = str(Path(self.searchpath[0]) / template)
            raise error from None


def _bytecode_cache(name: str) -> jinja2.BytecodeCache | None:
    """Compiled templates in the reporter cache folder: parsing and compiling the two
    report templates took 0.13 s of every run. jinja2 checks each entry against the
    template's source (a changed or overriding template is compiled afresh) and its
    own version. None (compile every time) where the folder cannot be made."""
    from ..embedding import cache_folder

    folder = cache_folder() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return jinja2.FileSystemBytecodeCache(str(folder))


def environment(user_dir: Path | None = None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if user_dir is not None:
        loaders.append(_Loader(str(user_dir)))
    loaders.append(_Loader(str(templates_dir())))
    kind = jinja2.Environment if user_dir is None else jinja2.sandbox.SandboxedEnvironment
    env = kind(
        loader=jinja2.ChoiceLoader(loaders),
        bytecode_cache=_bytecode_cache("jinja" if user_dir is None else "jinja-sandbox"),
        autoescape=_autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["printable"] = printable
    env.filters["breaks"] = breaks
    return env


_AFTER_SEPARATORS = re.compile(r"(?<=[_\-./\\])(?=.)")


def breaks(text: object) -> markupsafe.Markup:
    """``text`` escaped, with a line-break opportunity (``<wbr>``) after each ``_ - . / \\``:
    a long file name wraps at its own separators (``fault_shifted_`` / ``population.png``)
    rather than wherever the column ends (``fault_shifted_population.p`` / ``ng``). The
    page's ``overflow-wrap: anywhere`` still breaks a name that has no separator."""
    parts = _AFTER_SEPARATORS.split(str(text))
    return markupsafe.Markup("<wbr>").join(markupsafe.escape(p) for p in parts)
