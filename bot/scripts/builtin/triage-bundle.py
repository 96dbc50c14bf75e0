"""Built-in script triage-bundle: a few small facts about this endpoint, collected into a zip and uploaded to
the platform's evidence store (active_response.upload_file), where it is kept by its SHA-256. Read-only: the
zip is written in the run's working directory and removed once uploaded.

The zip holds hostname.txt, os-release.txt, uptime.txt, processes.txt, connections/ (the kernel's socket
tables on Linux, `netstat -ano` on Windows), auth-log.txt (the last lines of the authentication log, when
this agent may read it) and manifest.json (what was collected, and what was not and why).
Parameters: auth_lines (optional, default 200) - how many lines of the authentication log to keep.
"""

import json
import os
import platform
import socket
import subprocess
import sys
import time
import zipfile
from collections import deque

import active_response as ar

AUTH_LOGS = ["/var/log/auth.log", "/var/log/secure"]


def run(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout


def os_release():
    if os.path.exists("/etc/os-release"):
        with open("/etc/os-release") as f:
            return f.read()
    return "%s\n%s\n" % (platform.platform(), " ".join(platform.win32_ver()) if os.name == "nt" else "")


def uptime():
    if os.path.exists("/proc/uptime"):
        with open("/proc/uptime") as f:
            seconds = float(f.read().split()[0])
    elif os.name == "nt":
        import ctypes

        seconds = ctypes.windll.kernel32.GetTickCount64() / 1000.0
    else:
        raise OSError("no uptime source on this OS")
    return "%d seconds (%.1f days)\n" % (seconds, seconds / 86400)


def processes():
    rows = sorted(ar.processes(), key=lambda p: p["pid"])
    return "".join("%d\t%s\t%s\n" % (p["pid"], p["name"], p["cmdline"][:400]) for p in rows)


def connections():
    if os.name == "nt":
        return {"connections/netstat-ano.txt": run(["netstat", "-ano"])}
    out = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open("/proc/net/" + proto) as f:
                out["connections/" + proto] = f.read()
        except OSError:
            pass
    return out


def auth_log(lines):
    if os.name == "nt":
        return run(["wevtutil", "qe", "Security", "/c:%d" % lines, "/rd:true", "/f:text"])
    for path in AUTH_LOGS:
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                return "".join(deque(f, maxlen=lines))
    raise OSError("no authentication log at " + " or ".join(AUTH_LOGS))


def main():
    lines = int(ar.params().get("auth_lines", 200))
    entries, skipped = {}, {}
    collectors = [
        ("hostname.txt", lambda: "%s\n%s\n" % (socket.gethostname(), platform.node())),
        ("os-release.txt", os_release),
        ("uptime.txt", uptime),
        ("processes.txt", processes),
        ("connections", connections),
        ("auth-log.txt", lambda: auth_log(lines)),
    ]
    for name, collect in collectors:
        try:
            got = collect()
            entries.update(got if isinstance(got, dict) else {name: got})
        except Exception as e:  # one missing fact must not lose the others
            skipped[name] = "%s: %s" % (type(e).__name__, e)
    host = socket.gethostname()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    manifest = {"host": host, "collectedAt": stamp, "entries": sorted(entries), "skipped": skipped}
    path = os.path.join(os.getcwd(), "triage-%s-%d.zip" % (stamp, os.getpid()))
    try:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for name in sorted(entries):
                z.writestr(name, entries[name])
            z.writestr("manifest.json", json.dumps(manifest, indent=2) + "\n")
        ar.progress("collected %d entries; uploading" % (len(entries) + 1))
        up = ar.upload_file(path, name="triage-%s-%s.zip" % (host, stamp))
    finally:
        if os.path.exists(path):
            os.remove(path)
    print(json.dumps({"uploaded": up, "entries": sorted(entries) + ["manifest.json"], "skipped": skipped}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
