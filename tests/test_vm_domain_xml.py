"""vm_target's domain template rendered as the role renders it: pinning and vhost in the XML
libvirt gets. The lab has no /dev/vhost-net, so the molecule scenario sees only the fallback;
the vhost branch is checked here."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jinja2

TEMPLATE = Path(__file__).resolve().parents[1] / "roles" / "vm_target" / "templates"


def render(cpus: list[int], vhost: bool, vcpus: int = 1) -> ET.Element:
    values: dict[str, Any] = {
        "ansible_managed": "managed",
        "vm_target_kernel": "",
        "vm_target_name": "echolab-vm",
        "vm_target_memory_mib": 512,
        "vm_target_cpus": cpus,
        "vm_target_vhost_net": vhost,
        "vm_target_mac": "52:54:00:ec:00:42",
        "vm_target_bridge": "bridge43",
        "vm_target_console_log": "/var/log/console.log",
        "__vm_target_vcpu_count": len(cpus) or vcpus,
        "__vm_target_domain_type": "kvm",
        "__vm_target_kernel_path": "/img/vmlinuz",
        "__vm_target_initrd_path": "/img/initrd.img",
        "__vm_target_cmdline": "root=/dev/vda",
        "__vm_target_image_dir": "/img",
    }
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE), undefined=jinja2.StrictUndefined
    )
    return ET.fromstring(env.get_template("domain.xml.j2").render(values))


def test_pinned_vm_gets_one_vcpu_per_cpu_and_its_emulator_on_them() -> None:
    domain = render([2, 3], vhost=True)
    vcpu = domain.find("vcpu")
    assert vcpu is not None
    assert (vcpu.text, vcpu.get("cpuset")) == ("2", "2,3")
    pins = [(p.get("vcpu"), p.get("cpuset")) for p in domain.iterfind("cputune/vcpupin")]
    assert pins == [("0", "2"), ("1", "3")]
    emulator = domain.find("cputune/emulatorpin")
    assert emulator is not None
    assert emulator.get("cpuset") == "2,3"


def test_virtio_net_asks_for_vhost_only_when_the_host_has_it() -> None:
    with_vhost = render([], vhost=True).find("devices/interface/driver")
    assert with_vhost is not None
    assert with_vhost.get("name") == "vhost"
    assert render([], vhost=False).find("devices/interface/driver") is None


def test_unpinned_vm_has_no_cputune() -> None:
    domain = render([], vhost=False, vcpus=2)
    vcpu = domain.find("vcpu")
    assert vcpu is not None
    assert (vcpu.text, vcpu.get("cpuset")) == ("2", None)
    assert domain.find("cputune") is None
