"""Verify both container targets on the lab host: running, hardened, answering, echoing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from testinfra.host import Host

# name, app, port (the role's defaults: wsecho 8080, the node.js baseline 8081). converge.yml runs
# wsecho with the port published through docker-proxy (`-p`, as in 2017) and the baseline with
# `container_target_network_mode: host`.
TARGETS = [("echolab-wsecho", "wsecho", 8080), ("echolab-nodejs-ws", "nodejs_ws", 8081)]
NETWORK_MODE = {"wsecho": "bridge", "nodejs_ws": "host"}
# converge.yml pins wsecho to CPU 1 with two workers; the baseline keeps the quota of one CPU.
CPUSET = {"wsecho": "1", "nodejs_ws": ""}
IDS = [t[1] for t in TARGETS]
# converge.yml gives wsecho a memory limit and --max-connections (as site.yml does from the plan);
# the baseline keeps the role's defaults (no memory limit).
MEMORY_MIB = {"wsecho": 640, "nodejs_ws": 0}
# Docker health check interval in seconds: wsecho keeps the role's default (none); converge.yml
# gives the baseline one, so that both settings are converged and verified.
HEALTH_INTERVAL_S = {"wsecho": 0, "nodejs_ws": 10}

# A minimal WebSocket client (RFC 6455: handshake, one masked text frame, read the echo), run by the
# lab host's python3 so that the traffic stays inside the lab container's network namespace.
WS_CLIENT = r"""
import base64, os, socket, struct, sys
port, text = int(sys.argv[1]), sys.argv[2].encode()
s = socket.create_connection(("127.0.0.1", port), timeout=5)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (port, key)).encode())
head = b""
while b"\r\n\r\n" not in head:
    chunk = s.recv(4096)
    if not chunk:
        sys.exit("connection closed during the handshake: %r" % head)
    head += chunk
head, rest = head.split(b"\r\n\r\n", 1)
if not head.startswith(b"HTTP/1.1 101"):
    sys.exit("handshake refused: %r" % head)
mask = os.urandom(4)
assert len(text) < 126  # the minimal length encoding: 7 bits
s.sendall(struct.pack("!BB", 0x81, 0x80 | len(text)) + mask
          + bytes(b ^ mask[i % 4] for i, b in enumerate(text)))
buf = rest
def need(n):
    global buf
    while len(buf) < n:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("connection closed before the echo")
        buf += chunk
need(2)
opcode, length = buf[0] & 0x0F, buf[1] & 0x7F
off = 2
if length == 126:
    need(4)
    length, off = struct.unpack("!H", buf[2:4])[0], 4
need(off + length)
print("opcode=%d" % opcode)
print(buf[off:off + length].decode())
"""


def inspect(host: Host, name: str) -> dict[str, Any]:
    """`docker inspect` of a container on the lab host."""
    out = host.check_output(f"docker inspect {name}")
    data: list[dict[str, Any]] = json.loads(out)
    return data[0]


def diagnostics(host: Host, name: str) -> str:
    """The container's log tail and health-check history, printed when a test fails."""
    logs = host.run(f"docker logs --tail 40 {name}")
    health = host.run(f"docker inspect --format '{{{{json .State.Health}}}}' {name}")
    return (
        f"\n--- docker logs {name} ---\n{logs.stdout}{logs.stderr}\n--- health ---\n{health.stdout}"
    )


def proc_status(host: Host, name: str) -> dict[str, str]:
    """/proc/<pid>/status of the container's main process, read from the lab host."""
    pid = inspect(host, name)["State"]["Pid"]
    lines = host.file(f"/proc/{pid}/status").content_string.splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


@pytest.mark.parametrize(("name", "app", "port"), TARGETS, ids=IDS)
def test_container_health_check(host: Host, name: str, app: str, port: int) -> None:
    """The container runs. By default it has no Docker health check (nothing of the kit runs
    inside it); with an interval, Docker's check on /healthz runs at it and reports healthy."""
    info = inspect(host, name)
    assert info["State"]["Running"], diagnostics(host, name)
    healthcheck = info["Config"].get("Healthcheck") or {}
    if HEALTH_INTERVAL_S[app] == 0:
        assert healthcheck.get("Test") == ["NONE"], healthcheck
        assert "Health" not in info["State"], diagnostics(host, name)
    else:
        assert healthcheck.get("Interval") == HEALTH_INTERVAL_S[app] * 10**9, healthcheck
        assert info["State"]["Health"]["Status"] == "healthy", diagnostics(host, name)


