"""Built-in script network-connections: the TCP and UDP sockets of this endpoint, with the process that owns
each when it can be found. Read-only, Python standard library only.

Linux: read from /proc/net/tcp, tcp6, udp and udp6 (owners from /proc/<pid>/fd). Windows: `netstat -ano`.
Parameters: port (optional) - only sockets whose local or remote port is this one.
"""

import os
import socket
import struct
import subprocess
import sys

import active_response as ar

TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
    "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}


def address(hex_addr):
    """'0100007F:1F90' -> ('127.0.0.1', 8080); the kernel prints each 32-bit word in host byte order."""
    host, port = hex_addr.split(":")
    if len(host) == 8:
        ip = socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(host, 16)))
    else:
        raw = b"".join(struct.pack("<I", int(host[i:i + 8], 16)) for i in range(0, 32, 8))
        ip = socket.inet_ntop(socket.AF_INET6, raw)
    return ip, int(port, 16)


def socket_owners():
    """Socket inode -> (pid, name), for the processes whose descriptors this user may read."""
    owners = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % pid) as f:
                name = f.read().strip()
            for fd in os.listdir("/proc/%s/fd" % pid):
                link = os.readlink("/proc/%s/fd/%s" % (pid, fd))
                if link.startswith("socket:["):
                    owners[link[8:-1]] = (int(pid), name)
        except OSError:
            continue  # gone, or not ours to read
    return owners


def linux_rows():
    owners = socket_owners()
    rows = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open("/proc/net/" + proto) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            local, remote = address(fields[1]), address(fields[2])
            if proto.startswith("tcp"):
                state = TCP_STATES.get(fields[3], fields[3])
            else:
                state = "ESTABLISHED" if fields[3] == "01" else "UNCONN"
            pid, name = owners.get(fields[9], (None, ""))
            rows.append((proto, local, remote, state, pid, name))
    return rows


def endpoint(text):
    """netstat's '127.0.0.1:8080', '[::1]:443' or '*:*' -> (host, port); port 0 when there is none."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


def windows_rows():
    out = subprocess.run(["netstat", "-ano"], capture_output=True, text=True, timeout=60).stdout
    rows = []
    for line in out.splitlines():
        f = line.split()
        if not f or f[0] not in ("TCP", "UDP"):
            continue
        if f[0] == "TCP" and len(f) >= 5:
            proto, local, remote, state, pid = f[0], f[1], f[2], f[3], f[4]
        elif f[0] == "UDP" and len(f) >= 4:
            proto, local, remote, state, pid = f[0], f[1], f[2], "UNCONN", f[3]
        else:
            continue
        proto = proto.lower() + ("6" if local.startswith("[") else "")
        rows.append((proto, endpoint(local), endpoint(remote), state, int(pid) if pid.isdigit() else None, ""))
    return rows


def main():
    port = ar.params().get("port")
    rows = windows_rows() if os.name == "nt" else linux_rows()
    if port is not None:
        rows = [r for r in rows if r[1][1] == port or r[2][1] == port]
    fmt = lambda a: ("[%s]:%d" if ":" in a[0] else "%s:%d") % a
    print("%d socket%s%s" % (len(rows), "" if len(rows) == 1 else "s", " on port %d" % port if port else ""))
    print("%-5s  %-46s  %-46s  %-11s  %s" % ("PROTO", "LOCAL", "REMOTE", "STATE", "PROCESS"))
    order = {"LISTEN": 0, "UNCONN": 1}
    for proto, local, remote, state, pid, name in sorted(rows, key=lambda r: (order.get(r[3], 2), r[0], r[1])):
        owner = "%d %s" % (pid, name) if pid is not None else "-"
        print("%-5s  %-46s  %-46s  %-11s  %s" % (proto, fmt(local), fmt(remote), state, owner.strip()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
