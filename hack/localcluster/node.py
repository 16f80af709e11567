"""One real node for the local cluster: containerd + runc, the kubelet and kube-proxy.

The kubelet and kube-proxy come from the same binary as the control plane (`hack/controlplane`);
containerd, runc and the CNI plugins are Debian's. Everything the node makes lives under its
work directory (containerd's root and state, the kubelet's root, pod logs, the pods' network
namespaces) or is named after it (the cgroup root, the bridge), so that `cleanup()` can remove
exactly what the node made: processes, mounts, network namespaces, cgroups, the bridge, the
nftables table of kube-proxy, and the machine-wide sysctls the kubelet changes are restored.

`cleanup()` runs from a reaper process that waits for its starter to go away, however it goes
(normal stop, Ctrl-C, SIGKILL): see `start_reaper()`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

NODE_NAME = "headroom-node"
CGROUP_ROOT = "headroom-node"
BRIDGE = "hr-node0"
POD_SUBNET = "10.244.0.0/24"
POD_GATEWAY = "10.244.0.1"
CLUSTER_CIDR = "10.244.0.0/16"
CNI_NETWORK = "headroom-node"
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
CGROUP_FS = Path("/sys/fs/cgroup")
# The kubelet sets these for the whole machine (protectKernelDefaults: false); put back on cleanup.
KUBELET_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
# Places outside the work directory that the kubelet, containerd or CNI create for themselves
# (hard-coded there); removed on cleanup when the node created them, emptied of ours otherwise.
HOST_DIRS = ("/var/lib/kubelet", "/var/lib/cni", "/run/containerd", "/var/log/containers")
CNI_CACHE = Path("/var/lib/cni/results")
# The bridge, cgroup root and nftables tables have fixed names: one node per machine at a time. The
# reaper holds this lock from before the node starts until after its cleanup.
LOCK = Path("/run/headroom-node.lock")
NEEDED_TOOLS = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "nft": "nftables",
}


class NodeError(RuntimeError):
    pass


def missing_tools() -> list[str]:
    """Debian packages the node needs that are not installed."""
    missing = {pkg for tool, pkg in NEEDED_TOOLS.items() if shutil.which(tool) is None}
    if not any(Path(d, "bridge").exists() for d in CNI_BIN_DIRS):
        missing.add("containernetworking-plugins")
    return sorted(missing)


def cni_bin_dir() -> str:
    return next((d for d in CNI_BIN_DIRS if Path(d, "bridge").exists()), CNI_BIN_DIRS[0])


def node_ip() -> str:
    """The machine's primary address (the node IP cannot be loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("192.0.2.254", 9))  # no packet is sent: this only picks the outgoing address
        return str(sock.getsockname()[0])


@dataclass(frozen=True)
class NodePaths:
    workdir: Path

    @property
    def containerd_dir(self) -> Path:
        return self.workdir / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def kubelet_dir(self) -> Path:
        return self.workdir / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.workdir / "pod-logs"

    @property
    def cni_conf_dir(self) -> Path:
        return self.workdir / "cni" / "net.d"

    @property
    def pids(self) -> Path:
        return self.workdir / "pids"

    @property
    def saved_sysctls(self) -> Path:
        return self.workdir / "sysctls.json"

    @property
    def owner_mark(self) -> Path:
        return self.workdir / "reaper-holds-lock"

    @property
    def created_dirs(self) -> Path:
        return self.workdir / "created-dirs.json"

    @property
    def sandboxes(self) -> Path:
        return self.containerd_dir / "root" / "io.containerd.grpc.v1.cri" / "sandboxes"


# --------------------------------------------------------------------------------------------- configs


