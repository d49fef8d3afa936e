#!/usr/bin/env python3
"""tables.py - the numbers of `make bench`: fio's JSON in, result lines out,
and result lines into the tables README shows (bench.sh and replicated.sh
call it; the shell scripts run the servers, this file only counts).

A results file holds lines "ROW<TAB>SERVER<TAB>VALUE", one per run and
number; the tables show medians over the rounds. Per run of a workload:

  ROW                   IOPS or MiB/s (and, for QD1, a mean latency row)
  cpu: ROW              CPU time of the server's processes per request
  cpu: ROW  SERVER nI   the same for each process, when a server has
                        several (the nodes of a replicated volume)
  client cpu: ROW       fio's own CPU time per request

The CPU rows are what make a 2-core machine readable: when client and
servers share the cores, a run that saturates them goes exactly as fast
as the CPU it spends per request allows, so for two such runs the ratio
of their throughputs is (client + server CPU per request of the
reference) / (client + server CPU per request of the row): the "CPU
ratio" column. A measured ratio above it means the reference left CPU
idle; one below it, that the row waited on something other than CPU.

The snapshot rows (tests/bench/snapshots.sh) add, for a volume with
snapshots (server "REF+snap" beside its reference REF): the share of a
fresh run's writes that copied a chunk (copied), the backup rows
(backup), and snapbench.py's write pause rows; `snapshots` prints them.

The TLS rows (tests/bench/tls.sh) come from build/nbdload's JSON instead
of fio's (fio's nbd engine refuses nbds:// URIs): `nbdload` records a run,
`tls` prints them, each server beside vsand over plain NBD.

Usage:
  tables.py record JSON DIRECTION METRIC ROW SERVER HZ TICKS...  >> RESULTS
  tables.py nbdload JSON ROW SERVER HZ TICKS...  >> RESULTS
  tables.py copied JSON EXCLUSIVE_BYTES ROW SERVER  >> RESULTS
  tables.py backup SUMMARY_JSON T0 T1 WRITTEN DIRTY_CHUNKS KIND SERVER  >> RESULTS
  tables.py loopback RESULTS
  tables.py replicated RESULTS
  tables.py snapshots RESULTS
  tables.py tls RESULTS
"""
import json
import statistics
import sys

QD1 = "4k randwrite QD1"
LATENCY_ROW = "4k randwrite QD1, mean latency (us)"

# The targets for 2-way, per row: (reference, comparison, bound).
TARGETS = {
    "4k randwrite QD32 (4 conn x 8), IOPS": [("standalone", ">=", 0.6), ("qemu-quorum", ">=", 2.5)],
    "1M seq write (1 conn x 8), MiB/s": [("standalone", ">=", 0.7)],
    LATENCY_ROW: [("standalone", "<=", 1.6)],
}

CHUNK = 64 << 10
# The snapshot targets: snapshot / no snapshot for the write rows
# (by how a row starts), the slowest write of a cut window, and the
# incremental stream's data against the chunks its writes dirtied.
SNAP_TARGETS = {
    "4k randwrite QD32, every write the first": (">=", 0.5),
    "4k randwrite QD32, first ": (">=", 0.5),
    "4k randwrite QD32, every chunk already copied": (">=", 0.95),
}
PAUSE_TARGET = ("slowest write of a cut window, p99 (ms)", 50.0)
BACKUP_TARGET = ("incremental backup: stream data / dirty chunks", 1.1)

# The TLS table: its servers in column order; its ratios (numerator,
# denominator): each server over TLS against itself plain, and vsand
# against nbdkit with the same credentials; and the target for
# vsand over TLS against vsand plain (rows starting with the key).
TLS_SERVERS = ["vsand plain", "vsand X.509", "vsand PSK", "nbdkit plain", "nbdkit X.509", "nbdkit PSK"]
TLS_RATIOS = [("vsand X.509", "vsand plain"), ("vsand PSK", "vsand plain"),
              ("nbdkit X.509", "nbdkit plain"), ("nbdkit PSK", "nbdkit plain"),
              ("vsand X.509", "nbdkit X.509"), ("vsand PSK", "nbdkit PSK")]
TLS_TARGETS = {"4k ": 0.9}


