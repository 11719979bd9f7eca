#!/usr/bin/env python3
"""Log shipping throughput: aftercare beside rsyslog and the raw limit, in one run.

N lines (the team kit's gen_lines.py, ~200 bytes each) are appended at once to a file each
shipper follows; the clock runs from the start of the append to the moment the last line
is delivered:

- cat:       `cat lines > /dev/null` of the same (warm) file: the raw read limit.
- rsyslog:   imfile (inotify) -> omfwd over TCP -> a counting sink, with the kit's
             rsyslog.conf. Delivered = the sink counted N lines. The sink is the kit's
             sink.py made to count over every connection: omfwd sometimes opens a second
             connection and leaves the first idle, and the kit's one-connection sink then
             waits forever.
- aftercare: agent tails the file -> spool -> QUIC (mutual TLS) -> collector -> SQLite,
             committed (a line counts once its batch's transaction has committed and the
             agent has been acknowledged). Delivered = SUM(records) in the store = N.

CPU per line is utime+stime of the shipper's processes over the run (/proc), divided by
N: rsyslogd alone (the sink is not counted), and for aftercare the agent and, separately,
the collector (rsyslog's receiver, the sink, does far less than a store).

Usage: bench/logs_throughput.py [--lines N] [--runs R] [--skip-build] [--keep] [--json F]
                                [--only-aftercare]
Needs rsyslog (installed with apt-get when absent, as root). Only 127.0.0.1 traffic.
"""
import argparse, json, os, shutil, signal, socket, sqlite3, subprocess, sys, tempfile, time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KIT = os.environ.get("SHARED", os.path.join(os.path.dirname(REPO), "shared"))
PEERS = os.path.join(KIT, "bench-peers")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
TICK = os.sysconf("SC_CLK_TCK")


def die(msg):
    print(f"logs-throughput: ERROR: {msg}", file=sys.stderr)
    sys.exit(1)


def say(msg):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pid):
    """utime+stime of a process (threads included), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port(kind):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_until(what, cond, timeout):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.005)
    die(f"timed out after {timeout}s waiting for {what}")


def append_all(src, dst):
    """Append the lines file to dst in 1 MiB writes, as a busy application would."""
    with open(src, "rb") as s, open(dst, "ab") as d:
        shutil.copyfileobj(s, d, 1 << 20)


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, name, args, log, **kw):
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log, "w"), **kw)
        self.procs.append((name, p))
        time.sleep(0.05)
        if p.poll() is not None:
            die(f"{name} exited at start (code {p.returncode}); see {log}")
        return p

    def stop(self, p, timeout=10):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for _, p in reversed(self.procs):
            self.stop(p)


def bench_cat(lines, n):
    subprocess.run(["cat", lines], stdout=subprocess.DEVNULL, check=True)  # warm
    t0 = time.perf_counter()
    subprocess.run(["cat", lines], stdout=subprocess.DEVNULL, check=True)
    dt = time.perf_counter() - t0
    return dict(seconds=dt, lines_per_s=n / dt)


SINK = r'''
import socket, sys, time, json, threading
port, want, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port)); ls.listen(16)
lock = threading.Lock(); st = dict(bytes=0, lines=0, first=None); done = threading.Event()
def serve(c):
    while not done.is_set():
        b = c.recv(1 << 20)
        if not b: return
        with lock:
            if st["first"] is None: st["first"] = time.time()
            st["bytes"] += len(b); st["lines"] += b.count(b"\n")
            if st["lines"] >= want:
                st["done"] = time.time(); done.set()
def accept():
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
threading.Thread(target=accept, daemon=True).start()
done.wait()
st["cpu"] = time.process_time()
json.dump(st, open(out, "w")); print(json.dumps(st), flush=True)
'''


def bench_rsyslog(lines, n, size, d, procs):
    rdir = os.path.join(d, "rsyslog")
    os.makedirs(os.path.join(rdir, "work"), exist_ok=True)
    tailed = os.path.join(rdir, "tailed.log")
    open(tailed, "w").close()
    port = free_port("tcp")
    conf = open(os.path.join(PEERS, "rsyslog.conf")).read().replace("@DIR@", d)
    conf = conf.replace('port="5140"', f'port="{port}"')
    conf_path = os.path.join(rdir, "rsyslog.conf")
    open(conf_path, "w").write(conf)
    out = os.path.join(rdir, "sink.json")
    sink_py = os.path.join(rdir, "sink.py")
    open(sink_py, "w").write(SINK)
    sink = procs.start("sink", [sys.executable, sink_py, str(port), str(n), out],
                       os.path.join(rdir, "sink.log"))
    time.sleep(0.3)
    rs = procs.start("rsyslogd", ["rsyslogd", "-n", "-f", conf_path, "-i", os.path.join(rdir, "pid")],
                     os.path.join(rdir, "rsyslogd.log"))
    time.sleep(1.5)  # imfile sets up its watch
    cpu0 = cpu_seconds(rs.pid)
    t0 = time.time()
    p0 = time.process_time()
    append_all(lines, tailed)
    appended = time.time() - t0
    p1 = time.process_time()
    try:
        sink.wait(timeout=180)
    except subprocess.TimeoutExpired:
        tail = open(os.path.join(rdir, "rsyslogd.log")).read()[-2000:]
        die(f"rsyslog did not deliver {n} lines within 180 s; rsyslogd said:\n{tail}")
    if not os.path.exists(out):
        die("the sink wrote no result")
    r = json.load(open(out))
    cpu = cpu_seconds(rs.pid) - cpu0
    procs.stop(rs)
    if r["lines"] < n:
        die(f"rsyslog delivered {r['lines']} of {n} lines")
    dt = r["done"] - t0
    return dict(seconds=dt, lines_per_s=n / dt, mb_per_s=size / dt / 1e6, cpu_s=cpu,
                cpu_us_per_line=cpu / n * 1e6, append_s=appended)


def bench_aftercare(lines, n, size, d, procs, agent_bin, collector_bin):
    a = os.path.join(d, "aftercare")
    os.makedirs(a, exist_ok=True)
    port = free_port("udp")
    ccfg = os.path.join(a, "collector.toml")
    open(ccfg, "w").write(f'data_dir = "{a}/collector"\nlisten = "127.0.0.1:{port}"\n')
    cc = [collector_bin, "--config", ccfg]
    subprocess.run(cc + ["ca", "init"], check=True, capture_output=True)
    subprocess.run(cc + ["cert", "issue", "--customer", "bench", "--host", "logs", "--out", f"{a}/cert"],
                   check=True, capture_output=True)
    tailed = os.path.join(a, "tailed.log")
    open(tailed, "w").close()
    acfg = os.path.join(a, "agent.toml")
    open(acfg, "w").write(f"""state_dir = "{a}/agent-state"
