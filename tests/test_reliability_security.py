"""Security (issue 7): a private server started with the production image's admin-key flags
(read from deploy/entrypoint.sh) refuses the admin APIs without the key and allows them with it,
over HTTP and gRPC, while inference, health and metadata stay open; the client reads a refusal
as access denied and falls back from shared memory; no secret is committed. Each test leaves the
server as it found it. Checkpoint loading (``weights_only``, sha256) is tests/test_weights.py's."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shared_memory
from tritonclient.utils import InferenceServerException

from ssd300_client import AccessDeniedError, Detector, ServerUnavailableError
from ssd300_client.transport import translate_error
from ssd300_common.contract import DETECTOR_MODEL as DETECTOR
from ssd300_serving import health
from ssd300_serving.embedded_server import EmbeddedServer

from .helpers.servers import restriction_flags
from .helpers.triton_calls import http_answer, http_answer_raw, still_serving

pytestmark = pytest.mark.filterwarnings("ignore::ssd300_client.RandomWeightsWarning")

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Locked:
    server: EmbeddedServer
    admin_key: str


@pytest.fixture(scope="module")
def locked(private_servers, reliability_figures) -> Locked:
    """A private server with the production admin-key flags."""
    key = secrets.token_urlsafe(24)
    server = private_servers.embedded(
        "locked", *restriction_flags(key, private_servers.folder / "entrypoint")
    )
    private_servers.start()
    reliability_figures.server_version(server.http_url)
    return Locked(server, key)


def admin_headers(protocol: str, key: str) -> dict[str, str]:
    # tritonserver 2.51 expects the gRPC metadata key with a fixed prefix.
    return {"admin-key": key} if protocol == "http" else {"triton-grpc-protocol-admin-key": key}


def admin_call(
    server: EmbeddedServer, protocol: str, action: str, headers: dict | None, **arguments
) -> tuple[str, str]:
    """One admin API call → ("OK" / "HTTP 200", "") or the refusal and its message."""
    if protocol == "http":
        paths = {
            "unload": ("POST", f"/v2/repository/models/{arguments.get('model')}/unload", b"{}"),
            "load": ("POST", f"/v2/repository/models/{arguments.get('model')}/load", b"{}"),
            "register": (
                "POST",
                f"/v2/systemsharedmemory/region/{arguments.get('name')}/register",
                json.dumps(
                    {"key": arguments.get("key"), "offset": 0, "byte_size": arguments.get("byte_size")}
                ).encode(),
            ),
            "unregister": (
                "POST",
                f"/v2/systemsharedmemory/region/{arguments.get('name')}/unregister",
                b"{}",
            ),
            "logging": ("GET", "/v2/logging", b""),
            "trace": ("GET", "/v2/trace/setting", b""),
        }
        method, path, body = paths[action]
        return http_answer(server.http_url, method, path, body, headers)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        calls = {
            "unload": lambda: client.unload_model(arguments["model"], headers=headers),
            "load": lambda: client.load_model(arguments["model"], headers=headers),
            "register": lambda: client.register_system_shared_memory(
                arguments["name"], arguments["key"], arguments["byte_size"], headers=headers
            ),
            "unregister": lambda: client.unregister_system_shared_memory(arguments["name"], headers=headers),
            "logging": lambda: client.get_log_settings(headers=headers),
            "trace": lambda: client.get_trace_settings(headers=headers),
        }
        try:
            calls[action]()
            return "OK", ""
        except InferenceServerException as error:
            return (error.status() or "").replace("StatusCode.", ""), error.message() or ""


ALLOWED = {"http": "HTTP 200", "grpc": "OK"}
REFUSED = {
    "http": ("HTTP 403", r"This API is restricted, expecting header 'admin-key'"),
    "grpc": (
        "UNAVAILABLE",
        r"This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'",
    ),
}


def assert_refused(protocol: str, answer: tuple[str, str]) -> None:
    status, pattern = REFUSED[protocol]
    assert answer[0] == status and re.search(pattern, answer[1]), answer


def record_restriction(figures, api: str, *answers: str) -> None:
    figures.row("Security", f"{api}: without key / wrong key / with key", " · ".join(answers))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_model_load_and_unload_need_the_admin_key(locked, reliability_figures, protocol):
    server, key, model = locked.server, locked.admin_key, "ssd300_image_postprocess"
    without = admin_call(server, protocol, "unload", None, model=model)
    wrong = admin_call(server, protocol, "unload", admin_headers(protocol, "not-" + key), model=model)
    assert_refused(protocol, without)
    assert_refused(protocol, wrong)
    assert server.is_model_ready(model)  # nothing happened
    unloaded = admin_call(server, protocol, "unload", admin_headers(protocol, key), model=model)
    gone = not server.is_model_ready(model)
    loaded = admin_call(server, protocol, "load", admin_headers(protocol, key), model=model)
    record_restriction(
        reliability_figures,
        f"model load/unload ({protocol.upper()})",
        without[0],
        wrong[0],
        f"{unloaded[0]} / {loaded[0]}",
    )
    assert unloaded[0] == ALLOWED[protocol] and gone
    assert loaded[0] == ALLOWED[protocol] and server.is_model_ready(model)
    assert still_serving(server)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_shared_memory_registration_needs_the_admin_key(locked, reliability_figures, protocol):
    server, key = locked.server, locked.admin_key
    name = f"reliability_{protocol}_{os.getpid()}"
    region = shared_memory.create_shared_memory_region(name, f"/{name}", 1024)
    try:
        arguments = {"name": name, "key": f"/{name}", "byte_size": 1024}
        without = admin_call(server, protocol, "register", None, **arguments)
        wrong = admin_call(server, protocol, "register", admin_headers(protocol, "not-" + key), **arguments)
        allowed = admin_call(server, protocol, "register", admin_headers(protocol, key), **arguments)
        released = admin_call(server, protocol, "unregister", admin_headers(protocol, key), name=name)
    finally:
        shared_memory.destroy_shared_memory_region(region)
    record_restriction(
        reliability_figures,
        f"system shared-memory registration ({protocol.upper()})",
        without[0],
        wrong[0],
        allowed[0],
    )
    assert_refused(protocol, without)
    assert_refused(protocol, wrong)
    assert allowed[0] == ALLOWED[protocol] and released[0] == ALLOWED[protocol]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("api", ["logging", "trace"])
def test_logging_and_trace_settings_need_the_admin_key(locked, reliability_figures, protocol, api):
    server, key = locked.server, locked.admin_key
    without = admin_call(server, protocol, api, None)
    wrong = admin_call(server, protocol, api, admin_headers(protocol, "not-" + key))
    allowed = admin_call(server, protocol, api, admin_headers(protocol, key))
    record_restriction(
        reliability_figures, f"{api} settings ({protocol.upper()})", without[0], wrong[0], allowed[0]
    )
    assert_refused(protocol, without)
    assert_refused(protocol, wrong)
    assert allowed[0] == ALLOWED[protocol]


def test_inference_health_and_metadata_stay_open_without_a_key(locked):
    # Probes and clients hold no key: only the admin APIs are locked.
    server = locked.server
    for path in (
        "/v2/health/ready",
        "/v2/health/live",
        f"/v2/models/{DETECTOR}/ready",
        f"/v2/models/{DETECTOR}",
        "/v2",
    ):
        assert http_answer_raw(server.http_url, "GET", path)[0] == "200", path
    assert health.check(server.http_url, timeout_s=60) == (True, "ok")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_client_beside_a_locked_server_sends_images_over_the_socket(locked, sample_paths, protocol, caplog):
    """shared_memory="auto" picks shared memory on loopback; a production server refuses to
    register it without the key (gRPC says UNAVAILABLE), and the client must then fall back,
    not report the server as down."""
    server = locked.server
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with Detector(url, protocol=protocol, shared_memory="auto", retries=0) as detector:
        assert len(detector.detect(sample_paths[0])) > 0
    assert "cannot use this machine's shared memory" in caplog.text


def test_the_client_reads_a_restricted_api_refusal_as_access_denied_not_as_an_outage():
    refusal = "This protocol is restricted, expecting header 'triton-grpc-protocol-admin-key'"
    translated = translate_error(
        InferenceServerException(refusal, status="StatusCode.UNAVAILABLE"), where="h:1", model=""
    )
    assert isinstance(translated, AccessDeniedError) and not isinstance(translated, ServerUnavailableError)
    forbidden = InferenceServerException("This API is restricted, expecting header 'admin-key'", status="403")
    assert isinstance(translate_error(forbidden, where="h:1", model=""), AccessDeniedError)


# Patterns of credentials that must never be committed. Written so that this file does not match them.
SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})\b"),
    "Slack token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "NVIDIA API key": re.compile(r"\bnvapi-[A-Za-z0-9_-]{40,}"),
    "Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{34,}\b"),
    "JSON web token": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "password in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/:@'\"]+:[^\s/@'\"]{3,}@[A-Za-z0-9]"),
}
SECRET_FILE_NAMES = re.compile(
    r"(^|/)(id_(rsa|dsa|ecdsa|ed25519)|\.env(\..+)?|\.netrc|\.pypirc|.+\.(pem|key|p12|pfx|jks|keystore))$"
)


def scan_for_secrets(root: Path, names: list[str]) -> tuple[int, list[str]]:
    """(text files read, findings) over ``names`` under ``root``; binary files are skipped."""
    findings, scanned = [], 0
    for name in names:
        path = root / name
        if SECRET_FILE_NAMES.search(name):
            findings.append(f"{name}: a credentials file")
        if not path.is_file():
            continue
        data = path.read_bytes()[: 2**20]
        if b"\0" in data:  # binary
            continue
        scanned += 1
        text = data.decode(errors="replace")
        findings += [f"{name}: {kind}" for kind, pattern in SECRET_PATTERNS.items() if pattern.search(text)]
    return scanned, findings


def test_the_secrets_scan_finds_planted_credentials(tmp_path):
    # Assembled at run time, so that this file does not match the patterns itself.
    planted = {
        "config.py": "AWS_KEY = '" + "AKIA" + "Z" * 16 + "'\n",
        "deploy/id_rsa": "",
        "notes.md": "clone https://bob:" + "hunter22" + "@git.example.com/x.git\n",
        "clean.txt": "nothing to see\n",
    }
    for name, text in planted.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    scanned, findings = scan_for_secrets(tmp_path, sorted(planted))
    assert scanned == 4
    assert findings == [
        "config.py: AWS access key id",
        "deploy/id_rsa: a credentials file",
        "notes.md: password in a URL",
    ]


def test_no_secrets_are_committed(reliability_figures):
    """Every file git tracks is free of private keys, tokens and credentials; the admin key is
    generated at install time (chart Secret). Untracked files are someone's work in progress,
    not the repository: they are not read."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60
    ).stdout.split(b"\0")
    scanned, findings = scan_for_secrets(REPO, [name.decode() for name in listed if name])
    reliability_figures.row(
        "Security", "tracked files scanned for committed secrets", f"{scanned}, findings {len(findings)}"
    )
    assert scanned > 50  # the scan saw the repository
    assert findings == []