def record(path, dirn, metric, row, server, hz, *ticks):
    job = json.load(open(path))["jobs"][0]
    if job["error"]:
        sys.exit("fio reported error %d" % job["error"])
    st = job[dirn]
    value = st["iops"] if metric == "iops" else st["bw_bytes"] / 1048576
    print("%s\t%s\t%.1f" % (row, server, value))
    if row.startswith(QD1):
        print("%s\t%s\t%.1f" % (LATENCY_ROW, server, st["lat_ns"]["mean"] / 1000))
    if st["total_ios"] == 0:
        return
    # The servers' CPU is counted over the whole run, ramp included; fio
    # counts requests after the ramp (its job_runtime sums the jobs').
    jobs = int(job["job options"].get("numjobs", 1))
    measured = job["job_runtime"] / 1000.0 / jobs
    ios = st["total_ios"] * job["elapsed"] / max(measured, 1e-3)
    per_tick = 1e6 / int(hz) / ios
    print("cpu: %s\t%s\t%.2f" % (row, server, sum(int(t) for t in ticks) * per_tick))
    if len(ticks) > 1:
        for i, t in enumerate(ticks, 1):
            print("cpu: %s\t%s n%d\t%.2f" % (row, server, i, int(t) * per_tick))
    client = (job["usr_cpu"] + job["sys_cpu"]) / 100 * job["job_runtime"] / 1000.0
    print("client cpu: %s\t%s\t%.2f" % (row, server, client * 1e6 / st["total_ios"]))


def nbdload(path, row, server, hz, *ticks):
    """one build/nbdload run: its rate, the 4k rows' latency percentiles,
    server and client CPU per request"""
    r = json.load(open(path))
    print("%s\t%s\t%.1f" % (row, server, r["iops"] if "IOPS" in row else r["mib_s"]))
    if row.startswith("4k "):
        short = row.split(" (")[0]
        for p in ("p50", "p99"):
            print("%s, latency %s (us)\t%s\t%.1f" % (short, p, server, r["latency_us"][p]))
    if r["requests"]:
        per = 1e6 / int(hz) / r["requests"]
        print("cpu: %s\t%s\t%.2f" % (row, server, sum(int(t) for t in ticks) * per))
        print("client cpu: %s\t%s\t%.2f" % (row, server, r["client_cpu_us_per_request"]))


def copied(path, exclusive, row, server):
    """the share of the run's writes that copied a chunk, in percent"""
    ios = json.load(open(path))["jobs"][0]["write"]["total_ios"]
    print("%s: writes that copied a chunk (%%)\t%s\t%.1f" %
          (row.replace(", IOPS", ""), server, 100.0 * int(exclusive) / CHUNK / max(ios, 1)))


def backup(path, t0, t1, written, chunks, kind, server):
    """one `vsan backup --json` run: sizes, the stream's rate"""
    s = json.load(open(path))
    mib = 1048576.0
    rows = [("stream (MiB)", s["stream_bytes"] / mib),
            ("rate (MiB/s of stream, wall clock)", s["stream_bytes"] / mib / (float(t1) - float(t0)))]
    if kind == "incremental":
        dirty = int(chunks) * CHUNK
        rows = [("bytes written (MiB)", int(written) / mib),
                ("dirty 64 KiB chunks (MiB)", dirty / mib),
                ("stream data, w records (MiB)", s["data_bytes"] / mib),
                ("stream data / dirty chunks", s["data_bytes"] / dirty),
                ("bytes read / dirty chunks", s["bytes_read"] / dirty)] + rows
    for row, v in rows:
        print("%s backup: %s\t%s\t%.2f" % (kind, row, server, v))


def load(path):
    """Rows in first-seen order, and the median of each (row, server)."""
    rows, values = [], {}
    for line in open(path):
        row, server, value = line.rstrip("\n").split("\t")
        if row not in rows:
            rows.append(row)
        values.setdefault((row, server), []).append(float(value))
    return rows, {k: statistics.median(v) for k, v in values.items()}


def fmt_of(row):
    return "{:,.1f}" if "latency" in row or "cpu: " in row else "{:,.0f}"


def print_table(head, lines):
    print("| " + " | ".join(head) + " |")
    print("| --- |" + " ---: |" * (len(head) - 1))
    for cells in lines:
        print("| " + " | ".join(cells) + " |")
    print()


def loopback(path):
    rows, med = load(path)

    def table(title, rows):
        lines = []
        for row in rows:
            v, k = med[row, "vsand"], med[row, "nbdkit"]
            fmt = fmt_of(row)
            lines.append([row.replace("cpu: ", ""), fmt.format(v), fmt.format(k),
                          "%.2f" % (v / k if k else 0)])
        print_table([title, "vsand", "nbdkit", "ratio"], lines)

    table("workload", [r for r in rows if "cpu: " not in r])
    print("ratio = vsand / nbdkit: above 1 is better for IOPS and MiB/s, worse for latency.")
    print()
    table("server CPU per request (us)", [r for r in rows if r.startswith("cpu: ")])
    print("ratio below 1: vsand spends less CPU per request than nbdkit.")


