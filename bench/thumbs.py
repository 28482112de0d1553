#!/usr/bin/env python3
"""make bench-thumbs: what thumbnails and clips cost the server while a
stream runs (docs/benchmarks.md).

One release server; the 720p30 3 Mbit/s benchmark clip (bench/clip.sh) is
pushed in a loop, in real time, to a stream with a 120 s DVR window (2 s
segments: the newest 20 s in memory, the rest on disk). Once the window
is full, each kind of request is made in a series, and the server's CPU
time (utime + stime from /proc/PID/stat) over the series, less what the
stream costs on its own over as long (measured first, with no requests),
is divided by the number of requests. RSS (VmRSS) is read before and after
each series. Requests that would hit a cache are spaced so that each one
makes a new picture (a poster once per keyframe, a sheet once the window
moved and 5 s passed, one DASH image per segment).

Environment: NO_BUILD=1, WARMUP (seconds before measuring, 130).
Bounded: loopback only, one publisher, about four minutes.
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "tca_thumbs-bench-key-0123456789"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    return int(m.group(1)) / 1024 if m else 0.0


def fetch(url, data=None, method=None):
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {KEY}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read()


def main():
    if os.environ.get("NO_BUILD") != "1":
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "tidecast"], cwd=ROOT, check=True)
    clip = subprocess.run([f"{ROOT}/bench/clip.sh"], capture_output=True, text=True, check=True).stdout.strip()
    work = tempfile.mkdtemp(prefix="tidecast-thumbs.")
    env = dict(os.environ, TIDECAST_ADMIN_KEY=KEY)
    out = open(f"{work}/stdout", "w+")
    server = subprocess.Popen(
        [f"{ROOT}/target/release/tidecast", "serve", "--data-dir", f"{work}/data", "--log", "warn",
         "--rtmp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--srt-listen", "127.0.0.1:0",
         "--admin-listen", "127.0.0.1:0", "--webrtc-bind", "127.0.0.1", "--webrtc-udp-port", "0",
         "--webrtc-tcp-port", "0"],
        stdout=out, stderr=open(f"{work}/server.log", "w"), env=env)
    procs = [server]
    try:
        line = ""
        for _ in range(200):
            out.seek(0)
            line = next((l for l in out.read().splitlines() if l.startswith("listening ")), "")
            if line:
                break
            time.sleep(0.1)
        addr = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
        http, admin, rtmp = addr["http"], addr["admin"], addr["rtmp"]
        api = f"http://{admin}/api/v1"
        fetch(f"{api}/tenants", json.dumps({"id": "b"}).encode(), "POST")
        fetch(f"{api}/streams", json.dumps({"name": "b", "tenant": "b", "buffer_secs": 120}).encode(), "POST")
        key = json.loads(fetch(f"{api}/streams/b/keys", b"{}", "POST"))["key"]
        procs.append(subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", clip,
             "-c", "copy", "-f", "flv", f"rtmp://{rtmp}/live/{key}"]))
        pushed = time.monotonic()
        warm = float(os.environ.get("WARMUP", "130"))
        print(f"warming up {warm:.0f} s (the 120 s window fills)", file=sys.stderr)
        time.sleep(warm)
        base = f"http://{http}"

        def rate(seconds):
            c0 = cpu_seconds(server.pid)
            time.sleep(seconds)
            return (cpu_seconds(server.pid) - c0) / seconds

        idle = rate(10)
        rows = [("the stream alone (packaging, 1 viewer-less stream)", f"{idle:.3f} cores", "", "")]

        def series(name, urls, spacing):
            r0, c0, t0 = rss_mib(server.pid), cpu_seconds(server.pid), time.monotonic()
            sizes = []
            for u in urls:
                started = time.monotonic()
                sizes.append(len(urllib.request.urlopen(base + u, timeout=60).read()))
                left = spacing - (time.monotonic() - started)
                if left > 0:
                    time.sleep(left)
            wall = time.monotonic() - t0
            cpu = cpu_seconds(server.pid) - c0 - idle * wall
            per = cpu / len(urls) * 1000
            rows.append((name, f"{per:.1f} ms CPU each", f"{sum(sizes) / len(sizes) / 1024:.0f} KiB",
                         f"{rss_mib(server.pid) - r0:+.1f} MiB RSS"))

        mpd = urllib.request.urlopen(f"{base}/dash/b/index.mpd", timeout=30).read().decode()
        m = re.search(r'media="(thumb-[0-9a-f]+-\d+-)\$Number\$\.jpg"', mpd)
        dvr = json.loads(fetch(f"{api}/load"))
        s = next(x for x in dvr["per_stream"] if x["name"] == "b")
        print(f"window: {json.dumps(s.get('dvr'))}", file=sys.stderr)
        series("`/b.jpg` (newest keyframe, 1280x720), one per keyframe", ["/b.jpg"] * 5, 2.1)
        series("`/b.jpg?width=320`, one per keyframe", ["/b.jpg?width=320"] * 5, 2.1)
        series("`/b.jpg`, cached (same keyframe)", ["/b.jpg"] * 50, 0)
        series("`/b.thumbvtt` + sheet, the first (60 tiles decoded)", ["/b.thumbvtt"], 5.5)
        series("`/b.thumbvtt` + sheet, made again 5.5 s later (new tiles only)", ["/b.thumbvtt"] * 5, 5.5)
        if m:
            # Twenty images 100 s to 60 s back, one per 2 s segment: each a
            # keyframe decoded for the first time.
            media = time.monotonic() - pushed
            first = int((media - 100) / 2)
            urls = [f"/dash/b/{m.group(1)}{n}.jpg" for n in range(first, first + 20)]
            series("DASH thumbnail image (160 px), each of a new segment", urls, 0)
        for ext in ["mp4", "mkv", "ts"]:
            series(f"10 s clip `.{ext}` from memory (`startunix=-12`)", [f"/b.{ext}?startunix=-12&duration=10"] * 20, 0)
            series(f"10 s clip `.{ext}` from disk (`startunix=-90`)", [f"/b.{ext}?startunix=-90&duration=10"] * 20, 0)
        # What stays once the heap is trimmed (src/trim.rs, once a minute).
        r0 = rss_mib(server.pid)
        time.sleep(65)
        rows.append(("65 s later (after the periodic heap trim)", "", "", f"{rss_mib(server.pid) - r0:+.1f} MiB RSS"))
        print("| request | server CPU | body | RSS after the series |")
        print("|---|---|---|---|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            p.wait()


if __name__ == "__main__":
    main()
