#!/usr/bin/env python3
"""Give the echolab guest the run token: copy the host's token file into the guest through the
QEMU guest agent, where the guest's wsecho reads it at each /healthz (--run-token-file).

    vm/run-token.py --domain NAME --token-file FILE [--connect URI] [--timeout S] [--check]

The guest's copy is read first and written only when it differs. The last line on stdout is
"changed" or "unchanged" (configuration tools read it); with --check nothing is written. Exit 2
on bad input (no token in FILE), 1 when the guest agent does not answer within --timeout seconds.
Needs virsh and a domain with the org.qemu.guest_agent.0 channel (vm_target's domain.xml.j2).
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import sys
import time
from typing import Any

# Where the guest's wsecho unit reads the token (vm/files/wsecho.service, vm/files/echolab.conf).
GUEST_PATH = "/run/echolab/run-token"
# As wsecho's --run-token accepts it.
TOKEN_RE = re.compile(r"[A-Za-z0-9._~+/=-]{1,128}")


class AgentError(RuntimeError):
    """The guest agent answered with an error, or not at all."""


def fail(message: str, status: int) -> int:
    """Print one error line; return the exit status."""
    print(f"run-token: {message}", file=sys.stderr)
    return status


def agent(connect: str, domain: str, command: str, **arguments: Any) -> Any:
    """One guest agent command; its "return" value."""
    request = json.dumps({"execute": command, "arguments": arguments})
    try:
        done = subprocess.run(
            ["virsh", "--connect", connect, "qemu-agent-command", domain, request],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        raise AgentError("virsh is not installed") from None
    if done.returncode != 0:
        raise AgentError(f"{command}: {done.stderr.strip() or done.stdout.strip()}")
    return json.loads(done.stdout)["return"]


def read_guest(connect: str, domain: str) -> str | None:
    """The token the guest holds now, or None when it has no file yet."""
    try:
        handle = agent(connect, domain, "guest-file-open", path=GUEST_PATH, mode="r")
    except AgentError as exc:
        if "No such file" in str(exc):
            return None
        raise
    try:
        data = agent(connect, domain, "guest-file-read", handle=handle, count=512)
    finally:
        agent(connect, domain, "guest-file-close", handle=handle)
    # An empty file (as the guest makes it at boot) comes without "buf-b64".
    return base64.b64decode(data.get("buf-b64", "")).decode("ascii", "replace").strip()


def write_guest(connect: str, domain: str, token: str) -> None:
    """Write the token into the guest's file."""
    handle = agent(connect, domain, "guest-file-open", path=GUEST_PATH, mode="w")
    try:
        payload = base64.b64encode(f"{token}\n".encode()).decode()
        agent(connect, domain, "guest-file-write", handle=handle, **{"buf-b64": payload})
    finally:
        agent(connect, domain, "guest-file-close", handle=handle)


def main(argv: list[str] | None = None) -> int:
    """Copy the token in when it differs; print changed or unchanged."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", required=True, help="libvirt domain of the guest")
    parser.add_argument("--token-file", required=True, help="the host's run token file")
    parser.add_argument("--connect", default="qemu:///system", help="libvirt URI")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for the agent")
    parser.add_argument("--check", action="store_true", help="only say whether a write is due")
    args = parser.parse_args(argv)

    try:
        with open(args.token_file, encoding="ascii", errors="replace") as file:
            token = file.read(256).strip()
    except OSError as exc:
        return fail(f"cannot read {args.token_file}: {exc.strerror}", 2)
    if not TOKEN_RE.fullmatch(token):
        return fail(f"{args.token_file} holds no valid run token", 2)

    # Right after a boot the agent may not answer yet.
    deadline = time.monotonic() + args.timeout
    while True:
        try:
            current = read_guest(args.connect, args.domain)
            break
        except AgentError as exc:
            if time.monotonic() >= deadline:
                return fail(f"the guest agent of {args.domain} did not answer: {exc}", 1)
            time.sleep(2)
    if current == token:
        print("unchanged")
        return 0
    if not args.check:
        try:
            write_guest(args.connect, args.domain, token)
            taken = read_guest(args.connect, args.domain) == token
        except AgentError as exc:
            return fail(f"writing {GUEST_PATH} in {args.domain} failed: {exc}", 1)
        if not taken:
            return fail(f"{GUEST_PATH} in {args.domain} did not take the token", 1)
    print("changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
