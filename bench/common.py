"""Helpers shared by the benchmark's peer scripts."""


def peak_rss_mb():
    """This process's peak resident memory in MiB.

    VmHWM, not ru_maxrss: on Linux ru_maxrss survives exec, so a child of a large process would
    report its parent's peak.
    """
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