interval = "10s"
[collector]
address = "127.0.0.1:{port}"
ca = "{a}/cert/ca.crt"
cert = "{a}/cert/agent.crt"
key = "{a}/cert/agent.key"
[[logs]]
name = "bench"
paths = ["{tailed}"]
""")
    subprocess.run([agent_bin, "--config", acfg, "consent", "grant", "--scope", "metrics,logs", "--by", "bench"],
                   check=True, capture_output=True)
    coll = procs.start("aftercare-collector", cc + ["serve"], os.path.join(a, "collector.log"))
    agent = procs.start("aftercare-agent", [agent_bin, "--config", acfg, "run"], os.path.join(a, "agent.log"),
                        env=dict(os.environ, RUST_LOG="info"))
    db = os.path.join(a, "collector", "aftercare.db")

    # One read-only connection for all the polls: opening the database every 10 ms cost
    # a fifth of a core, taken from the processes being measured. Each SELECT runs in its
    # own read transaction (autocommit, the result read to the end), so it sees the
    # newest commit and never holds back the collector's checkpoints.
    conn = []

    def stored():
        try:
            if not conn:
                conn.append(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1, isolation_level=None))
            return conn[0].execute("SELECT COALESCE(SUM(records), 0) FROM logs").fetchall()[0][0]
        except sqlite3.Error:
            if conn:
                conn.pop().close()
            return None

    # Connected, and the first metrics batch stored: the link is up before the clock starts.
    wait_until("the agent's first batch", lambda: stored() is not None and
               "connected" in open(os.path.join(a, "agent.log")).read(), 30)
    time.sleep(1)
    cpu_a0, cpu_c0 = cpu_seconds(agent.pid), cpu_seconds(coll.pid)
    t0 = time.time()
    p0 = time.process_time()
    append_all(lines, tailed)
    appended = time.time() - t0
    p1 = time.process_time()
    got = 0
    end = time.time() + 600
    while time.time() < end:
        got = stored() or 0
        if got >= n:
            break
        time.sleep(0.01)
    dt = time.time() - t0
    say(f"bench's own CPU: append {p1 - p0:.2f} s, polling {time.process_time() - p1:.2f} s")
    cpu_a, cpu_c = cpu_seconds(agent.pid) - cpu_a0, cpu_seconds(coll.pid) - cpu_c0
    rss_a = peak_rss(agent.pid)
    if conn:
        conn.pop().close()
    procs.stop(agent)
    procs.stop(coll)
    if got != n:
        die(f"aftercare stored {got} of {n} lines")
    return dict(seconds=dt, lines_per_s=n / dt, mb_per_s=size / dt / 1e6, cpu_s=cpu_a,
                cpu_us_per_line=cpu_a / n * 1e6, collector_cpu_us_per_line=cpu_c / n * 1e6,
                agent_peak_rss_mib=rss_a, append_s=appended)


def peak_rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmHWM:"):
            return int(l.split()[1]) / 1024
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--only-aftercare", action="store_true",
                    help="skip cat and rsyslog (for profiling aftercare alone; prints no ratio)")
    args = ap.parse_args()
    if not shutil.which("rsyslogd"):
        say("installing rsyslog (apt-get)")
        subprocess.run(["apt-get", "install", "-y", "rsyslog"], check=True, capture_output=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    agent_bin = os.environ.get("AGENT_BIN") or os.path.join(TARGET, "agent-release", "aftercare-agent")
    collector_bin = os.environ.get("COLLECTOR_BIN", os.path.join(TARGET, "release", "aftercare-collector"))
    if not args.skip_build:
        say("building aftercare-agent (agent-release) and aftercare-collector (release)")
        subprocess.run(["cargo", "build", "--locked", "--profile", "agent-release", "-p", "aftercare-agent"],
                       cwd=REPO, check=True)
        subprocess.run(["cargo", "build", "--locked", "--release", "-p", "aftercare-collector"], cwd=REPO, check=True)
    d = tempfile.mkdtemp(prefix="aftercare-logs-bench-")
    procs = Procs()
    results = []
    try:
        lines = os.path.join(d, "lines.txt")
        say(f"generating {args.lines} lines")
        subprocess.run([sys.executable, os.path.join(PEERS, "gen_lines.py"), str(args.lines), lines], check=True)
        size = os.path.getsize(lines)
        say(f"{size / 1e6:.0f} MB, {size / args.lines:.0f} bytes per line")
        for run in range(args.runs):
            r = dict(run=run + 1)
            if args.only_aftercare:
                x = bench_aftercare(lines, args.lines, size, os.path.join(d, f"r{run}"), procs,
                                    agent_bin, collector_bin)
                r["aftercare"] = x
                results.append(r)
                print(f"run {run + 1}: aftercare {x['lines_per_s']:,.0f} lines/s, {x['mb_per_s']:.1f} MB/s, "
                      f"agent {x['cpu_us_per_line']:.2f} us/line, collector "
                      f"{x['collector_cpu_us_per_line']:.2f} us/line, agent peak RSS "
                      f"{x['agent_peak_rss_mib']:.1f} MiB", flush=True)
                continue
            r["cat"] = bench_cat(lines, args.lines)
            say(f"run {run + 1}: rsyslog")
            r["rsyslog"] = bench_rsyslog(lines, args.lines, size, os.path.join(d, f"r{run}"), procs)
            say(f"run {run + 1}: aftercare")
            r["aftercare"] = bench_aftercare(lines, args.lines, size, os.path.join(d, f"r{run}"), procs,
                                             agent_bin, collector_bin)
            results.append(r)
            ours, peer = r["aftercare"], r["rsyslog"]
            print(f"\nrun {run + 1}: {args.lines} lines, {size / 1e6:.0f} MB, appended at once")
            print(f"{'':12}{'lines/s':>12}{'MB/s':>9}{'s':>8}{'CPU us/line':>13}")
            print(f"{'cat (raw)':12}{r['cat']['lines_per_s']:>12,.0f}{size / r['cat']['seconds'] / 1e6:>9.0f}"
                  f"{r['cat']['seconds']:>8.2f}{'':>13}")
            for name, x in (("rsyslog", peer), ("aftercare", ours)):
                print(f"{name:12}{x['lines_per_s']:>12,.0f}{x['mb_per_s']:>9.1f}{x['seconds']:>8.2f}"
                      f"{x['cpu_us_per_line']:>13.2f}")
            print(f"aftercare collector: {ours['collector_cpu_us_per_line']:.2f} us CPU per line; "
                  f"agent peak RSS {ours['agent_peak_rss_mib']:.1f} MiB")
            print(f"ratio aftercare/rsyslog: lines/s {ours['lines_per_s'] / peer['lines_per_s']:.2f}x, "
                  f"agent CPU per line {ours['cpu_us_per_line'] / peer['cpu_us_per_line']:.2f}x", flush=True)
        if args.json:
            json.dump(results, open(args.json, "w"), indent=1)
    finally:
        procs.stop_all()
        if args.keep:
            say(f"kept {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