def replicated(path):
    rows, med = load(path)
    work = [r for r in rows if "cpu: " not in r]

    def ratio(row, num, den):
        return med[row, num] / med[row, den] if med.get((row, den)) else 0.0

    def target_cell(row, den):
        r = ratio(row, "2-way", den)
        for d, op, bound in TARGETS.get(row, []):
            if d == den:
                met = r >= bound if op == ">=" else r <= bound
                return "%.2f (target %s %.1f: %s)" % (r, op, bound, "met" if met else "MISSED")
        return "%.2f" % r

    def cpu_ratio(row, num, den):
        """num/den of two CPU-bound runs of row (see the header)."""
        if "latency" in row:
            return "-"
        cost = {s: med.get(("cpu: " + row, s), 0) + med.get(("client cpu: " + row, s), 0)
                for s in (num, den)}
        return "%.2f" % (cost[den] / cost[num]) if cost[num] else "-"

    lines = []
    for row in work:
        fmt = fmt_of(row)
        lines.append([row] + [fmt.format(med[row, s]) for s in ("standalone", "2-way", "qemu-quorum")] +
                     [target_cell(row, "standalone"), cpu_ratio(row, "2-way", "standalone"),
                      target_cell(row, "qemu-quorum")] +
                     [fmt.format(med[row, s]) for s in ("standalone-lab3", "3-way")] +
                     ["%.2f" % ratio(row, "3-way", "standalone-lab3")])
    print_table(["workload", "standalone", "2-way", "qemu-quorum", "2-way / standalone",
                 "CPU ratio", "2-way / qemu-quorum", "standalone (3-node lab)", "3-way",
                 "3-way / standalone (3-node lab)"], lines)
    print("ratios divide by the standalone vsand of the same lab: above 1 is better for IOPS")
    print("and MiB/s, worse for latency. Targets from the issue, for 2-way. CPU ratio: what")
    print("2-way / standalone comes to for a throughput row when both runs are CPU-bound, from")
    print("the CPU client and servers spend per request (below).")
    print()

    servers = ["standalone", "2-way", "2-way n1", "2-way n2", "qemu-quorum",
               "standalone-lab3", "3-way", "3-way n1", "3-way n2", "3-way n3"]
    lines = []
    for row in work:
        if ("cpu: " + row, "standalone") not in med:
            continue
        lines.append([row] + ["%.1f" % med.get(("cpu: " + row, s), 0) for s in servers] +
                     ["%.1f" % med.get(("client cpu: " + row, s), 0) for s in ("standalone", "2-way")])
    print_table(["CPU per request (us)"] + servers + ["client (standalone)", "client (2-way)"], lines)
    print("servers: every process of the row (nI: node I's vsand alone; qemu-quorum: both")
    print("daemons); client: fio's own CPU per request.")