def write_configs(
    paths: NodePaths,
    *,
    ca_cert: Path,
    kubelet_kubeconfig: Path,
    proxy_kubeconfig: Path,
    kubelet_port: int,
    proxy_metrics_port: int,
    proxy_healthz_port: int,
) -> dict[str, Path]:
    """containerd, CNI, kubelet and kube-proxy configuration files; returns their paths."""
    w = paths.workdir
    for d in (
        paths.containerd_dir,
        paths.kubelet_dir,
        paths.pod_logs,
        paths.cni_conf_dir,
        w / "cni" / "ipam",
        w / "volume-plugins",
    ):
        d.mkdir(parents=True, exist_ok=True)
    cd = paths.containerd_dir
    containerd = cd / "config.toml"
    containerd.write_text(f"""version = 2
root = "{cd / "root"}"
state = "{cd / "state"}"
[grpc]
  address = "{paths.containerd_socket}"
[ttrpc]
  address = ""
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{cd / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  # Root here has no CAP_SYS_RESOURCE: sandboxes may only raise their oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin_dir()}"
    conf_dir = "{paths.cni_conf_dir}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{cd / "runc"}"
""")
    # isGateway stays false: it would turn on IP forwarding for the whole machine. The bridge gets the
    # gateway address from us, so host <-> pod traffic is local delivery, never forwarded.
    (paths.cni_conf_dir / "10-headroom.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "0.4.0",
                "name": CNI_NETWORK,
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": BRIDGE,
                        "isGateway": False,
                        "ipMasq": False,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "dataDir": str(w / "cni" / "ipam"),
                            "ranges": [[{"subnet": POD_SUBNET, "gateway": POD_GATEWAY}]],
                            "routes": [{"dst": "0.0.0.0/0", "gw": POD_GATEWAY}],
                        },
                    }
                ],
            },
            indent=2,
        )
    )
    kubelet = paths.kubelet_dir / "config.json"
    kubelet.write_text(
        json.dumps(
            {
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "address": node_ip(),
                "port": kubelet_port,
                "readOnlyPort": 0,
                "healthzPort": 0,
                "authentication": {
                    "anonymous": {"enabled": False},
                    "webhook": {"enabled": False},
                    "x509": {"clientCAFile": str(ca_cert)},
                },
                # Only holders of a certificate from the cluster's CA get past authentication.
                "authorization": {"mode": "AlwaysAllow"},
                "cgroupDriver": "cgroupfs",
                "cgroupRoot": f"/{CGROUP_ROOT}",
                "cgroupsPerQOS": True,
                "enforceNodeAllocatable": ["pods"],
                "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
                "failSwapOn": False,
                "failCgroupV1": False,
                "protectKernelDefaults": False,
                "makeIPTablesUtilChains": False,
                # The pause image cannot be pulled back: image GC must never delete it.
                "imageGCHighThresholdPercent": 100,
                "imageGCLowThresholdPercent": 99,
                "evictionHard": {
                    "memory.available": "100Mi",
                    "nodefs.available": "1%",
                    "imagefs.available": "1%",
                    "nodefs.inodesFree": "1%",
                },
                "podLogsDir": str(paths.pod_logs),
                "volumePluginDir": str(w / "volume-plugins"),
                "resolvConf": "/etc/resolv.conf",
                "maxPods": 60,
                "nodeStatusUpdateFrequency": "5s",
                "syncFrequency": "10s",
                "shutdownGracePeriod": "0s",
                "serializeImagePulls": False,
            },
            indent=2,
        )
    )
    proxy = w / "kube-proxy.json"
    proxy.write_text(
        json.dumps(
            {
                "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                "kind": "KubeProxyConfiguration",
                "mode": "nftables",
                "clientConnection": {"kubeconfig": str(proxy_kubeconfig)},
                "hostnameOverride": NODE_NAME,
                "clusterCIDR": CLUSTER_CIDR,
                "bindAddress": "0.0.0.0",
                "healthzBindAddress": f"127.0.0.1:{proxy_healthz_port}",
                "metricsBindAddress": f"127.0.0.1:{proxy_metrics_port}",
                # Leave the machine's conntrack settings alone.
                "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
                "nodePortAddresses": ["primary"],
            },
            indent=2,
        )
    )
    return {"containerd": containerd, "kubelet": kubelet, "proxy": proxy}


# --------------------------------------------------------------------------------------------- set-up


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def prepare_host(paths: NodePaths) -> None:
    """The cgroup root and the bridge, and the sysctls to put back on cleanup (the lock is held)."""
    # Left by a node whose cleanup could not run (the machine rebooted mid-way, say): nobody else
    # can own them while we hold the lock.
    _remove_shared()
    saved = {}
    for key in KUBELET_SYSCTLS:
        with contextlib.suppress(OSError):
            saved[key] = Path("/proc/sys", key).read_text().strip()
    paths.saved_sysctls.write_text(json.dumps(saved))
    paths.created_dirs.write_text(json.dumps([d for d in HOST_DIRS if not Path(d).exists()]))
    for controller in _cgroup_controllers():
        (controller / CGROUP_ROOT).mkdir(exist_ok=True)
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{POD_GATEWAY}/24", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")


