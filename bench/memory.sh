#!/usr/bin/env bash
# make bench-memory: what a live stream costs in resident memory, against
# the media bytes its configured windows hold.
#
# One server on embedded defaults. The clip is pushed in real time for
# SECONDS (45: longer than the 20 s LL-HLS window, so every window is
# full), then a second stream joins for as long. After each, the script
# reads /proc/PID/status (RSS and its anonymous and shared-memory parts)
# and the load report (`/api/v1/load`: the bytes each holder keeps, the
# bytes the packaged-media files hold). It prints:
#   - per stream: RSS added, of it anonymous, the packaged-media files'
#     pages added, the footprint added (anonymous + file-backed RSS + all
#     packaged-media pages: those are written with pwrite and sent with
#     sendfile, mostly never mapped, so RSS alone leaves them out), and the
#     window bytes (ring + CMAF window, from the ledger);
#   - the ratio footprint added / window bytes, for the first stream (which
#     also pays for first-use costs: threads' malloc arenas, lazily set-up
#     state) and for the second (the marginal cost of one more stream).
# Environment: SECONDS_PER_STREAM (45), NO_BUILD=1.
# Bounded: loopback only, two publishers, about two minutes.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
secs="${SECONDS_PER_STREAM:-45}"
if [ "${NO_BUILD:-0}" != 1 ]; then
    cargo build --release --quiet --bin tidecast
    cargo build --release --quiet -p tidecast-bench --bin tidecast-load
fi
clip="$("$root/bench/clip.sh")"
work="$(mktemp -d /tmp/tidecast-memory.XXXXXX)"
key="tca_memory-bench-key-0123456789"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

TIDECAST_ADMIN_KEY="$key" "$root/target/release/tidecast" serve --data-dir "$work/data" --log warn \
    --rtmp-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --srt-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --webrtc-bind 127.0.0.1 --webrtc-udp-port 0 --webrtc-tcp-port 0 >"$work/stdout" 2>"$work/server.log" &
server=$!
pids+=("$server")
for _ in $(seq 100); do
    grep -q '^listening ' "$work/stdout" 2>/dev/null && break
    sleep 0.1
done
line="$(grep '^listening ' "$work/stdout")" || { cat "$work/server.log" >&2; exit 1; }
addr() { echo "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
rtmp="$(addr rtmp)" admin="$(addr admin)"

status() { # key: kB from /proc/PID/status
    awk -v k="$1:" '$1 == k { print $2 }' "/proc/$server/status"
}
snapshot() { # name: one JSON line of figures
    # The load report is recomputed once a second.
    sleep 1.2
    curl -sf -H "Authorization: Bearer $key" "http://$admin/api/v1/load" >"$work/$1-load.json"
    printf '{"rss_kb": %s, "anon_kb": %s, "file_kb": %s, "shmem_kb": %s}\n' "$(status VmRSS)" "$(status RssAnon)" \
        "$(status RssFile)" "$(status RssShmem)" >"$work/$1-proc.json"
}

sleep 1
snapshot idle
"$root/target/release/tidecast-load" --publish "rtmp://$rtmp/live/mem-1" --clip "$clip" --warmup 0 \
    --seconds $((2 * secs + 15)) >/dev/null 2>&1 &
pids+=($!)
sleep "$secs"
snapshot one
"$root/target/release/tidecast-load" --publish "rtmp://$rtmp/live/mem-2" --clip "$clip" --warmup 0 \
    --seconds $((secs + 15)) >/dev/null 2>&1 &
pids+=($!)
sleep "$secs"
snapshot two

python3 - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
MB = 1e6
def load(name):
    proc = json.load(open(os.path.join(work, name + "-proc.json")))
    report = json.load(open(os.path.join(work, name + "-load.json")))
    return proc, report["memory"]
def footprint(proc, mem):
    # Anonymous and file-backed RSS, plus every page of the packaged-media
    # files (mapped or not: written with pwrite and sent with sendfile, most
    # are never mapped, so RSS alone leaves them out).
    return (proc["anon_kb"] + proc["file_kb"]) * 1024 + mem["packaged_bytes"]
snaps = {n: load(n) for n in ("idle", "one", "two")}
print("| | RSS added (MB) | anonymous (MB) | packaged files (MB) | footprint added (MB) | window bytes, ledger (MB) | holders (MB) | footprint / window bytes |")
print("|---|---|---|---|---|---|---|---|")
for name, before, after, stream in (("first stream", "idle", "one", "mem-1"), ("second stream", "one", "two", "mem-2")):
    (p0, m0), (p1, m1) = snaps[before], snaps[after]
    rss = (p1["rss_kb"] - p0["rss_kb"]) * 1024
    anon = (p1["anon_kb"] - p0["anon_kb"]) * 1024
    files = m1["packaged_bytes"] - m0["packaged_bytes"]
    added = footprint(p1, m1) - footprint(p0, m0)
    win = sum(h["bytes"] for h in m1["media_buffers"] if h["stream"] == stream)
    holders = ", ".join(f"{h['holder']} {h['bytes'] / MB:.2f}" for h in m1["media_buffers"] if h["stream"] == stream)
    print(f"| {name} | {rss / MB:.2f} | {anon / MB:.2f} | {files / MB:.2f} | {added / MB:.2f} | {win / MB:.2f} | {holders} | {added / win:.2f} |")
_, m2 = snaps["two"]
print(f"\npackaged-media files: {m2['packaged_files']}, holding {m2['packaged_bytes'] / MB:.2f} MB, "
      f"of it mapped (in RSS): {m2['process_rss_shmem_bytes'] / MB:.2f} MB")
PY
echo "raw figures: $work" >&2
