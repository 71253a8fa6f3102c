"""End to end: `ansible-playbook site.yml -e echolab_profile=quick` on a lab of its own.

One lab host container (testhosts + clients, as in 2017) named for this test, so that it never
touches a developer's `echolab-lab`. The whole experiment runs once (lab creation, preflight,
setup, all targets, swarm, sampler, fetch, manifest, report); the test then asserts on the files
the run left on the controller, runs the `setup` and `targets` stages again and requires
`changed=0` for every host, and removes everything it created.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The whole run builds a guest image and boots it under TCG: ~15 min on a quiet 2-core machine,
# over 25 min on a loaded one. The limits only stop a hung run.
pytestmark = pytest.mark.timeout(3600)

LAB_HOST = "echolab-site-e2e"
TARGETS = ("vm", "container", "baseline")
RECAP = re.compile(
    r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE
)


def ansible_playbook(inventory: Path, *args: str, timeout: int) -> subprocess.CompletedProcess[str]:
    """Run ansible-playbook from the repository root with the repository's configuration."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    env.update(PY_COLORS="0", ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    try:
        return subprocess.run(
            ["ansible-playbook", "-i", str(inventory), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output
        pytest.fail(
            f"ansible-playbook {' '.join(args)} took over {timeout} s:\n{(out or '')[-20000:]}"
        )


def recap(output: str) -> dict[str, dict[str, int]]:
    """Parse the PLAY RECAP lines: host -> {ok, changed, unreachable, failed}."""
    return {
        m[1]: {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]), "failed": int(m[5])}
        for m in RECAP.finditer(output)
    }


@pytest.fixture(scope="module")
def lab_inventory(
    tmp_path_factory: pytest.TempPathFactory, controller_become_trap: str
) -> Iterator[Path]:
    """An inventory like inventory/lab/ whose one host is this test's own lab container.

    Any become on the controller fails loudly (controller_become_trap): the kit needs root only
    on the managed hosts.
    """
    inv = tmp_path_factory.mktemp("inventory")
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "host_vars").mkdir()
    # The experiment as data is the repository's own (profiles and targets).
    (inv / "group_vars" / "all" / "experiment.yml").symlink_to(
        ROOT / "inventory" / "lab" / "group_vars" / "all" / "experiment.yml"
    )
    # A wheelhouse of its own, empty at the start: the run must build every wheel it ships, as on a
    # fresh clone, whatever other tests left in the repository's .cache/wheelhouse.
    wheels = tmp_path_factory.mktemp("wheelhouse")
    (inv / "group_vars" / "all" / "wheelhouse.yml").write_text(
        f"wheelhouse_dir: {wheels}\n"
        f"container_target_wheelhouse_dir: {wheels}\n"
        f"swarm_client_wheelhouse_dir: {wheels}\n"
    )
    (inv / "hosts.yml").write_text(
        "all:\n  children:\n"
        f"    testhosts:\n      hosts:\n        {LAB_HOST}:\n"
        f"    clients:\n      hosts:\n        {LAB_HOST}:\n"
    )
    (inv / "host_vars" / f"{LAB_HOST}.yml").write_text(
        "ansible_connection: community.docker.docker\n"
        "ansible_python_interpreter: /usr/bin/python3\n"
    )
    (inv / "host_vars" / "localhost.yml").write_text(controller_become_trap)
    yield inv
    # Remove the targets, then the lab container and its volume, whatever happened above.
    ansible_playbook(inv, "playbooks/teardown.yml", timeout=600)
    lab = ("playbooks/lab.yml", "-e", "lab_state=absent", "-e", f"lab_host_name={LAB_HOST}")
    proc = ansible_playbook(inv, *lab, timeout=300)
    assert proc.returncode == 0, proc.stdout[-5000:]


