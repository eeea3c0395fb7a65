"""No secret ever leaves the process: every CLI command, on its success path and on its
failure paths, runs with recognisable fake credentials for every vendor (from the
environment, as in production), and none of them (nor the ``Authorization`` header built
from one) may appear in stdout, stderr, log lines, plan files, the state store (ledger,
run history, failure reasons) or any other file the commands leave behind.

Failure paths covered: a vendor refusing the credentials, a vendor echoing the request's
credentials back in its error bodies (which we report as reasons), a vendor down, a
Salesforce refresh token refused, a malformed key in the config.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_vendors import CREDENTIALS, Stage, run_sync, stage, sync_command
from tests.emulators.chaos import Chaos
from tests.emulators.server import Handle, Reply

pytestmark = pytest.mark.usefixtures("vendor_credentials")  # from the environment, as in production


@pytest.fixture
def scene(tmp_path: Path) -> Iterator[Stage]:
    with stage(tmp_path) as staged:
        staged.headers_seen = set()  # type: ignore[attr-defined]
        for vendor in staged.vendors:
            vendor.emulator.handle = remember_authorization(vendor.emulator.handle, staged.headers_seen)  # type: ignore[attr-defined]
        yield staged


def remember_authorization(handle: Handle, seen: set[str]) -> Handle:
    """Note every Authorization header value sent, so the sweep also looks for them."""

    def noted(method: str, url: str, headers: dict[str, str], body: bytes) -> Reply:
        value = headers.get("Authorization")
        if value:
            seen.add(value)
        return handle(method, url, headers, body)

    return noted


def echoing(handle: Handle) -> Handle:
    """A vendor that answers every write with a 400 quoting the request's headers and body
    (some do: a debugging aid that turns into a leak if we print their error as is)."""

    def echo(method: str, url: str, headers: dict[str, str], body: bytes) -> Reply:
        if method == "GET" or url.endswith("/oauth2/token"):
            return handle(method, url, headers, body)
        quoted = (
            f"bad request; you sent Authorization: {headers.get('Authorization')} with {body.decode()[:200]}"
        )
        return 400, {"Content-Type": "application/json"}, f'{{"message": "{quoted}", "detail": "{quoted}"}}'

    return echo


def cli(scene: Stage, *args: str) -> str:
    """``personasync ARGS --config ...`` as a process: its stdout and stderr together."""
    command = [*sync_command(scene)[:3], *args, "--config", str(scene.world.folder / "personasync.toml")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    return f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def secrets_of(scene: Stage) -> set[str]:
    return set(CREDENTIALS.values()) | scene.headers_seen  # type: ignore[attr-defined]


def assert_nowhere(scene: Stage, outputs: list[str]) -> None:
    secrets = secrets_of(scene)
    assert len(secrets) > len(CREDENTIALS), "no Authorization header was seen: the sweep would prove little"
    for output in outputs:
        leaked = [s for s in secrets if s in output]
        assert not leaked, f"{leaked[0][:12]}... in:\n{output[:3000]}"
    for path in scene.world.folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            leaked = [s for s in secrets if s.encode() in data]
            assert not leaked, f"{leaked[0][:12]}... in {path}"


def test_every_command_on_its_success_path_keeps_the_credentials_to_itself(scene: Stage) -> None:
    folder = scene.world.folder
    outputs = [
        cli(scene, "validate"),
        cli(scene, "destinations", "check"),
        cli(scene, "destinations", "setup", "--destination", "hubspot", "--dry-run"),
        cli(scene, "destinations", "setup", "--destination", "salesforce"),
        cli(scene, "personas", "preview", "--format", "json"),
        cli(scene, "personas", "explain", "7"),
        run_sync(scene, "--dry-run", "--plan-out", str(folder / "plan.jsonl"), "--format", "json").stdout,
    ]
    run = run_sync(scene, "--log-format", "json")
    assert run.exit_code == 0, run.stdout + run.stderr
    outputs += [
        run.stdout,
        run.stderr,
        cli(scene, "runs", "list"),
        cli(scene, "runs", "show", "1", "--format", "json"),
    ]
    outputs.append(cli(scene, "apply", str(folder / "plan.jsonl")))  # refused: the state moved
    assert "exit 2" in outputs[-1]
    assert_nowhere(scene, outputs)


def test_failure_paths_keep_the_credentials_to_itself(scene: Stage, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = []
    for vendor in scene.vendors:  # vendors that echo our credentials in their error answers
        vendor.emulator.handle = echoing(vendor.emulator.handle)
    echoed = run_sync(scene, "--log-format", "json")
    assert echoed.exit_code in (1, 5), echoed.stdout + echoed.stderr
    assert "bad request; you sent" in echoed.stdout + echoed.stderr + cli(scene, "runs", "show", "1")
    outputs += [echoed.stdout, echoed.stderr, cli(scene, "runs", "show", "1", "--format", "json")]

    for vendor in scene.vendors:  # the vendors stop trusting our credentials
        vendor.emulator.handle = vendor.model.handle
    scene.vendor("hubspot").model.token = "pat-na1-rotated"
    scene.vendor("attentive").model.token = "rotated"
    scene.vendor("klaviyo").model.api_key = "pk_rotated"
    scene.vendor("mailchimp").model.api_key = "rotated-us6"
    scene.vendor("salesforce").model.refresh_token = "rotated"
    refused = run_sync(scene, "--retry-failed")  # the echoed failures are held back otherwise
    assert refused.exit_code == 5, refused.stdout + refused.stderr
    outputs += [refused.stdout, refused.stderr, cli(scene, "destinations", "check")]

    Chaos(seed=1, unavailable=1.0).install(
        scene.vendor("hubspot").emulator
    )  # down (the rest still refuse us)
    down = run_sync(scene, "--retry-failed", "--log-format", "json")
    assert down.exit_code == 5
    outputs += [down.stdout, down.stderr, cli(scene, "runs", "list")]

    monkeypatch.setenv("CLI_MAILCHIMP_KEY", "not a key " + CREDENTIALS["CLI_MAILCHIMP_KEY"][:-4])
    outputs.append(cli(scene, "validate"))
    assert "exit 2" in outputs[-1]
    assert_nowhere(scene, outputs)
