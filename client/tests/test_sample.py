"""`wsswarm sample` against real processes, a real Docker container and a real qemu process."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from wsswarm import cli, sample

BUSY = "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end: pass\n"
# A busy loop that also holds ~40 MB, so that memory is visibly more than an idle interpreter.
BUSY_BIG = "import time\nb = bytearray(40 << 20)\nb[::4096] = b'x' * len(b[::4096])\n" + BUSY
# The sampler's command line, in a process of its own as the playbooks run it.
SAMPLE_CMD = [sys.executable, "-m", "wsswarm", "sample"]
# Four samples in two seconds.
FAST = ["--interval", "0.5", "--duration", "2"]
DOCKER_RUN = ["docker", "run", "-d", "--rm", "-p", "127.0.0.1:0:8080", "--name"]
# `-machine none -S`: a real qemu that idles (no guest to boot); -pidfile last.
QEMU_IDLE = ["-machine", "none", "-S", "-display", "none", "-monitor", "none", "-serial", "none"]
QEMU_IDLE += ["-nodefaults", "-pidfile"]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def assert_cpu_accounted(cpu: list[float], samples: list[Any], consumed_s: float) -> None:
    """The CPU% of the samples adds up to CPU time really consumed (no timing assumptions)."""
    accounted_s = sum(c * r["interval_s"] for c, r in zip(cpu, samples, strict=True)) / 100
    # The samples cover most of the time between the two counter reads (not the start-up).
    assert 0.01 < accounted_s <= consumed_s + 0.02
    assert accounted_s > 0.3 * consumed_s
    assert min(cpu) > 1.0  # the busy loop ran in every interval


@pytest.fixture
def busy() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", BUSY_BIG])
    yield proc
    proc.kill()
    proc.wait()


def run_in_process(source: sample.Source, duration: float, interval: float = 0.25) -> list[Any]:
    out = io.StringIO()
    stop = sample.run_sampler(
        source,
        out,
        target="t1",
        interval=interval,
        duration=duration,
        wait=time.sleep,
    )
    assert stop.reason in ("completed", "target_gone"), stop
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_pid_sees_cpu_and_memory_of_a_busy_process(
    tmp_path: Path, busy: subprocess.Popen[bytes]
) -> None:
    """A busy loop shows CPU well above idle and its ~40 MB of memory; the file is complete."""
    out = tmp_path / "s" / "sample.jsonl"
    # Let the child allocate its 40 MB first.
    wait_for(lambda: psutil.Process(busy.pid).memory_info().rss > 40 << 20)
    cpu_before = sum(psutil.Process(busy.pid).cpu_times()[:2])
    proc = subprocess.run(
        [*SAMPLE_CMD, "--pid", str(busy.pid), "--target", "busy", "--out", str(out), *FAST],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    cpu_after = sum(psutil.Process(busy.pid).cpu_times()[:2])
    assert proc.returncode == 0, proc.stderr
    records = read_jsonl(out)
    start, samples, end = records[0], records[1:-1], records[-1]
    assert start["type"] == "start"
    assert start["format_version"] == 1
    assert start["target"] == "busy"
    assert start["kind"] == "process"
    assert end == {**end, "type": "end", "reason": "completed", "samples": 4}
    assert len(samples) == 4
    for rec in samples:
        assert rec["type"] == "sample"
        (name,) = rec["components"]
        assert name == f"python3[{busy.pid}]" or name.endswith(f"[{busy.pid}]")
        assert rec["rss_bytes"] >= 40 << 20
        assert rec["cpu_percent"] == rec["components"][name]["cpu_percent"]
    # Shared 2-core machine: the loop gets at least a good share of a core over 2 s.
    assert_cpu_accounted([r["cpu_percent"] for r in samples], samples, cpu_after - cpu_before)


def test_sigterm_ends_the_file_cleanly(tmp_path: Path, busy: subprocess.Popen[bytes]) -> None:
    """SIGTERM stops the sampler at once with exit 0 and an end record after the samples."""
    out = tmp_path / "sample.jsonl"
    proc = subprocess.Popen(
        [*SAMPLE_CMD, "--pid", str(busy.pid), "--out", str(out), "--interval", "0.2"],
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 3)
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 5
    records = read_jsonl(out)
    assert records[-1]["type"] == "end"
    assert records[-1]["reason"] == "signal"
    assert "SIGTERM" in records[-1]["message"]
    assert records[-1]["samples"] == len(records) - 2
    assert {r["type"] for r in records[1:-1]} == {"sample"}


def test_sigint_ends_the_file_cleanly(tmp_path: Path, busy: subprocess.Popen[bytes]) -> None:
    """Ctrl-C (SIGINT) is a clean stop too, without a traceback."""
    out = tmp_path / "sample.jsonl"
    proc = subprocess.Popen(
        [*SAMPLE_CMD, "--pid", str(busy.pid), "--out", str(out), "--interval", "0.2"],
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "Traceback" not in err
    assert read_jsonl(out)[-1]["message"] == "stopped by SIGINT"


def test_exit_of_the_sampled_process_is_recorded(tmp_path: Path) -> None:
    """When the process exits, the file ends with reason target_gone and the exit code is 1."""
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.6)"])
    out = tmp_path / "sample.jsonl"
    proc = subprocess.run(
        [*SAMPLE_CMD, "--pid", str(victim.pid), "--out", str(out), "--interval", "0.2"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    victim.wait()
    assert proc.returncode == 1
    assert "exited" in proc.stderr
    end = read_jsonl(out)[-1]
    assert end["type"] == "end"
    assert end["reason"] == "target_gone"


def test_bad_arguments_fail_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown pid or process name, or a zero interval, fails at once and says why."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cases = [
        (["--pid", str(dead.pid)], f"no process with pid {dead.pid}"),
        (["--process-name", "echolab-no-such-proc"], "no process named 'echolab-no-such-proc'"),
        (["--pid", "1", "--interval", "0"], "--interval must be > 0"),
        (["--docker-container", "echolab-report-none"], "echolab-report-none"),
        (["--libvirt-domain", "echolab-report-none"], "is the domain running"),
    ]
    for argv, message in cases:
        # In process (through the real command line parser): five interpreters cost seconds.
        assert cli.main(["sample", *argv, "--out", str(tmp_path / "x.jsonl")]) == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)
        assert not (tmp_path / "x.jsonl").exists()


@pytest.fixture
def named_python(tmp_path: Path) -> Path:
    """A python3 under a unique name: the kernel names a process after the file it executes."""
    link = tmp_path / f"echolab-rp-{uuid.uuid4().hex[:6]}"
    link.symlink_to(os.path.realpath(sys.executable))
    return link


def test_process_name_sums_all_matching_processes_and_new_ones(named_python: Path) -> None:
    """Every process of the name is a component; one started later is picked up with its CPU."""
    procs = [subprocess.Popen([str(named_python), "-c", BUSY]) for _ in range(2)]
    try:
        wait_for(lambda: len(sample.find_processes_by_name(named_python.name)) == 2)
        source = sample.NameSource(named_python.name)
        sampler = sample.Sampler(source)
        time.sleep(0.3)
        first = sampler.sample()
        assert set(first["components"]) == {f"{named_python.name}[{p.pid}]" for p in procs}
        assert first["cpu_percent"] == pytest.approx(
            sum(c["cpu_percent"] for c in first["components"].values()), abs=0.02
        )
        assert first["rss_bytes"] == sum(c["rss_bytes"] for c in first["components"].values())
        procs.append(subprocess.Popen([str(named_python), "-c", BUSY]))
        wait_for(lambda: len(sample.find_processes_by_name(named_python.name)) == 3)
        time.sleep(0.3)
        second = sampler.sample()
        newcomer = second["components"][f"{named_python.name}[{procs[2].pid}]"]
        # Born inside the interval: all its CPU time is in this interval (no missing baseline).
        assert newcomer["cpu_percent"] is not None
        assert "errors" not in second
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_children_option_includes_descendants(busy: subprocess.Popen[bytes]) -> None:
    """--children adds the descendants of the pid (here: this test process's busy child)."""
    me = os.getpid()
    with_children = sample.Sampler(sample.PidSource(me, children=True)).sample()
    alone = sample.Sampler(sample.PidSource(me)).sample()
    assert any(name.endswith(f"[{busy.pid}]") for name in with_children["components"])
    assert list(alone["components"]) == [next(n for n in alone["components"] if str(me) in n)]


# ------------------------------------------------------------------------------------------
# Docker


@pytest.fixture
def container() -> Iterator[str]:
    name = f"echolab-report-sample-{uuid.uuid4().hex[:8]}"
    code = "b = bytearray(30 << 20)\nb[::4096] = b'x' * len(b[::4096])\n" + BUSY
    subprocess.run(
        [*DOCKER_RUN, name, "echolab/base:bookworm", "python3", "-c", code],
        check=True,
        capture_output=True,
        timeout=60,
    )
    yield name
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, check=False)


