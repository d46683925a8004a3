"""The README stays a user's page: short, with a picture, in the agreed order, and its developer
commands are the ones CI runs."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ["Install", "Quick start", "Nodes", "Troubleshooting", "Limits", "Development"]


def _read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as fh:
        return fh.read()


def test_readme_is_short_illustrated_and_in_order():
    text = _read("README.md")
    assert len(text.splitlines()) < 140
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert pictures and all(os.path.isfile(os.path.join(ROOT, p)) for p in pictures)
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings == SECTIONS


def test_readme_links_point_at_files_that_exist():
    text = _read("README.md")
    for target in re.findall(r"\]\((?!https?://)([^)#]+)\)", text):
        assert os.path.exists(os.path.join(ROOT, target)), target


def test_readme_developer_commands_are_what_ci_runs():
    text, ci = _read("README.md"), _read(".ci", "run")
    commands = re.findall(r"```\n(\.?[^`\n]*(?:pip install|-m pytest)[^`\n]*)\n```", text)
    setup = next(c for c in commands if "pip install" in c)
    tests = next(c for c in commands if c.startswith(".venv/bin/python -m pytest"))
    assert setup in ci and tests in ci