def _cgroup_controllers() -> list[Path]:
    """cgroup v1 hierarchies (one per mounted controller), or the unified hierarchy."""
    if (CGROUP_FS / "cgroup.controllers").exists():
        return [CGROUP_FS]
    return [
        p for p in sorted(CGROUP_FS.iterdir()) if p.is_dir() and not p.is_symlink() and (p / "cgroup.procs").exists()
    ]


def record_pid(paths: NodePaths, name: str, pid: int) -> None:
    paths.pids.mkdir(parents=True, exist_ok=True)
    (paths.pids / name).write_text(str(pid))


# --------------------------------------------------------------------------------------------- cleanup


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve()) + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mountpoint = line.split()[4].replace("\\040", " ")
        if mountpoint.startswith(prefix) or mountpoint == prefix[:-1]:
            found.append(mountpoint)
    return found


def _cgroup_dirs() -> Iterator[Path]:
    """Every cgroup under the node's cgroup root, deepest first."""
    for controller in _cgroup_controllers():
        root = controller / CGROUP_ROOT
        if root.is_dir():
            yield from sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
            yield root


def _pids_in_cgroups() -> set[int]:
    pids: set[int] = set()
    for cgroup in _cgroup_dirs():
        with contextlib.suppress(OSError):
            pids.update(int(x) for x in (cgroup / "cgroup.procs").read_text().split())
    return pids


def _processes_mentioning(text: str) -> list[int]:
    """Processes whose command line contains `text` (our shims name our containerd socket)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(proc.name))
    return found


def _kill(pids: set[int] | list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(pids: set[int] | list[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            try:
                os.kill(pid, 0)
                # A zombie of ours counts as gone once reaped by its parent; ask /proc.
                if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                    alive.discard(pid)
            except (ProcessLookupError, FileNotFoundError):
                alive.discard(pid)
        time.sleep(0.1)
    return alive


def cleanup(workdir: Path) -> list[str]:
    """Remove everything the node at `workdir` made. Idempotent; returns what could not be removed."""
    paths = NodePaths(workdir)
    problems: list[str] = []
    # 1. The node's own processes (kubelet, kube-proxy, containerd), if their starter did not stop them.
    own = []
    if paths.pids.is_dir():
        for f in paths.pids.iterdir():
            with contextlib.suppress(ValueError, OSError):
                pid = int(f.read_text())
                if str(workdir) in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    own.append(pid)
    _kill(own, signal.SIGTERM)
    _kill(_wait_gone(own, 10), signal.SIGKILL)
    # 2. Every container process (they live in the node's cgroups), then the shims of our containerd.
    for _ in range(3):
        pids = _pids_in_cgroups()
        if not pids:
            break
        _kill(pids, signal.SIGKILL)
        _wait_gone(pids, 5)
    shims = _processes_mentioning(f"-address {paths.containerd_socket}")
    _kill(shims, signal.SIGKILL)
    _wait_gone(shims, 5)
    with contextlib.suppress(FileNotFoundError):
        for sock in Path("/run/containerd/s").iterdir():
            # Shim sockets are named by a hash; a socket nobody listens on any more is a dead shim's.
            with socket.socket(socket.AF_UNIX) as probe, contextlib.suppress(OSError):
                try:
                    probe.connect(str(sock))
                except ConnectionRefusedError:
                    sock.unlink()
    # 3. Mounts (pod volumes, container root filesystems, network namespaces), deepest first.
    for _ in range(3):
        mounts = _mounts_under(workdir)
        if not mounts:
            break
        for mountpoint in sorted(mounts, key=len, reverse=True):
            _run("umount", "-l", mountpoint, check=False)
    problems += [f"mount {m}" for m in _mounts_under(workdir)]
    # 4. cgroups, the bridge, kube-proxy's nftables tables, CNI's cache of our network.
    problems += _remove_shared()
    sandboxes = {p.name for p in paths.sandboxes.iterdir()} if paths.sandboxes.is_dir() else set()
    with contextlib.suppress(FileNotFoundError):
        for cached in CNI_CACHE.iterdir():
            # <network>-<sandbox id>-<interface>: ours, and containerd's own cni-loopback of our pods.
            if cached.name.startswith(f"{CNI_NETWORK}-") or any(f"-{sid}-" in cached.name for sid in sandboxes):
                cached.unlink(missing_ok=True)
    with contextlib.suppress(FileNotFoundError):
        for link in Path("/var/log/containers").iterdir():
            if link.is_symlink() and os.readlink(link).startswith(str(paths.pod_logs)):
                link.unlink(missing_ok=True)
    with contextlib.suppress(OSError, ValueError):
        for created in json.loads(paths.created_dirs.read_text()):
            shutil.rmtree(created, ignore_errors=True)
    # 5. The machine-wide sysctls the kubelet changed.
    with contextlib.suppress(OSError, ValueError):
        for key, value in json.loads(paths.saved_sysctls.read_text()).items():
            with contextlib.suppress(OSError):
                Path("/proc/sys", key).write_text(value)
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        problems.append(f"bridge {BRIDGE}")
    problems += [f"cgroup {c}" for c in _cgroup_dirs()]
    return problems


def _remove_shared() -> list[str]:
    """The node's machine-wide objects with fixed names: cgroups, the bridge, nftables tables."""
    problems = []
    for cgroup in _cgroup_dirs():
        try:
            cgroup.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append(f"cgroup {cgroup}: {exc}")
    for veth in Path("/sys/class/net").iterdir():
        with contextlib.suppress(OSError):
            if (veth / "master").resolve().name == BRIDGE:
                _run("ip", "link", "del", veth.name, check=False)
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        _run("ip", "link", "del", BRIDGE, check=False)
    if shutil.which("nft"):
        for family in ("ip", "ip6"):
            _run("nft", "delete", "table", family, "kube-proxy", check=False)
    return problems


