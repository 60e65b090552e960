"""The seccomp profile that lets Chromium keep its own sandbox inside a pool container.

Chromium's sandbox puts each renderer in new user, PID and network namespaces (``clone`` and
``unshare`` with namespace flags), then under its own seccomp-bpf filter. Docker's default
profile refuses namespace creation to a container without ``CAP_SYS_ADMIN``, so Chromium there
either stops ("No usable sandbox!") or runs with ``--no-sandbox``, where a renderer exploit
owns the whole browser. This profile allows the namespaces and refuses, with ``EPERM``, what a
browser never calls and what a process holding capabilities inside its own user namespace
could use to reach the kernel: mounts and the new mount API, BPF, perf, kernel keyrings,
modules, io_uring, userfaultfd, ptrace and cross-process memory access, clock and host
settings, ``setns``, and netfilter's netlink socket (nftables in a private network namespace).

The container keeps every other limit: non-root, ``cap-drop ALL``, ``no-new-privileges``,
read-only root, memory, CPU and process limits. Syscalls this kernel does not know are skipped
by the engine.
"""

from __future__ import annotations

import json

EPERM = 1
AF_NETLINK = 16
NETLINK_NETFILTER = 12

REFUSED = (
    # mounts (a user namespace holds CAP_SYS_ADMIN over its own mount namespace)
    "mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount",
    "open_tree", "mount_setattr",
    # kernel interfaces with a history of privilege escalations
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "add_key", "request_key", "keyctl",
    # other processes and the host
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "setns",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "create_module",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog", "vhangup",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime", "sethostname", "setdomainname",
    "iopl", "ioperm", "lookup_dcookie", "open_by_handle_at", "name_to_handle_at", "nfsservctl", "uselib",
    "get_kernel_syms", "query_module", "sysfs", "_sysctl", "ustat", "vm86", "vm86old",
    "fanotify_init", "mbind", "set_mempolicy", "move_pages", "migrate_pages",
)  # fmt: skip


def chromium_profile() -> dict[str, object]:
    """The profile as Docker's API takes it (``security_opt=["seccomp=<this as JSON>"]``)."""
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": list(REFUSED), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
            {
                "names": ["socket"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": EPERM,
                "args": [
                    {"index": 0, "value": AF_NETLINK, "op": "SCMP_CMP_EQ"},
                    {"index": 2, "value": NETLINK_NETFILTER, "op": "SCMP_CMP_EQ"},
                ],
            },
        ],
    }


def security_option() -> str:
    return "seccomp=" + json.dumps(chromium_profile(), separators=(",", ":"))
