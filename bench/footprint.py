#!/usr/bin/env python3
"""Helpers for bench/agent-footprint.sh (python3 standard library only).

  footprint.py freeport KIND...        print one free 127.0.0.1 port per KIND (tcp|udp|tcp@N|udp@N), all distinct
  footprint.py listening KIND PORT     exit 0 if something listens on PORT (reads /proc/net, no bind race)
  footprint.py busy SECONDS            sleep SECONDS and print how busy the machine was (% of all cores)
  footprint.py count-json FILE         print how many records FILE's JSON holds (-1: not JSON)
  footprint.py report OURS FILE...     print the per-agent table and OURS' ratios to each peer
                                       from measure.py's JSON outputs (one file per window)
"""
import json
import os
import socket
import sys
import time

MIB = 1024.0  # measure.py reports KiB


def freeport(kinds):
    """KIND is tcp or udp (any free port), or tcp@N / udp@N: N if free, else the next free
    port above it, up to 32767 (zabbix_agent2 refuses a ListenPort above that)."""
    socks, ports = [], []
    for kind in kinds:
        proto, _, start = kind.partition("@")
        candidates = range(int(start), 32768) if start else [0]
        for port in candidates:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))  # held open until all are picked, so the ports are distinct
            except OSError:
                s.close()
                continue
            socks.append(s)
            ports.append(s.getsockname()[1])
            break
        else:
            sys.exit(f"footprint.py: no free {proto} port from {start} to 32767")
    for s in socks:
        s.close()
    print(" ".join(map(str, ports)))


def listening(kind, port):
    want = f"{int(port):04X}"
    for name in (kind, kind + "6"):
        try:
            lines = open(f"/proc/net/{name}").read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, state = f[1], f[3]
            # TCP must be in LISTEN (0A); an unconnected bound UDP socket shows 07
            if local.rsplit(":", 1)[1] == want and (kind == "udp" or state == "0A"):
                return 0
    return 1


def busy(seconds):
    def sample():
        v = list(map(int, open("/proc/stat").readline().split()[1:9]))
        return sum(v) - v[3] - v[4], sum(v)
    b0, t0 = sample()
    time.sleep(seconds)
    b1, t1 = sample()
    print(f"{100.0 * (b1 - b0) / max(1, t1 - t0):.1f}")


def count_records(v):
    """Leaves of a JSON answer: a list of series, each holding its points, counts points (a
    point is itself a list, [time, value], and counts once), so the count grows as data
    arrives."""
    if isinstance(v, list):
        return sum(count_records(x) if isinstance(x, dict) else 1 for x in v)
    if isinstance(v, dict):
        lists = [x for x in v.values() if isinstance(x, list)]
        if lists:
            return sum(count_records(x) for x in lists)
        return 1 if v else 0
    return 0 if v in (None, "", 0) else 1


def count_json(path):
    try:
        text = open(path).read()
        print(count_records(json.loads(text)))
    except (OSError, ValueError):
        print(-1)


def ratio(ours, peer):
    if peer <= 0:
        return "  n/a "
    return f"{ours / peer:5.2f}x"


def report(ours, files):
    runs = []
    for path in files:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    runs.append(json.loads(line))
    if not runs:
        sys.exit("footprint.py: no measure.py results to report")
    summary = {}
    for i, run in enumerate(runs, 1):
        res = run["results"]
        names = sorted(res, key=lambda n: (n != ours, n))
        print(f"\n## window {i} of {len(runs)}: {run['window_s']} s; "
              f"CPU of everything else on the machine in the window: {run['foreign_cpu_s']} s")
        print(f"{'agent':18}{'CPU %1core':>11}{'(sched %)':>10}{'cpu_s':>7}{'RSS MiB':>9}{'PSS MiB':>9}"
              f"{'peak RSS':>9}{'threads':>8}{'procs':>6}")
        for n in names:
            r = res[n]
            print(f"{n:18}{r['cpu_pct']:>11.3f}{r['sched_pct']:>10.4f}{r['cpu_s']:>7.2f}{r['rss'] / MIB:>9.1f}"
                  f"{r['pss'] / MIB:>9.1f}{r['hwm'] / MIB:>9.1f}{r['threads']:>8}{r['nproc']:>6}")
        if ours in res:
            o = res[ours]
            print()
            for n in names:
                if n == ours:
                    continue
                p = res[n]
                cpu, sched, pss = (ratio(o["cpu_pct"], p["cpu_pct"]), ratio(o["sched_pct"], p["sched_pct"]),
                                   ratio(o["pss"], p["pss"]))
                rss = ratio(o["rss"], p["rss"])
                print(f"{ours}/{n:14} CPU {cpu} (sched {sched})  PSS {pss}  RSS {rss}")
                s = summary.setdefault(n, {"cpu": [], "sched": [], "pss": []})
                if p["cpu_pct"] > 0:
                    s["cpu"].append(o["cpu_pct"] / p["cpu_pct"])
                if p["sched_pct"] > 0:
                    s["sched"].append(o["sched_pct"] / p["sched_pct"])
                if p["pss"] > 0:
                    s["pss"].append(o["pss"] / p["pss"])
    if len(runs) > 1 and summary:
        print(f"\n## {ours} against each peer over the {len(runs)} windows (min-max)")
        for n, s in summary.items():
            def rng(xs):
                return f"{min(xs):.2f}-{max(xs):.2f}x" if xs else "n/a"
            print(f"{ours}/{n:14} CPU {rng(s['cpu'])} (sched {rng(s['sched'])})  PSS {rng(s['pss'])}")
    print("\nCPU % of one core = utime+stime of the process tree in /proc (10 ms ticks; coarse for agents this idle),"
          "\n(sched %) = ns-precise run time of its live threads; PSS from smaps_rollup; peak RSS = VmHWM.")


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "freeport" and args and all(a.split("@")[0] in ("tcp", "udp") for a in args):
        freeport(args)
    elif cmd == "listening" and len(args) == 2:
        sys.exit(listening(args[0], args[1]))
    elif cmd == "busy" and len(args) == 1:
        busy(float(args[0]))
    elif cmd == "count-json" and len(args) == 1:
        count_json(args[0])
    elif cmd == "report" and len(args) >= 2:
        report(args[0], args[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
