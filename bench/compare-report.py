#!/usr/bin/env python3
"""Turns bench/compare.sh's raw tidecast-load reports into one markdown
table with a column per server and a ratio (Tidecast / peer) per peer.

Usage: compare-report.py WORKDIR SERVER...
"""
import json
import os
import sys

MIB = 1024 * 1024


def load(work, name):
    path = os.path.join(work, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def figures(work, server, ramp):
    """The measures of one server, each a number or None."""
    a = load(work, f"{server}-A") or {}
    c = load(work, f"{server}-C") or {}
    d = load(work, f"{server}-D") or {}
    srv = a.get("server") or {}
    idle, warm = srv.get("rss_idle_bytes"), srv.get("rss_after_warmup_bytes")
    out = {
        "idle_rss_mib": idle / MIB if idle else None,
        "stream_rss_mib": (warm - idle) / MIB if idle and warm else None,
        "segment_delay_p50_ms": (a.get("segment_delay_ms") or {}).get("p50"),
        "segment_delay_p90_ms": (a.get("segment_delay_ms") or {}).get("p90"),
        "cores_100_rtmp": srv.get("cores"),
    }
    rtmp100 = a.get("rtmp") or {}
    out["sustained_100_rtmp"] = rtmp100.get("sustained_without_stall")
    best = None
    for n in ramp:
        b = load(work, f"{server}-B-{n}")
        if not b:
            break
        gen = b.get("generator") or {}
        used = b["server"]["cores"] + gen.get("cores", 0)
        # The machine is the limit once server and generator together use
        # nearly all of it: a stall there says nothing about the server.
        if gen.get("host_cores") and used >= 0.9 * gen["host_cores"]:
            out["machine_saturated_at"] = n
        if (b.get("rtmp") or {}).get("sustained_without_stall") != n:
            break
        best = (n, b["server"]["cores"])
        out["generator_cores_at_max"] = gen.get("cores")
    if best:
        out["max_rtmp_viewers"] = best[0]
        out["max_rtmp_cores"] = best[1]
        out["rtmp_viewers_per_core"] = best[0] / best[1] if best[1] > 0 else None
    g = c.get("get") or {}
    out["segment_req_s"] = g.get("requests_per_second")
    out["segment_gbit_s"] = g.get("gbit_per_second")
    out["segment_cores"] = (c.get("server") or {}).get("cores")
    if g.get("requests_per_second"):
        out["segment_kib"] = g["gbit_per_second"] * 1e9 / 8 / g["requests_per_second"] / 1024
        if out["segment_cores"]:
            out["segment_req_s_per_core"] = g["requests_per_second"] / out["segment_cores"]
    ll = d.get("llhls") or {}
    announce = ll.get("part_announce_ms") or {}
    out["llhls_part_p50_ms"] = announce.get("p50")
    out["llhls_part_p99_ms"] = announce.get("p99")
    if ll:
        out["llhls_sustained"] = f"{ll.get('sustained_without_stall')}/{ll.get('viewers')}"
    return out


# (key, label, better when higher?) in the order of the table.
ROWS = [
    ("rtmp_viewers_per_core", "RTMP viewers at full bitrate per server core", True),
    ("max_rtmp_viewers", "largest RTMP step sustained (viewers)", True),
    ("max_rtmp_cores", "server cores at that step", False),
    ("generator_cores_at_max", "load generator cores at that step", None),
    ("machine_saturated_at", "step where server + generator used 90% of the machine", None),
    ("cores_100_rtmp", "server cores with 100 RTMP viewers", False),
    ("segment_req_s", "cached segment: requests/s", True),
    ("segment_gbit_s", "cached segment: Gbit/s", True),
    ("segment_req_s_per_core", "cached segment: requests/s per server core", True),
    ("segment_kib", "segment size (KiB)", None),
    ("segment_delay_p50_ms", "ingest-to-playlist delay p50 (ms)", False),
    ("segment_delay_p90_ms", "ingest-to-playlist delay p90 (ms)", False),
    ("idle_rss_mib", "idle RSS (MiB)", False),
    ("stream_rss_mib", "RSS added by one live stream (MiB)", False),
    ("llhls_part_p50_ms", "LL-HLS part announce p50 (ms)", False),
    ("llhls_part_p99_ms", "LL-HLS part announce p99 (ms)", False),
    ("llhls_sustained", "LL-HLS viewers sustained", None),
]


def fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if isinstance(v, int) or abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def main():
    work, servers = sys.argv[1], sys.argv[2:]
    ramp = [int(n) for n in os.environ.get("RAMP", "100 200 400 800 1600 3200 6400").split()]
    figs = {s: figures(work, s, ramp) for s in servers}
    versions = {}
    for s in servers:
        p = os.path.join(work, s + ".version")
        versions[s] = open(p).read().strip() if os.path.exists(p) else s
    peers = [s for s in servers if s != "tidecast"]
    lines = []
    header = ["measure"] + [versions[s] for s in servers]
    if "tidecast" in servers:
        header += [f"Tidecast / {p}" for p in peers]
    header.append("better")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for key, label, higher in ROWS:
        row = [label] + [fmt(figs[s].get(key)) for s in servers]
        if "tidecast" in servers:
            t = figs["tidecast"].get(key)
            for p in peers:
                v = figs[p].get(key)
                ok = isinstance(t, (int, float)) and isinstance(v, (int, float)) and v > 0 and higher is not None
                row.append(f"{t / v:.2f}" if ok else "")
        row.append({True: "higher", False: "lower", None: ""}[higher])
        lines.append("| " + " | ".join(row) + " |")
    with open(os.path.join(work, "machine.txt")) as f:
        machine = f.read().strip()
    text = machine + "\n\n" + "\n".join(lines) + "\n"
    with open(os.path.join(work, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(figs, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
