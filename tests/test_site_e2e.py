"""End to end, as a user runs the kit on real hardware: `site.yml -e echolab_profile=quick` from a
controller user who is not root, with a test host and a separate client host, against all three
targets, the VM included.

The lab is this module's own (never a developer's `echolab-lab`): two systemd host containers,
the test host (also a client host, as in 2017) and a separate client host, which reaches the VM's
bridge only through the test host (`bridge_forward_mode: routed`, the route `bridge_route` adds).
The controller is a user in the docker group with a checkout of its own; every play runs as that
user, and any become on the controller fails loudly.

One lab serves the whole module, in this order: the preflight checks, on hosts where setup has
not added the route yet; the whole experiment once; the assertions on the files it left; a second
setup+targets pass (changed=0 on every host); a failed target; teardown, twice.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The whole run builds a guest image and boots it under TCG: ~15 min on a quiet 2-core machine,
# over 25 min on a loaded one. The limits only stop a hung run.
pytestmark = pytest.mark.timeout(3600)

TEST_HOST = "echolab-site-e2e"
CLIENT_HOST = f"{TEST_HOST}-client"
CLIENT_HOSTS = (TEST_HOST, CLIENT_HOST)
TARGETS = ("vm", "container", "baseline")
VM_ADDRESS = "10.0.0.42"
# The controller user when the suite runs as root; a user who runs the suite is the controller.
CONTROLLER_USER = "echolab-e2e"
LAB_VARS = (
    "-e", "echolab_lab=true", "-e", "lab_client=true",
    "-e", f"lab_host_name={TEST_HOST}", "-e", f"lab_host_client_name={CLIENT_HOST}",
)  # fmt: skip
# Inventories whose hosts test_teardown_removes_everything_and_runs_twice left clean.
TORN_DOWN: set[Path] = set()
RECAP = re.compile(
    r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE
)


def recap(output: str) -> dict[str, dict[str, int]]:
    """Parse the PLAY RECAP lines: host -> {ok, changed, unreachable, failed}."""
    return {
        m[1]: {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]), "failed": int(m[5])}
        for m in RECAP.finditer(output)
    }


def said(proc: subprocess.CompletedProcess[str]) -> str:
    """The output with Ansible's YAML line wrapping and quote doubling ('') undone."""
    return " ".join(proc.stdout.replace("''", "'").split())


def load(path: Path) -> Any:
    assert path.is_file(), f"missing {path}"
    return json.loads(path.read_text())


def run_root(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)}: rc={proc.returncode}\n{proc.stderr}"
    return proc.stdout


