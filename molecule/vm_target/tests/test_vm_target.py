"""vm_target on a lab container: the Debian guest runs under libvirt on bridge43, wsecho answers
on 10.0.0.42:8080 from the lab host, the accelerator chosen by the KVM probe (TCG here: /dev/kvm
exists but does not boot a kernel) is recorded, and the image holds the unit with its raised
limit; it answers /healthz with the host's run token, takes a new one without a reboot, and a
wrong token sends it no load; the vCPU and the emulator thread are pinned to CPU 1, and virtio-net
asks for vhost only where /dev/vhost-net exists (not here)."""

from __future__ import annotations

import json
import re

from testinfra.host import Host

NAME = "echolab-vm"
URL = "http://10.0.0.42:8080"
IMAGE = "/var/lib/echolab/vm/image"
RECIPE = "/var/lib/echolab/vm/recipe"
WHEELS = "/var/lib/echolab/vm/wheelhouse"
UNIT = "/etc/systemd/system/wsecho.service"
WANTS = "/etc/systemd/system/multi-user.target.wants/wsecho.service"
TOKEN_FILE = "/var/lib/echolab/token/run-token"
CONVERGE_TOKEN = "MoleculeTok3n"  # molecule/vm_target/converge.yml
# Runs on the lab host: print the Echolab-Run-Token header of the guest's /healthz (or None).
TOKEN_HEADER = (
    "python3 -c 'import urllib.request as u; "
    f'print(u.urlopen("{URL}/healthz", timeout=10).headers["Echolab-Run-Token"])\''
)
# wsswarm on the lab host (swarm_client in converge.yml): a small, short run against the guest.
SWARM = (
    "/opt/echolab/venv/bin/wsswarm run --url ws://10.0.0.42:8080/ --processes 1 --connections 5 "
    "--connect-rate 50 --warmup 0.5 --duration 1 --out $(mktemp -d -u) --run-token "
)

# Runs on the lab host: GET a URL, print "<status> <body>".
FETCH = (
    "python3 -c 'import sys, urllib.request as u; r = u.urlopen(sys.argv[1], timeout=10); "
    "print(r.status, r.read().decode())' "
)
# Runs on the lab host: a WebSocket handshake and one masked text frame, print the echoed payload.
WS_ECHO = r"""python3 - <<'PY'
import base64, os, socket
s = socket.create_connection(("10.0.0.42", 8080), timeout=10)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET / HTTP/1.1\r\nHost: 10.0.0.42:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
assert head.startswith(b"HTTP/1.1 101"), head
payload, mask = b"echolab-vm", os.urandom(4)
masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
frame = s.recv(2 + len(payload))
print(frame[2:].decode())
PY"""


def test_libvirt_is_available(host: Host) -> None:
    """libvirtd is socket-activated: its socket is listening and enabled."""
    socket = host.service("libvirtd.socket")
    assert socket.is_running
    assert socket.is_enabled


def test_domain_runs_and_autostarts(host: Host) -> None:
    """The domain is running, marked autostart, with 512 MiB and one vCPU on bridge43."""
    assert host.check_output(f"virsh domstate {NAME}") == "running"
    info = host.check_output(f"virsh dominfo {NAME}")
    assert "Autostart:      enable" in info
    assert "Max memory:     524288 KiB" in info
    assert "CPU(s):         1" in info
    assert "bridge43" in host.check_output(f"virsh domiflist {NAME}")


def test_pinning_in_force(host: Host) -> None:
    """vm_target_cpus [1]: libvirt reads back vCPU 0 and the emulator on CPU 1, and the kernel
    holds every thread of the domain's QEMU to CPU 1 (the other CPU stays free)."""
    vcpupin = host.check_output(f"virsh vcpupin {NAME}").splitlines()
    pins = [line.split() for line in vcpupin if line.strip()[:1].isdigit()]
    assert pins == [["0", "1"]], vcpupin
    emulator = host.check_output(f"virsh emulatorpin {NAME}")
    assert emulator.split()[-2:] == ["*:", "1"], emulator
    pid = host.file(f"/run/libvirt/qemu/{NAME}.pid").content_string.strip()
    allowed = host.check_output(
        f"grep -h '^Cpus_allowed_list:' /proc/{pid}/task/*/status | sort | uniq -c"
    )
    assert [line.split()[-1] for line in allowed.splitlines()] == ["1"], allowed
    state = json.loads(host.file("/var/lib/echolab/vm_target.json").content_string)
    assert state["cpus"] == [1]
    assert state["vcpus"] == state["workers"] == 1


