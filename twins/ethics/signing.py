"""SSH signatures on approvals: ``ssh-keygen -Y sign`` / ``-Y verify`` against an allowed-signers file.

The signed message is the approval's canonical JSON (run, evidence digest, config hash, reviewer,
role, decision, time). The principal checked in the allowed-signers file is the reviewer's name as
given to ``review approve --reviewer`` (one line per person: ``<name> <key type> <public key>``;
quote a name with spaces: ``"Ada Lovelace" ssh-ed25519 AAAA...``).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path


class SignatureError(RuntimeError):
    pass


def _ssh_keygen() -> str:
    exe = shutil.which("ssh-keygen")
    if exe is None:
        raise SignatureError("ssh-keygen not found: install OpenSSH (8.2 or newer) to sign or verify approvals")
    return exe


def sign(message: bytes, key: str | Path, namespace: str) -> str:
    """The armored SSH signature of ``message`` by the private ``key`` (a path)."""
    key = Path(key).expanduser()
    if not key.exists():
        raise SignatureError(f"--sign {key}: no such key file (give the private key, e.g. ~/.ssh/id_ed25519)")
    with tempfile.TemporaryDirectory() as d:
        msg = Path(d) / "approval.json"
        msg.write_bytes(message)
        r = subprocess.run([_ssh_keygen(), "-Y", "sign", "-f", str(key), "-n", namespace, str(msg)],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        sig = msg.with_name(msg.name + ".sig")
        if r.returncode != 0 or not sig.exists():
            raise SignatureError(f"ssh-keygen could not sign with {key}: {r.stderr.strip() or r.stdout.strip()}")
        return sig.read_text()


def verify(message: bytes, signature: str, principal: str, allowed_signers: str | Path | None,
           namespace: str) -> tuple[bool, str]:
    """``(ok, why)``: is ``signature`` over ``message`` made by a key listed for ``principal``?"""
    if not allowed_signers:
        return False, "no allowed-signers file configured (ethics.signing.allowed_signers)"
    allowed = Path(allowed_signers).expanduser()
    if not allowed.exists():
        return False, f"allowed-signers file {allowed} does not exist (ethics.signing.allowed_signers)"
    with tempfile.TemporaryDirectory() as d:
        sig = Path(d) / "approval.sig"
        sig.write_text(signature)
        r = subprocess.run([_ssh_keygen(), "-Y", "verify", "-f", str(allowed), "-I", principal, "-n", namespace,
                            "-s", str(sig)], input=message, capture_output=True, timeout=60)
    out = (r.stdout + r.stderr).decode(errors="replace").strip()
    if r.returncode == 0:
        return True, out
    return False, (f"signature not accepted for principal {principal!r} by {allowed}: "
                   f"{out or 'ssh-keygen -Y verify failed'}")
