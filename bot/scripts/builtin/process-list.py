"""Built-in script process-list: the processes running on this endpoint, optionally only those whose name
contains a filter. Read-only. It asks the agent for the list (active_response.processes()), so a sandboxed
agent shows only the processes of its sandbox, as the processes action does.

Parameters: name (optional) - only processes whose name contains this text.
"""

import active_response as ar

name = ar.params().get("name") or None
procs = sorted(ar.processes(name), key=lambda p: p["pid"])
what = "process" if len(procs) == 1 else "processes"
print("%d %s%s" % (len(procs), what, ' whose name contains "%s"' % name if name else ""))
print("%8s  %-24s  %s" % ("PID", "NAME", "COMMAND LINE"))
for p in procs:
    print("%8d  %-24s  %s" % (p["pid"], p["name"][:24], p["cmdline"][:400]))