def remove_workdir(workdir: Path) -> None:
    """rmtree, but never through a mount point (a pod's hostPath could be anything)."""
    if _mounts_under(workdir):
        raise NodeError(f"not removing {workdir}: mounts remain under it")
    shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------------------------- reaper


def start_reaper(workdir: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A process that cleans up after the node once its starter is gone, however it went.

    It reads a pipe whose write end only the starter holds: end of file means the starter exited,
    was killed (even with SIGKILL) or called `stop_reaper`. Returns the process and the write end.
    """
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, False)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "hack.localcluster.node", "reap", str(workdir)],
            stdin=read_end,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[2],
        )
    os.close(read_end)
    mark = NodePaths(workdir).owner_mark
    deadline = time.monotonic() + 30
    while not mark.exists():
        if process.poll() is not None:
            os.close(write_end)
            raise NodeError(
                f"another local node is running on this machine (lock {LOCK}); one at a "
                "time: stop it first (make cluster-down)"
            )
        if time.monotonic() > deadline:
            stop_reaper(process, write_end)
            raise NodeError(f"the node's reaper did not start; see {log}")
        time.sleep(0.05)
    return process, write_end


def stop_reaper(process: subprocess.Popen[bytes], write_end: int, timeout: float = 120) -> None:
    """Let the reaper clean up now, and wait until it has."""
    with contextlib.suppress(OSError):
        os.close(write_end)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()


def _reap(workdir: Path) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    lock = open(LOCK, "a")  # noqa: SIM115 - held until this process exits
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another local node holds {LOCK}: not starting, not cleaning up", flush=True)
        return 3
    NodePaths(workdir).owner_mark.write_text(str(os.getpid()))
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    problems = cleanup(workdir)
    stamp = time.strftime("%H:%M:%S")
    print(f"{stamp} node cleanup: " + ("; ".join(problems) if problems else "everything removed"), flush=True)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hack.localcluster.node")
    parser.add_argument("command", choices=["reap", "cleanup", "missing"])
    parser.add_argument("workdir", type=Path, nargs="?")
    args = parser.parse_args(argv)
    if args.command == "missing":
        print(" ".join(missing_tools()))
        return 0
    if args.workdir is None:
        parser.error("workdir is required")
    if args.command == "reap":
        return _reap(args.workdir.resolve())
    with open(LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"a local node is running (it holds {LOCK}): stop it with make cluster-down")
            return 1
        problems = cleanup(args.workdir.resolve())
    print("\n".join(problems) or "everything removed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