def snapshots(path):
    rows, med = load(path)
    servers = {srv for _, srv in med}
    refs = [r for r in dict.fromkeys(srv[:-5] for _, srv in med if srv.endswith("+snap"))]

    def label(ref):
        return {"vsand": "standalone", "disk": "standalone, data on disk"}.get(ref, ref)

    def target(row, r):
        for start, (op, bound) in SNAP_TARGETS.items():
            if row.startswith(start):
                met = r >= bound if op == ">=" else r <= bound
                return "%.2f (target %s %.2f: %s)" % (r, op, bound, "met" if met else "MISSED")
        return "%.2f" % r

    def cell(row, srv, fmt):
        return fmt.format(med[row, srv]) if (row, srv) in med else "-"

    def write_table(title, work):
        lines = []
        for row in work:
            fmt = "{:,.1f}" if "cpu: " in row or "(%)" in row else "{:,.0f}"
            line = [row.replace("cpu: ", "")]
            for ref in refs:
                line += [cell(row, ref, fmt), cell(row, ref + "+snap", fmt)]
                if (row, ref) in med and med[row, ref]:
                    r = med[row, ref + "+snap"] / med[row, ref]
                    line.append(target(row, r) if "cpu: " not in row else "%.2f" % r)
                else:
                    line.append("-")
            lines.append(line)
        head = [title]
        for ref in refs:
            head += ["%s, no snapshot" % label(ref), "%s, snapshot" % label(ref), "ratio"]
        print_table(head, lines)

    writes = [r for r in rows if r.startswith("4k ")]
    write_table("copy-on-write", writes)
    print("ratio = with snapshot / without, same node, same run. Copied share: the fresh")
    print("run's writes that found their chunk uncopied (the snapshot's exclusive size / 64 KiB).")
    print()
    write_table("server CPU per request (us)", [r for r in rows if r.startswith("cpu: 4k ")])

    pause = [r for r in rows if not r.startswith(("4k ", "cpu: ", "client cpu: ", "incremental ", "full "))]
    cols = [(ref, phase) for ref in refs for phase in ("no cuts", "cuts")
            if "%s, %s" % (ref, phase) in servers]
    lines = []
    for row in pause:
        fmt = "{:,.0f}" if "(us)" in row or row.startswith("cuts") else "{:,.1f}"
        line = [row]
        for ref, phase in cols:
            c = cell(row, "%s, %s" % (ref, phase), fmt)
            if row == PAUSE_TARGET[0] and phase == "cuts" and c != "-":
                met = med[row, "%s, cuts" % ref] < PAUSE_TARGET[1]
                c += " (target < %.0f: %s)" % (PAUSE_TARGET[1], "met" if met else "MISSED")
            line.append(c)
        lines.append(line)
    print_table(["write pause"] + ["%s, %s" % (label(r), p) for r, p in cols], lines)
    print("a cut window: the run of one `vsan snapshot create` (one a second); without cuts,")
    print("windows of the same length at the same times. Each round gives each number (p99 of")
    print("the slowest write per window: over that round's windows); the table shows medians.")
    print()

    backups = [r for r in rows if r.startswith(("incremental ", "full "))]
    if backups:
        where = list(dict.fromkeys(srv for row in backups for r, srv in med if r == row))
        lines = []
        for row in backups:
            line = [row]
            for ref in where:
                c = cell(row, ref, "{:,.2f}")
                if row == BACKUP_TARGET[0] and c != "-":
                    met = med[row, ref] <= BACKUP_TARGET[1]
                    c += " (target <= %.1f: %s)" % (BACKUP_TARGET[1], "met" if met else "MISSED")
                line.append(c)
            lines.append(line)
        print_table(["backup"] + [label(r) for r in where], lines)


def tls(path):
    rows, med = load(path)
    servers = [s for s in TLS_SERVERS if any(srv == s for _, srv in med)]
    pairs = [(n, d) for n, d in TLS_RATIOS if n in servers and d in servers]

    def ratio(row, num, den):
        if not med.get((row, den)) or (row, num) not in med:
            return "-"
        r = med[row, num] / med[row, den]
        for start, bound in TLS_TARGETS.items():
            if (row.startswith(start) and den == "vsand plain" and "latency" not in row
                    and "cpu" not in row):
                return "%.2f (target >= %.1f: %s)" % (r, bound, "met" if r >= bound else "MISSED")
        return "%.2f" % r

    def table(title, work, prefix=""):
        lines = []
        for row in work:
            fmt = fmt_of(prefix + row)
            lines.append([row] + [fmt.format(med[prefix + row, s]) if (prefix + row, s) in med else "-"
                                  for s in servers] + [ratio(prefix + row, n, d) for n, d in pairs])
        print_table([title] + servers + ["%s / %s" % p for p in pairs], lines)

    work = [r for r in rows if "cpu: " not in r]
    table("workload (build/nbdload)", work)
    print("X / plain: a server over TLS against itself over plain NBD (vsand: the same process,")
    print("tls = on; nbdkit: the one without TLS on the same image); vsand / nbdkit: the same")
    print("credentials. Above 1 is better for IOPS and MiB/s, worse for latency and CPU.")
    print()
    table("server CPU per request (us)", [r for r in work if ("cpu: " + r, "vsand plain") in med], "cpu: ")
    table("client CPU per request (us)", [r for r in work if ("client cpu: " + r, "vsand plain") in med],
          "client cpu: ")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "record":
        record(*args)
    elif cmd == "loopback":
        loopback(*args)
    elif cmd == "replicated":
        replicated(*args)
    elif cmd == "copied":
        copied(*args)
    elif cmd == "backup":
        backup(*args)
    elif cmd == "snapshots":
        snapshots(*args)
    elif cmd == "nbdload":
        nbdload(*args)
    elif cmd == "tls":
        tls(*args)
    else:
        sys.exit("tables.py: unknown command %r\n%s" % (cmd, __doc__))