def test_vhost_requested_only_where_the_host_has_it(host: Host) -> None:
    """The lab has no /dev/vhost-net: no vhost driver is asked for, and that is recorded."""
    has_vhost = host.run("test -c /dev/vhost-net").rc == 0
    assert not has_vhost  # the lab machine (shared/reference/lab-environment.md)
    state = json.loads(host.file("/var/lib/echolab/vm_target.json").content_string)
    assert state["vhost_net"] is False
    rendered = host.file(f"/var/lib/echolab/vm/{NAME}.xml").content_string
    assert "<driver name='vhost'/>" not in rendered
    assert "<model type='virtio'/>" in rendered


def test_accelerator_is_probed_and_recorded(host: Host) -> None:
    """auto did not trust /dev/kvm: the probe failed, TCG was used and recorded for the manifest."""
    assert host.run("test -c /dev/kvm").rc == 0  # the device is passed in by molecule.yml
    state = json.loads(host.file("/var/lib/echolab/vm_target.json").content_string)
    assert state["format_version"] == 1
    assert state["accelerator_requested"] == "auto"
    assert state["accelerator"] == "tcg"
    assert "KVM" in state["accelerator_reason"]
    assert state["url"] == URL
    assert "<domain type='qemu'" in host.check_output(f"virsh dumpxml {NAME}")


def test_kvm_probe_rejects_the_hanging_kvm(host: Host) -> None:
    """vm/kvm-probe.sh run by hand (no cache) says KVM does not work here, with a reason."""
    verdict = json.loads(host.check_output(f"{RECIPE}/kvm-probe.sh --timeout 10 {IMAGE}/vmlinuz"))
    assert verdict["kvm"] is False
    assert verdict["cached"] is False
    assert verdict["reason"]


def test_healthz_answers_from_the_lab_host(host: Host) -> None:
    """The guest's wsecho answers /healthz over the bridge."""
    assert host.check_output(FETCH + URL + "/healthz") == "200 ok"


def test_metrics_show_wsecho(host: Host) -> None:
    """/metrics is wsecho's own Prometheus text: the service, not just any HTTP server, is up."""
    metrics = host.check_output(FETCH + URL + "/metrics")
    assert metrics.startswith("200 ")
    assert "wsecho_connections_current" in metrics
    assert "wsecho_process_resident_memory_bytes" in metrics
    assert "wsecho_workers 1" in metrics.splitlines()  # one worker per vCPU
    # The guest's wheel carries the engine compiled for the guest's Python.
    assert 'wsecho_hot_path_info{hot_path="compiled"} 1' in metrics.splitlines()


def test_websocket_echo(host: Host) -> None:
    """A WebSocket text message sent from the lab host comes back unchanged."""
    assert host.check_output(WS_ECHO) == "echolab-vm"


def test_image_has_the_service_unit_with_raised_limit(host: Host) -> None:
    """The disk holds wsecho.service, enabled, with LimitNOFILE=100000, and the static address."""
    raw = "/tmp/echolab-vm-verify.raw"
    # -U: the running guest holds the image's write lock; the files read here do not change.
    host.check_output(f"qemu-img convert -U -O raw {IMAGE}/disk.qcow2 {raw}")
    try:
        unit = host.check_output(
            f"debugfs -R 'cat /etc/systemd/system/wsecho.service' {raw} 2>/dev/null"
        )
        enabled = host.run(
            f"debugfs -R 'stat /etc/systemd/system/multi-user.target.wants/wsecho.service' {raw}"
        )
        interfaces = host.check_output(
            f"debugfs -R 'cat /etc/network/interfaces' {raw} 2>/dev/null"
        )
    finally:
        host.run(f"rm -f {raw}")
    assert "LimitNOFILE=100000" in unit
    assert "Environment=WSECHO_MAX_CONNECTIONS=50000" in unit
    assert "Environment=WSECHO_WORKERS=1" in unit
    assert "ExecStart=/opt/echolab/venv/bin/wsecho --host 0.0.0.0 --port 8080" in unit
    assert "Type: symlink" in enabled.stdout
    assert "address 10.0.0.42/24" in interfaces
    assert "gateway 10.0.0.1" in interfaces