@dataclass
class Controller:
    """The user who runs the plays, with a checkout and a home of their own."""

    uid: int
    gid: int
    groups: list[int]
    home: Path
    checkout: Path
    workdir: Path

    def mkdir(self, name: str) -> Path:
        """A new directory of the controller user's, under the module's work directory."""
        path = self.workdir / name
        path.mkdir()
        os.chown(path, self.uid, self.gid)
        return path

    def playbook(self, *args: str, timeout: int) -> subprocess.CompletedProcess[str]:
        """ansible-playbook from the user's checkout, with its configuration, as that user."""
        venv_bin = Path(sys.executable).parent
        env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "TMPDIR"))}
        env.update(
            HOME=str(self.home),
            ANSIBLE_CONFIG=str(self.checkout / "ansible.cfg"),
            PY_COLORS="0",
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_NOCOLOR="1",
            PATH=f"{venv_bin}{os.pathsep}{env['PATH']}",
        )
        as_user: dict[str, Any] = {}
        if self.uid != os.getuid():
            as_user = {"user": self.uid, "group": self.gid, "extra_groups": self.groups}
        try:
            return subprocess.run(
                [str(venv_bin / "ansible-playbook"), *args],
                cwd=self.checkout,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
                umask=0o022,
                **as_user,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.output if isinstance(exc.output, str) else (exc.output or b"").decode()
            pytest.fail(f"ansible-playbook {' '.join(args)} took over {timeout} s:\n{out[-20000:]}")


def _copy_checkout(dest: Path) -> None:
    """A clone of this checkout's commit with its uncommitted files laid over it, as the user's
    own checkout; the venv is this one's (read-only), since building one takes minutes."""
    run_root("git", "clone", "-q", "--no-hardlinks", str(ROOT), str(dest))
    changed = run_root("git", "-C", str(ROOT), "ls-files", "-z", "-m", "-o", "--exclude-standard")
    for name in filter(None, changed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    (dest / ".venv").symlink_to(Path(sys.executable).parent.parent)


def _untraversable(path: Path) -> list[Path]:
    """The directories from / to `path` (itself included) that others may not enter."""
    return [p for p in [*reversed(path.parents), path] if not p.stat().st_mode & stat.S_IXOTH]


@pytest.fixture(scope="module")
def controller() -> Iterator[Controller]:
    """As root: a user in the docker group, created for this module and removed after it, who
    may traverse (an ACL entry of its own, removed after) to this venv and its Python. As a user:
    that user."""
    workdir = Path(tempfile.mkdtemp(prefix="echolab-e2e-"))
    workdir.chmod(0o755)
    created = False
    acl_dirs: list[Path] = []
    acls = workdir / "acls.dump"
    try:
        if os.getuid() == 0:
            home = workdir / "home"
            if subprocess.run(["id", CONTROLLER_USER], capture_output=True, check=False).returncode:
                run_root("useradd", "--home-dir", str(home), "--groups", "docker", CONTROLLER_USER)
                created = True
            entry = pwd.getpwnam(CONTROLLER_USER)
            uid, gid = entry.pw_uid, entry.pw_gid
            groups = [int(g) for g in run_root("id", "-G", CONTROLLER_USER).split()]
            home.mkdir(exist_ok=True)
            os.chown(home, uid, gid)
            needed = {Path(sys.executable).parent, Path(sys.executable).resolve().parent}
            acl_dirs = sorted({d for p in needed for d in _untraversable(p)})
            # The ACLs as they were, restored exactly afterwards (`setfacl -x` would leave a mask).
            acls.write_text(run_root("getfacl", "--absolute-names", *map(str, acl_dirs)))
            for directory in acl_dirs:
                run_root("setfacl", "-m", f"u:{CONTROLLER_USER}:x", str(directory))
        else:
            uid, gid, groups = os.getuid(), os.getgid(), os.getgroups()
            home = Path.home()
        checkout = workdir / "echolab"
        _copy_checkout(checkout)
        run_root("chown", "-R", "--no-dereference", f"{uid}:{gid}", str(checkout))
        yield Controller(uid, gid, groups, home, checkout, workdir)
    finally:
        if acl_dirs:
            run_root("setfacl", f"--restore={acls}")
        if created:
            run_root("userdel", CONTROLLER_USER)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def lab(controller: Controller, controller_become_trap: str) -> Iterator[Path]:
    """The lab (test host + separate client host) and an inventory like inventory/lab/ with
    inventory/lab-client.yml; removed afterwards with everything the kit put on it."""
    inv = controller.mkdir("inventory")
    (inv / "group_vars" / "all").mkdir(parents=True)
    (inv / "host_vars").mkdir()
    # The experiment as data is the repository's own (profiles and targets).
    (inv / "group_vars" / "all" / "experiment.yml").symlink_to(
        controller.checkout / "inventory" / "lab" / "group_vars" / "all" / "experiment.yml"
    )
    host = {
        "ansible_connection": "community.docker.docker",
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_pipelining": True,
    }
    (inv / "hosts.yml").write_text(
        json.dumps(
            {
                "all": {
                    "vars": {"bridge_forward_mode": "routed"},
                    "children": {
                        "testhosts": {"hosts": {TEST_HOST: host}},
                        "clients": {"hosts": {TEST_HOST: host, CLIENT_HOST: host}},
                    },
                }
            }
        )
    )
    (inv / "host_vars" / "localhost.yml").write_text(controller_become_trap)
    run_root("chown", "-R", f"{controller.uid}:{controller.gid}", str(inv))
    proc = controller.playbook("-i", str(inv), "playbooks/lab.yml", *LAB_VARS, timeout=900)
    try:
        assert proc.returncode == 0, proc.stdout[-8000:]
        yield inv
    finally:
        # Remove the targets, then the lab containers and their volumes, whatever happened above;
        # the targets are left to teardown.yml only where its own test has not already removed them.
        if inv not in TORN_DOWN:
            controller.playbook("-i", str(inv), "playbooks/teardown.yml", timeout=600)
        absent = controller.playbook(
            "-i", str(inv), "playbooks/lab.yml", *LAB_VARS, "-e", "lab_state=absent", timeout=300
        )
        assert absent.returncode == 0, absent.stdout[-5000:]


def lab_exec(host: str, command: str) -> str:
    """Run a shell command inside one of this module's lab hosts; return its stdout."""
    proc = subprocess.run(
        ["docker", "exec", host, "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{host}: {command}: rc={proc.returncode}\n{proc.stderr}"
    return proc.stdout


def lab_host_address() -> str:
    """The test host's address on the lab's Docker network, as the separate client reaches it."""
    proc = subprocess.run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
         TEST_HOST],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return proc.stdout.split()[0]


# --- Before setup: the preflight checks on hosts the kit has not changed yet ----------------------


def preflight(
    controller: Controller, inventory: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return controller.playbook(
        "-i", str(inventory), "playbooks/preflight.yml", "-e", "echolab_profile=quick", *extra,
        timeout=600,
    )  # fmt: skip


@pytest.mark.lab
def test_vm_with_a_client_host_and_an_isolated_bridge_is_refused(
    controller: Controller, lab: Path
) -> None:
    """An isolated bridge with a separate client host: refused before anything, with the mode to
    set; the test host itself passes, and its bridge subnet and name are free."""
    proc = preflight(controller, lab, "-e", "bridge_forward_mode=isolated")
    assert proc.returncode != 0, proc.stdout[-8000:]
    text = said(proc)
    assert (
        f"{CLIENT_HOST} cannot measure the VM target ({VM_ADDRESS}): it is a separate client "
        f"host, and the VM's bridge on {TEST_HOST} is isolated (bridge_forward_mode=isolated)"
    ) in text
    assert "Set bridge_forward_mode=routed on the test host" in text
    assert "refusing to build the VM's bridge" not in text
    assert f"refusing to send load from {TEST_HOST}:" not in text


@pytest.fixture(scope="module")
def routed_preflight(controller: Controller, lab: Path) -> subprocess.CompletedProcess[str]:
    """The preflight as site.yml runs it, on hosts that setup has not changed yet."""
    return preflight(controller, lab)


@pytest.mark.lab
def test_default_route_to_the_bridge_is_refused_before_any_load(
    controller: Controller, lab: Path, routed_preflight: subprocess.CompletedProcess[str]
) -> None:
    """Routed: the client host has no route to the bridge subnet yet, so its traffic to the VM
    would follow its default route off the machine. Preflight lets it wait for the route setup
    adds; checked as the run stage checks it (nothing deferred), it is refused."""
    waiting = routed_preflight
    assert waiting.returncode == 0, waiting.stdout[-8000:]
    assert f"{CLIENT_HOST}: vm by not checked yet: {VM_ADDRESS} via " in said(waiting)
    assert "setup adds the route" in said(waiting)

    strict = preflight(controller, lab, "-e", "experiment_preflight_routes_defer_bridge=false")
    assert strict.returncode != 0, strict.stdout[-8000:]
    text = said(strict)
    refused = f"refusing to send load from {CLIENT_HOST}: target vm: route to {VM_ADDRESS} is `"
    assert refused in text
    assert "(the default route)`: the bridge subnet must be routed through the test host" in text


@pytest.mark.lab
def test_local_targets_get_the_address_each_client_reaches(
    routed_preflight: subprocess.CompletedProcess[str],
) -> None:
    """The test host loads its own targets on loopback; the separate client gets the test host's
    address on their network, never a name only the controller resolves."""
    assert routed_preflight.returncode == 0, routed_preflight.stdout[-8000:]
    text = said(routed_preflight)
    for host, address in ((TEST_HOST, "local 127.0.0.1"), (CLIENT_HOST, lab_host_address())):
        # One line per host: "<host>: vm by <route>; container by <route>; baseline by <route>".
        by = re.escape(address)
        shown = rf"{host}: vm by .*?; container by {by} dev [^;]+; baseline by {by} dev "
        assert re.search(shown, text), text[-8000:]


# --- The whole experiment, once -----------------------------------------------------------------


@pytest.fixture(scope="module")
def site_run(controller: Controller, lab: Path) -> tuple[str, Path]:
    """Run the whole experiment once with the quick profile; return its output and run dir."""
    results = controller.mkdir("results")
    proc = controller.playbook(
        "-i", str(lab), "site.yml", "-e", "echolab_profile=quick", *LAB_VARS,
        "-e", f"echolab_results_dir={results}",
        timeout=2700,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-20000:]
    runs = sorted(p for p in results.iterdir() if p.is_dir())
    assert len(runs) == 1, f"expected one run directory in {results}, found {runs}"
    return proc.stdout, runs[0]


@pytest.mark.lab
@pytest.mark.parametrize("target", TARGETS)
def test_every_target_measured_from_every_client_host(
    site_run: tuple[str, Path], target: str
) -> None:
    """Each target: ok, measured from both client hosts at an address each of them reaches, no
    connection failed, every client host's files fetched, server samples from the test host."""
    _, run = site_run
    status = load(run / target / "status.json")
    assert status["status"] == "ok", status
    address = lab_host_address()
    port = {"container": 8080, "baseline": 8081}.get(target)
    for host in CLIENT_HOSTS:
        assert status["hosts"][host]["status"] == "ok", status
        url = status["hosts"][host]["url"]
        if target == "vm":
            assert url == f"ws://{VM_ADDRESS}:8080/", status
        elif host == TEST_HOST:
            assert url == f"ws://127.0.0.1:{port}/", status
        else:
            assert url == f"ws://{address}:{port}/", status
        summary = load(run / target / host / "summary.json")
        assert summary["roundtrips"] > 0, summary
        assert summary["connections"]["failed"] == 0, summary
        assert summary["connections"]["attempted"] > 0, summary
        assert summary["connections"]["open"] == summary["connections"]["attempted"], summary
        assert list((run / target / host).glob("worker-*.jsonl")), f"no worker file of {host}"
    samples = (run / target / TEST_HOST / "sample.jsonl").read_text().splitlines()
    assert json.loads(samples[0])["type"] == "start"
    kinds = [json.loads(line)["type"] for line in samples]
    assert "sample" in kinds, "the sampler recorded nothing"


@pytest.mark.lab
def test_the_client_host_reached_the_vm_through_the_test_host(site_run: tuple[str, Path]) -> None:
    """The separate client's route to the bridge subnet is the kit's, via the test host."""
    assert site_run
    route = lab_exec(CLIENT_HOST, f"ip -o route get {VM_ADDRESS}")
    assert f"via {lab_host_address()} " in route, route


@pytest.mark.lab
def test_manifest_complete(site_run: tuple[str, Path]) -> None:
    """The manifest names the commit, the parameters, the host facts and every target."""
    _, run = site_run
    manifest = load(run / "manifest.json")
    assert re.fullmatch(r"[0-9a-f]{40}", manifest["git"]["commit"]), manifest["git"]
    params = manifest["parameters"]
    assert params["profile"] == "quick"
    assert params["connections"] == 50
    for name in CLIENT_HOSTS:
        host = manifest["hosts"][name]
        for key in ("cpu_model", "cpus", "kernel", "distribution"):
            assert host[key], f"{key} missing for {name}: {host}"
        assert host["sysctl"]["net.core.somaxconn"], host["sysctl"]
    versions = manifest["hosts"][TEST_HOST]["versions"]
    for tool in ("python", "qemu", "libvirt", "docker", "wsswarm"):
        assert versions.get(tool), f"version of {tool} missing: {versions}"
    assert manifest["controller"]["wsecho"], manifest["controller"]
    targets = manifest["targets"]
    assert set(targets) == set(TARGETS)
    assert targets["vm"]["kind"] == "vm"
    assert targets["vm"]["accelerator"] in ("kvm", "tcg")
    assert targets["baseline"]["kind"] == "baseline"


@pytest.mark.lab
def test_report_written_and_printed(site_run: tuple[str, Path]) -> None:
    """`wsswarm report` wrote report.md and summary.json; the play printed where."""
    output, run = site_run
    report = (run / "report.md").read_text()
    for target in TARGETS:
        assert target in report
    assert CLIENT_HOST in report
    assert (run / "summary.json").is_file()
    assert f"{run}/report.md" in output


@pytest.mark.lab
def test_results_belong_to_the_controller_user(
    site_run: tuple[str, Path], controller: Controller
) -> None:
    """Everything under the run directory was written by the user who ran the play."""
    _, run = site_run
    paths = [run, *run.rglob("*")]
    assert len(paths) > 20, paths
    foreign = [str(p) for p in paths if p.lstat().st_uid != controller.uid]
    assert not foreign, f"not owned by uid {controller.uid}: {foreign}"


@pytest.mark.lab
def test_second_setup_and_targets_change_nothing(
    site_run: tuple[str, Path], controller: Controller, lab: Path
) -> None:
    """A second run of the setup and targets stages reports changed=0 for every host."""
    assert site_run
    proc = controller.playbook(
        "-i", str(lab), "site.yml", "--tags", "setup,targets", "-e", "echolab_profile=quick",
        *LAB_VARS,
        timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-20000:]
    hosts = recap(proc.stdout)
    assert set(CLIENT_HOSTS) <= set(hosts), proc.stdout[-3000:]
    changed = {host: counts["changed"] for host, counts in hosts.items() if counts["changed"]}
    assert not changed, f"changed on the second run: {changed}\n{proc.stdout[-20000:]}"


@pytest.mark.lab
def test_failed_target_recorded_and_run_goes_on(
    site_run: tuple[str, Path], controller: Controller, lab: Path
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
    results = controller.mkdir("results-ghost")
    proc = controller.playbook(
        "-i", str(lab), "site.yml", "--tags", "run,report", "-e", "echolab_profile=quick",
        *LAB_VARS,
        "-e", f"echolab_results_dir={results}",
        "-e", json.dumps({"echolab_targets": targets}),
        # The ghost never comes up: no need to wait the default minute for it.
        "-e", "swarm_run_health_timeout=15",
        timeout=900,
    )  # fmt: skip
    assert proc.returncode != 0, "the play must end non-zero when a target failed"
    (run,) = [p for p in results.iterdir() if p.is_dir()]
    ghost = load(run / "ghost" / "status.json")
    assert ghost["status"] == "failed"
    assert "8099" in ghost["reason"], ghost
    container = load(run / "container" / "status.json")
    assert container["status"] == "ok", container
    for host in CLIENT_HOSTS:
        assert load(run / "container" / host / "summary.json")["roundtrips"] > 0
    assert "ghost" in (run / "report.md").read_text()
    assert "target ghost failed" in proc.stdout


@pytest.mark.lab
def test_teardown_removes_everything_and_runs_twice(
    site_run: tuple[str, Path], controller: Controller, lab: Path
) -> None:
    """playbooks/teardown.yml on fully provisioned hosts (VM, containers, images, bridge and its
    forwarding, the client's route, tuning) leaves nothing of the kit behind, and a second pass
    finds nothing to do. Runs last."""
    assert site_run
    proc = controller.playbook("-i", str(lab), "playbooks/teardown.yml", timeout=600)
    assert proc.returncode == 0, proc.stdout[-20000:]
    assert all(recap(proc.stdout)[host]["failed"] == 0 for host in CLIENT_HOSTS), proc.stdout

    # What the kit ran: the domain, the network and its bridge, the containers and images.
    for path in (
        "/etc/libvirt/qemu/echolab-vm.xml",
        "/etc/libvirt/qemu/networks/echolab.xml",
        "/run/libvirt/network/echolab.xml",
    ):
        found = lab_exec(TEST_HOST, f"test -e {path} && echo present || echo absent").strip()
        assert found == "absent", path
    assert lab_exec(TEST_HOST, "pgrep -a qemu-system || true") == ""
    assert lab_exec(TEST_HOST, "ip -o link show bridge43 2>/dev/null || true") == ""
    assert "ECHOLAB_FORWARD" not in lab_exec(TEST_HOST, "iptables -S FORWARD")
    assert lab_exec(CLIENT_HOST, "ip -o route show 10.0.0.0/24") == ""
    # The Docker daemon is stopped by now (below): read what it keeps on disk.
    named = lab_exec(TEST_HOST, "cat /var/lib/docker/containers/*/config.v2.json 2>/dev/null || :")
    assert '"Name":"/echolab' not in named
    tags = lab_exec(TEST_HOST, "cat /var/lib/docker/image/*/repositories.json 2>/dev/null || :")
    assert '"echolab/' not in tags, tags
    # Docker and libvirt came with the kit (the lab host had neither): teardown leaves their
    # units disabled and stopped, as the host was before.
    for unit in ("docker.socket", "docker.service", "libvirtd.socket", "libvirtd.service"):
        shown = lab_exec(TEST_HOST, f"systemctl show -p UnitFileState -p ActiveState {unit}")
        state = dict(line.split("=", 1) for line in shown.split())
        assert state["ActiveState"] == "inactive", (unit, state)
        assert state["UnitFileState"] != "enabled", (unit, state)
    for host in CLIENT_HOSTS:
        for path in (
            "/var/lib/echolab/vm",
            "/etc/sysctl.d/90-echolab.conf",
            "/etc/security/limits.d/90-echolab.conf",
            "/opt/echolab/venv",
        ):
            found = lab_exec(host, f"test -e {path} && echo present || echo absent").strip()
            assert found == "absent", f"{host}: {path}"

    again = controller.playbook("-i", str(lab), "playbooks/teardown.yml", timeout=600)
    assert again.returncode == 0, again.stdout[-20000:]
    changed = {host: counts["changed"] for host, counts in recap(again.stdout).items()}
    assert not any(changed.values()), again.stdout[-20000:]
    TORN_DOWN.add(lab)
