"""swarm_client on a lab container: wsswarm installed offline from the copied wheelhouse into
/opt/echolab/venv, runnable, with the pinned dependency versions."""

from __future__ import annotations

from pathlib import Path

from testinfra.host import Host

ROOT = Path(__file__).resolve().parents[3]
VENV = "/opt/echolab/venv"
PIP_LOG = "/var/log/echolab-molecule-pip.log"


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "runtime.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_wsswarm_runs_from_the_venv(host: Host) -> None:
    """`wsswarm --help` works and lists its subcommands."""
    out = host.check_output(f"{VENV}/bin/wsswarm --help")
    for command in ("run", "sample", "report"):
        assert command in out


def test_dependencies_are_the_pinned_versions(host: Host) -> None:
    """Every installed dependency that runtime.txt pins has exactly the pinned version."""
    installed = {}
    for line in host.check_output(f"{VENV}/bin/pip list --format=freeze").splitlines():
        name, _, version = line.partition("==")
        installed[name.lower()] = version
    pins = _pins()
    for name in ("psutil", "hdrhistogram", "uvloop"):
        assert installed[name] == pins[name], name


def test_wheelhouse_copied_with_constraints(host: Host) -> None:
    """The host keeps the wheels and the pins it was installed from."""
    wheelhouse = host.file("/opt/echolab/wheelhouse")
    assert wheelhouse.is_directory
    names = wheelhouse.listdir()
    assert "constraints.txt" in names
    assert any(n.startswith("wsswarm-") and n.endswith(".whl") for n in names)


def test_installed_without_an_index(host: Host) -> None:
    """pip's own debug log of the install (PIP_LOG, set by converge.yml) shows that it ignored
    every index and opened no HTTP connection: the wheelhouse alone provided the packages."""
    log = host.file(PIP_LOG)
    assert log.exists, f"{PIP_LOG} is missing: pip never ran with converge.yml's environment"
    text = log.content_string
    assert "Ignoring indexes:" in text
    assert "Starting new HTTP" not in text
    assert "Looking in indexes" not in text
    assert host.run(f"{VENV}/bin/python -c 'import wsswarm, uvloop, hdrh, psutil'").rc == 0


def test_wsswarm_has_its_engine_compiled_for_the_hosts_python(host: Host) -> None:
    """The wheelhouse compiled wsswarm for this host's Python (its wheel's tag says so), and
    the installed package imports its compiled closed loop."""
    version, platform = host.check_output(
        f"{VENV}/bin/python -c 'import sys, sysconfig;"
        " print(*sys.version_info[:2], sysconfig.get_platform())'"
    ).rsplit(" ", 1)
    cp = "cp" + "".join(version.split())
    plat = platform.replace("-", "_").replace(".", "_")  # the wheel tag's spelling: linux_x86_64
    wheels = [n for n in host.file("/opt/echolab/wheelhouse").listdir() if n.startswith("wsswarm-")]
    assert len(wheels) == 1, wheels
    assert wheels[0].endswith(f"-{cp}-{cp}-{plat}.whl"), wheels
    assert host.run(f"{VENV}/bin/python -c 'import wsswarm._engine'").rc == 0
