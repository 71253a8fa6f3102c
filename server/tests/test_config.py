"""Settings: flags, WSECHO_* environment variables, defaults, and the exit code 2 on bad values."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from wsecho.cli import main
from wsecho.config import ConfigError, Settings, load, parse_size


def test_defaults_are_the_documented_ones() -> None:
    """No flag, no environment: the defaults of the issue."""
    settings = load([], {})
    assert settings == Settings(
        host="0.0.0.0",
        port=8080,
        backend="picows",
        max_message_size=1024 * 1024,
        max_connections=50_000,
        handshake_timeout=10.0,
        log_level="info",
        log_format="text",
        run_token=None,
        workers=1,
    )


def test_environment_sets_every_option() -> None:
    """Each option has a WSECHO_* variable."""
    environ = {
        "WSECHO_HOST": "127.0.0.1",
        "WSECHO_PORT": "9000",
        "WSECHO_BACKEND": "websockets",
        "WSECHO_MAX_MESSAGE_SIZE": "16MiB",
        "WSECHO_MAX_CONNECTIONS": "10",
        "WSECHO_HANDSHAKE_TIMEOUT": "2.5",
        "WSECHO_LOG_LEVEL": "debug",
        "WSECHO_LOG_FORMAT": "json",
        "WSECHO_RUN_TOKEN": "run-42",
        "WSECHO_WORKERS": "3",
        "WSECHO_HOT_PATH": "python",
    }
    assert load([], environ) == Settings(
        "127.0.0.1",
        9000,
        "websockets",
        16 << 20,
        10,
        2.5,
        "debug",
        "json",
        "run-42",
        3,
        hot_path="python",
    )


def test_empty_run_token_means_none() -> None:
    """A WSECHO_RUN_TOKEN left empty by a deployment sets no token (and /healthz no header)."""
    assert load([], {"WSECHO_RUN_TOKEN": ""}).run_token is None
    assert load(["--run-token", "a.b_c~d+e/f=g-1"], {}).run_token == "a.b_c~d+e/f=g-1"


def test_run_token_file_is_read_each_time(tmp_path: Path) -> None:
    """--run-token-file: the token is what the file holds now; missing or invalid: none."""
    path = tmp_path / "run-token"
    settings = load(["--run-token-file", str(path)], {})
    assert settings.current_run_token() is None  # no file yet
    path.write_text("first-run\n")
    assert settings.current_run_token() == "first-run"
    path.write_text("second-run")
    assert settings.current_run_token() == "second-run"
    path.write_text("two words\n")
    assert settings.current_run_token() is None
    assert load([], {"WSECHO_RUN_TOKEN_FILE": str(path)}).run_token_file == str(path)
    assert load(["--run-token", "t"], {}).current_run_token() == "t"


def test_flags_win_over_environment() -> None:
    """A flag overrides its environment variable."""
    settings = load(
        ["--port", "81", "--backend", "picows"],
        {"WSECHO_PORT": "80", "WSECHO_BACKEND": "websockets"},
    )
    assert (settings.port, settings.backend) == (81, "picows")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1048576", 1 << 20), ("1MiB", 1 << 20), ("16M", 16 << 20), ("64k", 65536), ("2 KiB", 2048)],
)
def test_sizes_accept_binary_units(text: str, expected: int) -> None:
    """--max-message-size takes bytes or a binary unit."""
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "65536"], "port must be between 0 and 65535"),
        (["--port", "http"], "--port: invalid value 'http'"),
        (["--backend", "tornado"], "backend must be one of picows, websockets"),
        (["--max-message-size", "0"], "max-message-size must be between"),
        (["--max-message-size", "lots"], "--max-message-size: invalid value 'lots'"),
        (["--max-connections", "0"], "max-connections must be at least 1"),
        (["--handshake-timeout", "-1"], "handshake-timeout must be in (0, 3600]"),
        (["--handshake-timeout", "nan"], "--handshake-timeout: invalid value 'nan'"),
        (["--log-level", "loud"], "log-level must be one of"),
        (["--log-format", "xml"], "log-format must be one of text, json"),
        (["--host", ""], "host must not be empty"),
        (["--workers", "0"], "workers must be between 1 and 64, got 0"),
        (["--workers", "65"], "workers must be between 1 and 64, got 65"),
        (["--workers", "two"], "--workers: invalid value 'two'"),
        (["--run-token", "two words"], "run-token must be 1-128 characters"),
        (["--run-token", "x\r\nSet-Cookie: a=b"], "run-token must be 1-128 characters"),
        (["--run-token", "t" * 129], "run-token must be 1-128 characters"),
        (["--run-token", "t", "--run-token-file", "/f"], "run-token or run-token-file, not both"),
    ],
)
def test_invalid_settings_give_one_line_and_exit_code_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each bad value: exit code 2 and a single line naming the problem."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("wsecho: error: ")
    assert message in err


def test_invalid_environment_names_the_variable(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad WSECHO_* value is reported under the variable's name."""
    with pytest.raises(ConfigError, match="WSECHO_MAX_CONNECTIONS: invalid value 'many'"):
        load([], {"WSECHO_MAX_CONNECTIONS": "many"})


def test_command_exits_2_on_bad_settings() -> None:
    """The installed entry point (python -m wsecho) exits 2 with one line on stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "wsecho", "--max-connections", "-5"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == "wsecho: error: max-connections must be at least 1, got -5\n"


def test_unknown_flag_exits_2() -> None:
    """argparse's usage errors use the same exit code."""
    with pytest.raises(SystemExit) as exc:
        main(["--threads", "4"])
    assert exc.value.code == 2


def test_port_in_use_exits_1_with_a_clear_line() -> None:
    """Another process on the port: one error line, exit code 1, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "wsecho", "--host", "127.0.0.1", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