@pytest.fixture(scope="module")
def site_run(lab_inventory: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """Run the whole experiment once with the quick profile; return its output and run dir."""
    results = tmp_path_factory.mktemp("results")
    proc = ansible_playbook(
        lab_inventory,
        "site.yml",
        "-e", "echolab_profile=quick",
        "-e", "echolab_lab=true",
        "-e", f"lab_host_name={LAB_HOST}",
        "-e", f"echolab_results_dir={results}",
        timeout=2700,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-20000:]
    runs = sorted(p for p in results.iterdir() if p.is_dir())
    assert len(runs) == 1, f"expected one run directory in {results}, found {runs}"
    return proc.stdout, runs[0]


def load(path: Path) -> Any:
    assert path.is_file(), f"missing {path}"
    return json.loads(path.read_text())


@pytest.mark.lab
@pytest.mark.parametrize("target", TARGETS)
def test_every_target_measured(site_run: tuple[str, Path], target: str) -> None:
    """Each target has an ok status, round trips from the client host and server samples."""
    _, run = site_run
    status = load(run / target / "status.json")
    assert status["status"] == "ok", status
    assert status["hosts"][LAB_HOST]["status"] == "ok", status
    summary = load(run / target / LAB_HOST / "summary.json")
    assert summary["roundtrips"] > 0, summary
    assert summary["connections"]["failed"] == 0, summary
    assert list((run / target / LAB_HOST).glob("worker-*.jsonl")), "no worker file fetched"
    samples = (run / target / LAB_HOST / "sample.jsonl").read_text().splitlines()
    assert json.loads(samples[0])["type"] == "start"
    kinds = [json.loads(line)["type"] for line in samples]
    assert "sample" in kinds, "the sampler recorded nothing"


@pytest.mark.lab
def test_manifest_complete(site_run: tuple[str, Path]) -> None:
    """The manifest names the commit, the parameters, the host facts and every target."""
    _, run = site_run
    manifest = load(run / "manifest.json")
    assert re.fullmatch(r"[0-9a-f]{40}", manifest["git"]["commit"]), manifest["git"]
    params = manifest["parameters"]
    assert params["profile"] == "quick"
    assert params["connections"] == 50
    host = manifest["hosts"][LAB_HOST]
    for key in ("cpu_model", "cpus", "kernel", "distribution"):
        assert host[key], f"{key} missing: {host}"
    assert host["sysctl"]["net.core.somaxconn"], host["sysctl"]
    for tool in ("python", "qemu", "libvirt", "docker", "wsswarm"):
        assert host["versions"].get(tool), f"version of {tool} missing: {host['versions']}"
    assert manifest["controller"]["wsecho"], manifest["controller"]
    targets = manifest["targets"]
    assert set(targets) == set(TARGETS)
    assert targets["vm"]["kind"] == "vm"
    assert targets["vm"]["accelerator"] in ("kvm", "tcg")
    assert targets["container"]["docker_proxy"] is True
    assert targets["baseline"]["kind"] == "baseline"


@pytest.mark.lab
def test_report_written_and_printed(site_run: tuple[str, Path]) -> None:
    """`wsswarm report` wrote report.md and summary.json; the play printed where."""
    output, run = site_run
    report = (run / "report.md").read_text()
    for target in TARGETS:
        assert target in report
    assert (run / "summary.json").is_file()
    assert f"{run}/report.md" in output


@pytest.mark.lab
def test_results_belong_to_the_user(site_run: tuple[str, Path]) -> None:
    """Everything under the run directory was written by the user who ran the play."""
    _, run = site_run
    paths = [run, *run.rglob("*")]
    assert len(paths) > 10, paths
    foreign = [str(p) for p in paths if p.lstat().st_uid != os.getuid()]
    assert not foreign, f"not owned by uid {os.getuid()}: {foreign}"


@pytest.mark.lab
def test_second_setup_and_targets_change_nothing(
    site_run: tuple[str, Path], lab_inventory: Path
) -> None:
    """A second run of the setup and targets stages reports changed=0 for every host."""
    assert site_run
    proc = ansible_playbook(
        lab_inventory,
        "site.yml",
        "--tags", "setup,targets",
        "-e", "echolab_profile=quick",
        "-e", "echolab_lab=true",
        "-e", f"lab_host_name={LAB_HOST}",
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-20000:]
    hosts = recap(proc.stdout)
    assert LAB_HOST in hosts, proc.stdout[-3000:]
    changed = {host: counts["changed"] for host, counts in hosts.items() if counts["changed"]}
    assert not changed, f"changed on the second run: {changed}\n{proc.stdout[-20000:]}"


@pytest.mark.lab
def test_failed_target_recorded_and_run_goes_on(
    site_run: tuple[str, Path], lab_inventory: Path, tmp_path: Path
) -> None:
    """A target that is not up is recorded as failed, the next one still runs, the play fails."""
    assert site_run
    targets = [
        # Nothing listens on this port: the target "did not come up".
        {"name": "ghost", "kind": "baseline", "address": "local", "port": 8099, "path": "/",
         "instance": "echolab-ghost", "app": "nodejs_ws"},
        {"name": "container", "kind": "container", "address": "local", "port": 8080, "path": "/",
         "instance": "echolab-wsecho", "app": "wsecho"},
    ]  # fmt: skip
    proc = ansible_playbook(
        lab_inventory,
        "site.yml",
        "--tags", "run,report",
        "-e", "echolab_profile=quick",
        "-e", "echolab_lab=true",
        "-e", f"lab_host_name={LAB_HOST}",
        "-e", f"echolab_results_dir={tmp_path}",
        "-e", json.dumps({"echolab_targets": targets}),
        # The ghost never comes up: no need to wait the default minute for it.
        "-e", "swarm_run_health_timeout=15",
        timeout=900,
    )  # fmt: skip
    assert proc.returncode != 0, "the play must end non-zero when a target failed"
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    ghost = load(run / "ghost" / "status.json")
    assert ghost["status"] == "failed"
    assert "8099" in ghost["reason"], ghost
    container = load(run / "container" / "status.json")
    assert container["status"] == "ok", container
    assert load(run / "container" / LAB_HOST / "summary.json")["roundtrips"] > 0
    assert "ghost" in (run / "report.md").read_text()
    assert "target ghost failed" in proc.stdout


def lab_exec(command: str) -> str:
    """Run a shell command inside this test's lab host; return its stdout (stderr on failure)."""
    proc = subprocess.run(
        ["docker", "exec", LAB_HOST, "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{command}: rc={proc.returncode}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.lab
def test_teardown_removes_everything_and_runs_twice(
    site_run: tuple[str, Path], lab_inventory: Path
) -> None:
    """playbooks/teardown.yml on a fully provisioned host (VM, containers, images, bridge, tuning)
    leaves nothing of the kit behind, and a second pass finds nothing to do. Runs last."""
    assert site_run
    proc = ansible_playbook(lab_inventory, "playbooks/teardown.yml", timeout=600)
    assert proc.returncode == 0, proc.stdout[-20000:]
    assert recap(proc.stdout)[LAB_HOST]["failed"] == 0

    assert "echolab-vm" not in lab_exec("virsh --connect qemu:///system list --all --name").split()
    assert "echolab" not in lab_exec("virsh --connect qemu:///system net-list --all --name").split()
    assert lab_exec("ip -o link show bridge43 2>/dev/null || true") == ""
    containers = lab_exec("docker ps -a --format '{{.Names}}'").split()
    assert not [name for name in containers if name.startswith("echolab")], containers
    images = lab_exec("docker images --format '{{.Repository}}'").split()
    assert not [image for image in images if image.startswith("echolab/")], images
    for path in (
        "/var/lib/echolab/vm",
        "/etc/sysctl.d/90-echolab.conf",
        "/etc/security/limits.d/90-echolab.conf",
        "/opt/echolab/venv",
    ):
        assert lab_exec(f"test -e {path} && echo present || echo absent").strip() == "absent", path

    again = ansible_playbook(lab_inventory, "playbooks/teardown.yml", timeout=600)
    assert again.returncode == 0, again.stdout[-20000:]
    assert recap(again.stdout)[LAB_HOST]["changed"] == 0, again.stdout[-20000:]
