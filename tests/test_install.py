"""The shipped templates are found from any working directory, installed or not.

.ci/run installs the package with ``pip install .`` (not editable) and sets
REPORTER_EXPECT_INSTALLED=1: then the package and its templates must come from
site-packages, which proves the wheel ships the top-level templates/ folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import reporter
from reporter.render.templates import environment, templates_dir

REPO = Path(__file__).resolve().parents[1]


def test_templates_are_found_from_another_directory(tmp_path):
    code = (
        "from reporter.render.templates import environment, templates_dir;"
        "print(templates_dir());"
        "environment().get_template('summary.txt.j2')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (Path(done.stdout.strip()) / "summary.txt.j2").is_file()


@pytest.mark.skipif(
    os.environ.get("REPORTER_EXPECT_INSTALLED") != "1",
    reason="only meaningful after a non-editable install (.ci/run)",
)
def test_the_installed_wheel_carries_the_templates():
    package = Path(reporter.__file__).resolve().parent
    assert package != REPO / "reporter", f"tests imported the source tree: {package}"
    assert "site-packages" in package.parts
    assert templates_dir() == package / "templates"
    assert (package / "templates" / "summary.txt.j2").is_file()


def test_autoescape_is_on_for_html_and_j2_templates(tmp_path):
    (tmp_path / "x.html.j2").write_text("{{ name }}", encoding="utf-8")
    (tmp_path / "x.txt.j2").write_text("{{ name }}", encoding="utf-8")
    env = environment(tmp_path)
    evil = "<img src=x onerror=alert(1)>"
    assert env.get_template("x.html.j2").render(name=evil) == "&lt;img src=x onerror=alert(1)&gt;"
    assert env.get_template("x.txt.j2").render(name=evil) == evil


def test_a_user_folder_overrides_a_single_template(tmp_path):
    (tmp_path / "summary.txt.j2").write_text("mine {{ verdict }}", encoding="utf-8")
    assert (
        environment(tmp_path).get_template("summary.txt.j2").render(verdict="PASS") == "mine PASS"
    )


def test_every_public_module_declares_its_api():
    """Each module says what it offers (``__all__``), and offers what it says."""
    import importlib
    import pkgutil

    import reporter

    for info in pkgutil.walk_packages(reporter.__path__, "reporter."):
        if info.name.rsplit(".", 1)[1].startswith("_"):
            continue
        module = importlib.import_module(info.name)
        assert hasattr(module, "__all__"), info.name
        missing = [name for name in module.__all__ if not hasattr(module, name)]
        assert not missing, (info.name, missing)