@pytest.mark.parametrize(("name", "app", "port"), TARGETS, ids=IDS)
def test_runs_as_non_root_without_capabilities(host: Host, name: str, app: str, port: int) -> None:
    """The service process is uid/gid 10001 with no effective, permitted or bounding capability."""
    status = proc_status(host, name)
    assert status["Uid"].split() == ["10001"] * 4, diagnostics(host, name)
    assert status["Gid"].split() == ["10001"] * 4
    for cap in ("CapEff", "CapPrm", "CapBnd"):
        assert int(status[cap], 16) == 0, f"{cap}={status[cap]}"
    assert status["NoNewPrivs"] == "1"


@pytest.mark.parametrize(("name", "app", "port"), TARGETS, ids=IDS)
def test_hardening_settings(host: Host, name: str, app: str, port: int) -> None:
    """Read-only root filesystem, one CPU (a quota, or a cpuset and no quota), the raised file
    limit, a restart policy."""
    cfg = inspect(host, name)["HostConfig"]
    assert cfg["ReadonlyRootfs"] is True
    assert cfg["CpusetCpus"] == CPUSET[app]
    assert cfg["NanoCpus"] == (0 if CPUSET[app] else 1_000_000_000)
    assert cfg["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in cfg["SecurityOpt"]
    assert cfg["RestartPolicy"]["Name"] == "unless-stopped"
    assert {"Name": "nofile", "Soft": 16384, "Hard": 16384} in cfg["Ulimits"]
    assert cfg["Memory"] == MEMORY_MIB[app] * 1024 * 1024


def test_wsecho_runs_with_the_connection_limit_on_the_compiled_hot_path(host: Host) -> None:
    """wsecho got --max-connections from the role, and the image's wheel carries the engine
    compiled for the image's Python: its start line says both."""
    args = inspect(host, "echolab-wsecho")["Args"]
    assert "--max-connections" in args, args
    assert args[args.index("--max-connections") + 1] == "12345"
    logs = host.run("docker logs echolab-wsecho")
    assert "max_connections=12345" in logs.stdout + logs.stderr
    assert "hot_path=compiled" in logs.stdout + logs.stderr


@pytest.mark.parametrize(("name", "app", "port"), TARGETS, ids=IDS)
def test_limits_in_force(host: Host, name: str, app: str, port: int) -> None:
    """The kernel applies them: the process's nofile limit, the CFS quota of one CPU (none when
    pinned: then -1 in cgroup v1, "max" in v2), the memory limit."""
    info = inspect(host, name)
    pid = info["State"]["Pid"]
    limits = host.file(f"/proc/{pid}/limits").content_string
    line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    assert line.split()[3:5] == ["16384", "16384"], line
    # cgroup v1 (this machine; cpu mounted alone or as cpu,cpuacct) or v2: both express "one CPU"
    # as quota == period.
    cgroup = host.file(f"/proc/{pid}/cgroup").content_string
    path = cgroup.splitlines()[-1].split(":", 2)[2]
    quota = period = -1
    for base in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"):
        v1 = host.file(f"{base}{path}/cpu.cfs_quota_us")
        if v1.exists:
            quota = int(v1.content_string)
            period = int(host.file(f"{base}{path}/cpu.cfs_period_us").content_string)
            break
    else:
        quota_s, period_s = host.file(f"/sys/fs/cgroup{path}/cpu.max").content_string.split()
        quota, period = (-1 if quota_s == "max" else int(quota_s)), int(period_s)
    if CPUSET[app]:
        assert quota == -1, f"quota={quota} on a pinned container"
    else:
        assert quota == period, f"quota={quota} period={period}"
    if MEMORY_MIB[app]:
        v1 = host.file(f"/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
        memory = v1 if v1.exists else host.file(f"/sys/fs/cgroup{path}/memory.max")
        assert int(memory.content_string) == MEMORY_MIB[app] * 1024 * 1024


@pytest.mark.parametrize(("name", "app", "port"), TARGETS, ids=IDS)
def test_pinning_in_force(host: Host, name: str, app: str, port: int) -> None:
    """`docker inspect` reads the cpuset back, and the kernel holds every process of the
    container (wsecho's two workers included) to it; an unpinned container may use every CPU."""
    info = inspect(host, name)
    online = host.file("/sys/devices/system/cpu/online").content_string.strip()
    pids = host.check_output(f"docker top {name} -o pid").split()[1:]
    allowed = {
        pid: next(
            line.split(":", 1)[1].strip()
            for line in host.file(f"/proc/{pid}/status").content_string.splitlines()
            if line.startswith("Cpus_allowed_list:")
        )
        for pid in pids
    }
    assert info["HostConfig"]["CpusetCpus"] == CPUSET[app]
    assert set(allowed.values()) == {CPUSET[app] or online}, allowed
    if app == "wsecho":
        # The service and its two workers (--workers 2 from container_target_workers).
        assert "--workers" in info["Args"]
        assert info["Args"][info["Args"].index("--workers") + 1] == "2"
        metrics = host.check_output(
            'python3 -c "import urllib.request as u; '
            f"print(u.urlopen('http://127.0.0.1:{port}/metrics', timeout=5).read().decode())\""
        )
        assert "wsecho_workers 2" in metrics.splitlines()


@pytest.mark.parametrize(("name", "app", "port"), TARGETS, ids=IDS)
def test_root_filesystem_is_read_only(host: Host, name: str, app: str, port: int) -> None:
    """Writing outside /tmp fails inside the container; /tmp is a writable tmpfs."""
    denied = host.run(f"docker exec {name} sh -c 'echo x > /opt/probe'")
    assert denied.rc != 0
    assert "Read-only file system" in denied.stderr
    assert host.run(f"docker exec {name} sh -c 'echo x > /tmp/probe && rm /tmp/probe'").rc == 0


@pytest.mark.parametrize(("name", "app", "port"), TARGETS, ids=IDS)
def test_healthz_on_published_port(host: Host, name: str, app: str, port: int) -> None:
    """GET /healthz on the host port answers 200 "ok" (through docker-proxy, or host network)."""
    url = f"http://127.0.0.1:{port}/healthz"
    code = (
        f"import urllib.request as u; r = u.urlopen('{url}', timeout=5); "
        "print(r.status, r.read().decode())"
    )
    cmd = f'python3 -c "{code}"'
    out = host.run(cmd)
    assert out.rc == 0, out.stderr + diagnostics(host, name)
    assert out.stdout.split() == ["200", "ok"]


@pytest.mark.parametrize(("name", "app", "port"), TARGETS, ids=IDS)
def test_websocket_echo_round_trip(host: Host, name: str, app: str, port: int) -> None:
    """A text message sent over a WebSocket on the published port comes back as the same text."""
    text = '{"timestamp": 1508918400000}'
    out = host.run(f"python3 - {port} '{text}' <<'EOF'\n{WS_CLIENT}\nEOF")
    assert out.rc == 0, out.stderr + diagnostics(host, name)
    assert out.stdout.splitlines() == ["opcode=1", text]


@pytest.mark.parametrize(("name", "app", "port"), TARGETS, ids=IDS)
def test_manifest_facts_file(host: Host, name: str, app: str, port: int) -> None:
    """The facts file names the running image, its network mode, and whether docker-proxy carries
    the port: read from the running processes, so it must agree with `ps`."""
    facts = json.loads(host.file(f"/var/lib/echolab/container_{name}.json").content_string)
    info = inspect(host, name)
    assert facts["memory_mib"] == MEMORY_MIB[app]
    assert facts["image_id"] == info["Image"]
    assert facts["app"] == app
    assert facts["port"] == port
    assert facts["url"] == f"ws://127.0.0.1:{port}/"
    mode = NETWORK_MODE[app]
    assert facts["network_mode"] == info["HostConfig"]["NetworkMode"] == mode
    proxied = host.run(f"ps -C docker-proxy -o args= | grep -- '-host-port {port} '").rc == 0
    assert proxied is (mode == "bridge")
    assert facts["docker_proxy"] is proxied
    assert facts["cpuset"] == CPUSET[app]
    assert facts["cpus"] == (None if CPUSET[app] else 1.0)
    assert facts["workers"] == (2 if app == "wsecho" else 1)