def test_docker_container_cgroup_and_its_docker_proxy(tmp_path: Path, container: str) -> None:
    """The container's cgroup CPU and memory are seen, and docker-proxy is a separate component."""
    info = sample.docker_inspect(container)
    # Give the container time to fill its 30 MB.
    cpu_dir, mem_dir, version = sample.cgroup_dirs_of_pid(info.pid, sample.cgroup_mounts())
    wait_for(lambda: sample.read_cgroup(cpu_dir, mem_dir, version).rss_bytes > 30 << 20)
    out = tmp_path / "sample.jsonl"
    cpu_before = sample.read_cgroup(cpu_dir, mem_dir, version).cpu_s
    proc = subprocess.run(
        [*SAMPLE_CMD, "--docker-container", container, "--out", str(out), *FAST],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    cpu_after = sample.read_cgroup(cpu_dir, mem_dir, version).cpu_s
    assert proc.returncode == 0, proc.stderr
    records = read_jsonl(out)
    assert records[0]["kind"] == "docker"
    assert records[0]["what"] == container
    samples = records[1:-1]
    assert len(samples) == 4
    cgroup = f"container:{container}"
    for rec in samples:
        names = set(rec["components"])
        assert cgroup in names
        proxies = [n for n in names if n.startswith("docker-proxy[")]
        assert len(proxies) >= 1, names
        assert rec["components"][cgroup]["rss_bytes"] > 30 << 20
        assert rec["components"][cgroup]["usage_bytes"] >= rec["components"][cgroup]["rss_bytes"]
        assert rec["rss_bytes"] == sum(c["rss_bytes"] for c in rec["components"].values())
    cpu = [r["components"][cgroup]["cpu_percent"] for r in samples]
    assert_cpu_accounted(cpu, samples, cpu_after - cpu_before)


def test_docker_proxy_is_matched_by_container_address(container: str) -> None:
    """The docker-proxy found is the one whose -container-ip is this container's address."""
    info = sample.docker_inspect(container)
    proxies = sample.find_docker_proxies(info.ips)
    assert proxies
    for proc in proxies:
        cmd = proc.cmdline()
        assert cmd[cmd.index("-container-ip") + 1] in info.ips
        assert cmd[cmd.index("-container-port") + 1] == "8080"
    assert sample.find_docker_proxies(["192.0.2.1"]) == []


def test_cgroup_found_by_container_id_too(container: str) -> None:
    """The fallback lookup by id finds the same cgroup as the one read from /proc/PID/cgroup."""
    info = sample.docker_inspect(container)
    assert sample.cgroup_dirs_by_id(info.id) == sample.cgroup_dirs_of_pid(
        info.pid, sample.cgroup_mounts()
    )


def test_cgroup_v2_files_are_read(tmp_path: Path) -> None:
    """cgroup v2 (not mounted on this machine): cpu.stat usage_usec, memory.current - inactive_file.

    The files are written in the kernel's format because this machine runs cgroup v1.
    """
    unified = tmp_path / "system.slice" / "docker-abc.scope"
    unified.mkdir(parents=True)
    (unified / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    (unified / "memory.current").write_text("104857600\n")
    (unified / "memory.stat").write_text("anon 73400320\nfile 31457280\ninactive_file 20971520\n")
    dirs = sample.cgroup_dirs_by_id("abc", base=str(tmp_path))
    assert dirs == (unified, unified, 2)
    reading = sample.read_cgroup(*dirs)
    assert reading.cpu_s == 2.5
    assert reading.rss_bytes == 104857600 - 20971520
    assert reading.extra == {"usage_bytes": 104857600}


def test_cgroup_mounts_parses_hybrid_and_unified(tmp_path: Path) -> None:
    """mountinfo: v1 controllers win on a hybrid host; a pure v2 host uses the unified tree."""
    hybrid = tmp_path / "hybrid"
    hybrid.write_text(
        "33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    )
    mounts = sample.cgroup_mounts(str(hybrid))
    assert mounts["cpuacct"].mountpoint == "/sys/fs/cgroup/cpu,cpuacct"
    assert mounts["memory"].mountpoint == "/sys/fs/cgroup/memory"
    v2 = tmp_path / "v2"
    v2.write_text("30 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")
    assert set(sample.cgroup_mounts(str(v2))) == {""}


# ------------------------------------------------------------------------------------------
# libvirt domains (a real qemu process, started the way libvirt names it)


@pytest.fixture
def qemu(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    qemu_bin = shutil.which("qemu-system-x86_64")
    assert qemu_bin, "qemu-system-x86_64 is needed (apt-get install qemu-system-x86)"
    domain = f"echolab-report-{uuid.uuid4().hex[:6]}"
    pid_file = tmp_path / "run" / f"{domain}.pid"
    pid_file.parent.mkdir()
    # Named the way libvirt names its qemu processes.
    proc = subprocess.Popen(
        [qemu_bin, "-name", f"guest={domain},debug-threads=on", *QEMU_IDLE, str(pid_file)]
    )
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() == str(proc.pid))
    yield domain, proc, pid_file.parent
    proc.kill()
    proc.wait()


def test_libvirt_domain_found_by_command_line(
    tmp_path: Path, qemu: tuple[str, subprocess.Popen[bytes], Path]
) -> None:
    """Without a pid file the qemu process is found by `-name guest=NAME` and sampled."""
    domain, proc, _ = qemu
    out = tmp_path / "sample.jsonl"
    no_pid_files = ["--libvirt-run-dir", str(tmp_path / "no-pid-files")]
    done = subprocess.run(
        [*SAMPLE_CMD, "--libvirt-domain", domain, "--out", str(out), *FAST, *no_pid_files],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    records = read_jsonl(out)
    assert records[0]["kind"] == "libvirt"
    assert records[0]["what"] == domain
    for rec in records[1:-1]:
        assert list(rec["components"]) == [f"qemu-system-x86_64[{proc.pid}]"]
        assert rec["rss_bytes"] > 1 << 20


def test_libvirt_pid_file_is_used_and_checked(
    qemu: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    """libvirt's pid file is used; a stale pid file (another process) falls back to the search."""
    domain, proc, run_dir = qemu
    assert sample.find_qemu_process(domain, str(run_dir)).pid == proc.pid
    (run_dir / f"{domain}.pid").write_text(f"{os.getpid()}\n")  # stale: not that qemu
    assert sample.find_qemu_process(domain, str(run_dir)).pid == proc.pid
    with pytest.raises(sample.SampleError, match="is the domain running"):
        sample.find_qemu_process(domain + "-other", str(run_dir))


@pytest.mark.parametrize(
    ("cmdline", "name"),
    [
        (["qemu", "-name", "guest=vm1,debug-threads=on"], "vm1"),
        (["qemu", "-name", "vm1"], "vm1"),
        (["qemu", "-name", "vm1,process=qemu:vm1"], "vm1"),
        (["qemu", "-name", "guest=a,,b,debug-threads=on"], "a,b"),
        (["qemu", "-m", "128"], None),
    ],
)
def test_qemu_guest_name(cmdline: list[str], name: str | None) -> None:
    """The guest name is read from the forms of `-name` that libvirt and users write."""
    assert sample.qemu_guest_name(cmdline) == name


def test_run_sampler_duration_and_records(busy: subprocess.Popen[bytes]) -> None:
    """In process: a 1 s duration at 0.25 s gives 4 samples on a fixed grid, then the end."""
    records = run_in_process(sample.PidSource(busy.pid), duration=1.0)
    assert [r["type"] for r in records] == ["start"] + ["sample"] * 4 + ["end"]
    times = [r["t"] for r in records[1:-1]]
    assert times == sorted(times)
    assert all(0.1 < r["interval_s"] < 1.0 for r in records[1:-1])


def test_unwritable_output_fails_clearly(tmp_path: Path, busy: subprocess.Popen[bytes]) -> None:
    """An --out that cannot be created is a one-line error, exit 2, not a traceback."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = subprocess.run(
        [*SAMPLE_CMD, "--pid", str(busy.pid), "--out", str(blocker / "sample.jsonl")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert f"cannot write {blocker / 'sample.jsonl'}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_kernel_tcp_memory_is_read_in_the_server_namespace(tmp_path: Path) -> None:
    """A wsecho in a private namespace: sockstat via its pid counts exactly its sockets, and
    the kernel's TCP memory grows by the data its connections hold."""
    count = 100
    holder = Path(__file__).parent / "netns_holder.py"
    inner = subprocess.Popen(
        ["unshare", "--net", sys.executable, str(holder), str(tmp_path), str(count)],
        start_new_session=True,
    )
    try:
        wait_for(lambda: (tmp_path / "pid").exists() or inner.poll() is not None, 30)
        assert inner.poll() is None, "netns_holder ended early (unshare refused?)"
        source = sample.PidSource(int((tmp_path / "pid").read_text()))
        before = source.read().kernel
        assert before is not None
        (tmp_path / "go").touch()
        wait_for(lambda: (tmp_path / "held").exists() or inner.poll() is not None, 60)
        time.sleep(0.5)  # the last echoes reach the client's receive buffers
        during = source.read().kernel
    finally:
        (tmp_path / "stop").touch()
        inner.wait(timeout=30)
    assert during is not None
    # Only wsecho's listener lives in that namespace before; then both ends of each connection.
    assert before.tcp_inuse == 1
    assert during.tcp_inuse == 1 + 2 * count
    # Each connection holds 1 MiB sent and never-read echoes; half of it is the floor, as other
    # processes of the machine may free TCP memory meanwhile (the figure is kernel-wide).
    assert during.tcp_mem_bytes > 0
    assert during.tcp_mem_bytes - before.tcp_mem_bytes >= count * 512 * 1024


def test_sample_records_carry_the_kernel_reading(busy: subprocess.Popen[bytes]) -> None:
    """Every sample of a process source has the sockstat of its namespace, pages as bytes."""
    records = run_in_process(sample.PidSource(busy.pid), duration=0.5)
    samples = [r for r in records if r["type"] == "sample"]
    assert len(samples) == 2
    for record in samples:
        kernel = record["kernel"]
        assert kernel["tcp_mem_bytes"] % os.sysconf("SC_PAGE_SIZE") == 0
        assert kernel["tcp_alloc"] >= kernel["tcp_inuse"] >= 0


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("sockets: used 3\nUDP: inuse 0 mem 0\n", "no TCP line"),
        ("TCP: inuse 1 orphan 0 tw 0 alloc 2\n", "without inuse/alloc/mem"),
        ("TCP: inuse x orphan 0 tw 0 alloc 2 mem 3\n", "without inuse/alloc/mem"),
    ],
)
def test_bad_sockstat_is_refused(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        sample.parse_sockstat(text)
    parsed = sample.parse_sockstat("TCP: inuse 1 orphan 0 tw 0 alloc 2 mem 3\n", page_size=4096)
    assert (parsed.tcp_inuse, parsed.tcp_alloc, parsed.tcp_mem_bytes) == (1, 2, 3 * 4096)
