"""docs/scheduling.md stays true: its YAML parses, its Python compiles, its API example runs
against the demo warehouse, and the exit codes, flags and defaults it names are the real ones.

Needs neither Airflow nor Dagster: their examples are only compiled.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import typer.main

from sync import app
from sync.cli import cli
from sync.config import StateConfig
from sync.exit_codes import ExitCode

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "scheduling.md"
DOC = DOC_PATH.read_text(encoding="utf-8")
API_MARKER = "<!-- api-example -->"
CONFIG_IN_EXAMPLE = 'Path("personasync.toml")'

FENCE = re.compile(r"^```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def _blocks(lang: str) -> list[str]:
    return [m["body"] for m in FENCE.finditer(DOC) if m["lang"] == lang]


def _api_example() -> str:
    start = DOC.index(API_MARKER) + len(API_MARKER)
    match = FENCE.search(DOC, start)
    assert match is not None and match["lang"] == "python", f"no python block after {API_MARKER}"
    assert not DOC[start : match.start()].strip(), f"{API_MARKER} must sit right before the block"
    return match["body"]


def test_doc_has_the_expected_blocks() -> None:
    assert len(_blocks("yaml")) >= 1
    assert len(_blocks("python")) >= 4  # two Airflow DAGs, a Dagster asset, the API example
    assert DOC.count(API_MARKER) == 1


@pytest.mark.parametrize("index", range(len(_blocks("yaml"))))
def test_yaml_blocks_parse(index: int) -> None:
    yaml = pytest.importorskip("yaml")
    documents = list(yaml.safe_load_all(_blocks("yaml")[index]))
    assert documents and all(isinstance(d, dict) for d in documents)


def test_cronjob_forbids_overlap_and_retries() -> None:
    yaml = pytest.importorskip("yaml")
    documents: list[dict[str, Any]] = [d for b in _blocks("yaml") for d in yaml.safe_load_all(b)]
    cronjobs = [d for d in documents if d.get("kind") == "CronJob"]
    assert len(cronjobs) == 1
    spec = cronjobs[0]["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert isinstance(spec["startingDeadlineSeconds"], int)
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 0
    container = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:3] == ["sync", "--config", "/etc/personasync/personasync.toml"]


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_python_blocks_compile(index: int) -> None:
    compile(_blocks("python")[index], f"{DOC_PATH.name}[python block {index}]", "exec")


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
@pytest.mark.parametrize("index", range(len(_blocks("bash"))))
def test_shell_blocks_parse(index: int) -> None:
    result = subprocess.run(["sh", "-n"], input=_blocks("bash")[index], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_api_example_runs_against_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    demo = app.build_demo(tmp_path, customers=200, seed=7, as_of=date(2026, 11, 1))
    assert demo.config_path == tmp_path / "personasync.toml"
    code = _api_example()
    assert CONFIG_IN_EXAMPLE in code
    code = code.replace(CONFIG_IN_EXAMPLE, f"Path({str(demo.config_path)!r})")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "scheduling_doc_example"}
    exec(compile(code, "api-example", "exec"), namespace)
    summary = namespace["summary"]
    assert summary.exit_code in (ExitCode.OK, ExitCode.GUARDRAIL)
    assert summary.run_id is None  # a dry run is not recorded
    assert capsys.readouterr().out.strip()  # the example reports what it found
    for key in summary.as_json():  # the documented keys are the real ones
        assert f"`{key}`" in DOC, f"docs/scheduling.md does not mention `{key}`"
    for key in summary.as_json()["destinations"][0]:
        assert f"`{key}`" in DOC, f"docs/scheduling.md does not mention `{key}`"


@pytest.mark.parametrize("code", list(ExitCode))
def test_every_exit_code_is_documented(code: ExitCode) -> None:
    assert re.search(rf"^\| {int(code)} \| \S", DOC, re.MULTILINE), f"exit code {int(code)} missing"
    assert f"{code.name}={int(code)}" in DOC


def test_sync_flags_in_the_doc_exist() -> None:
    sync_command = typer.main.get_group(cli).commands["sync"]
    known = {opt for param in sync_command.params for opt in param.opts}
    lines = [line for line in DOC.splitlines() if "personasync sync" in line or '"sync", "--' in line]
    used = {flag for line in lines for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", line)}
    assert {"--config", "--quiet", "--log-format"} <= used
    assert used <= known, f"unknown `personasync sync` options in the doc: {sorted(used - known)}"


def test_lock_timeout_default_is_the_documented_one() -> None:
    default = StateConfig.model_fields["lock_timeout_minutes"].default
    assert f"`[state] lock_timeout_minutes` (default {default:g})" in DOC