def test_service_runs_with_the_connection_limit(host: Host) -> None:
    """The guest's wsecho took --max-connections from its unit: its start line on the console."""
    console = host.file(f"/var/log/libvirt/qemu/{NAME}-console.log").content_string
    assert "max_connections=50000" in console


def test_build_script_rejects_bad_input(host: Host) -> None:
    """build-image.sh names a bad option value instead of building something wrong."""
    bad = host.run(
        f"{RECIPE}/build-image.sh --wheelhouse {WHEELS} --out /tmp/x --address 10.0.0.300/24"
    )
    assert bad.rc == 2
    assert "--address must be IPv4/prefix" in bad.stderr


def test_image_is_up_to_date(host: Host) -> None:
    """Run again with the role's inputs, the recipe reports nothing to rebuild."""
    check = host.run(
        f"{RECIPE}/build-image.sh --check --wheelhouse {WHEELS} --out {IMAGE} "
        "--address 10.0.0.42/24 --gateway 10.0.0.1 --port 8080 --nofile 100000 "
        "--max-connections 50000 --workers 1 --size 1G "
        "--suite bookworm --cache /var/cache/echolab/vm-debs"
    )
    assert check.rc == 0, check.stderr
    assert check.stdout.strip() == "unchanged"


def _connections_total(host: Host) -> int:
    metrics = host.check_output(FETCH + URL + "/metrics")
    found = re.search(r"^wsecho_connections_total (\d+)", metrics, re.MULTILINE)
    assert found, metrics
    return int(found.group(1))


def test_healthz_carries_the_run_token(host: Host) -> None:
    """The guest answers /healthz with the host's run token, copied in at deployment."""
    assert host.file(TOKEN_FILE).content_string.strip() == CONVERGE_TOKEN
    assert host.check_output(TOKEN_HEADER) == CONVERGE_TOKEN


def test_wrong_token_sends_no_load(host: Host) -> None:
    """wsswarm with another run's token: exit 4, naming the guest's token; not one connection."""
    before = _connections_total(host)
    result = host.run(SWARM + "SomeOtherRun")
    assert result.rc == 4, result.stderr
    assert "not this run's target" in result.stderr
    assert f"carries run token '{CONVERGE_TOKEN}', not 'SomeOtherRun'" in result.stderr
    assert _connections_total(host) == before


def test_a_new_run_token_reaches_the_guest_without_a_reboot(host: Host) -> None:
    """A new run's token (as experiment_targets' run_token writes it) is copied in once
    (changed, then unchanged), the guest answers with it, the old token is refused and the new
    one loads the guest. The guest did not restart for it."""
    started = host.check_output(f"virsh domid {NAME}")
    push = f"{RECIPE}/run-token.py --domain {NAME} --token-file {TOKEN_FILE}"
    try:
        host.check_output(f"printf 'NewRun0f2026\\n' > {TOKEN_FILE}")
        assert host.check_output(push + " --check") == "changed"
        assert host.check_output(push) == "changed"
        assert host.check_output(push) == "unchanged"
        assert host.check_output(TOKEN_HEADER) == "NewRun0f2026"
        old = host.run(SWARM + CONVERGE_TOKEN)
        assert old.rc == 4, old.stderr
        before = _connections_total(host)
        new = host.run(SWARM + "NewRun0f2026")
        assert new.rc == 0, new.stderr
        assert _connections_total(host) > before
    finally:
        host.run(f"printf '{CONVERGE_TOKEN}\\n' > {TOKEN_FILE} && {push}")
    assert host.check_output(f"virsh domid {NAME}") == started
