#!/usr/bin/env bash
# make soak: Tidecast under a steady mixed load for a long time, sampling
# the server's resident memory, the packaged media in its memory-backed
# files (mostly never mapped, so not in RSS; `total` is RSS plus those
# pages), open file descriptors, threads and the media bytes its ledger
# accounts (tidecast_media_buffered_bytes) every 10 s, then
# for a minute after the load, when every stream has ended and its outputs'
# linger has passed. Prints the samples as a table and a summary: RSS after
# warm-up, at the end of the load, its slope over the second half, and after
# the load against idle.
#
# Environment (defaults in brackets):
#   MINUTES [30]  PUBLISHERS [10]  RTMP [100]  LLHLS [40]  HLS [30]  SRT [20]
#   WHEP [10]     (viewers of each kind; each kind watches its own stream)
#   AFTER_SECONDS [60]   sampling after the load
#   NO_BUILD=1    use the binaries already in target/release
#   TIDECAST / TIDECAST_LOAD   other binaries to measure (a before/after pair)
#   SERVER_ENV    extra environment for the server (e.g. MALLOC_ARENA_MAX=1)
# Bounded: loopback only, at most 60 minutes of load.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
minutes="${MINUTES:-30}"
publishers="${PUBLISHERS:-10}"
after="${AFTER_SECONDS:-60}"
[ "$minutes" -ge 1 ] && [ "$minutes" -le 60 ] || { echo "MINUTES must be 1..60" >&2; exit 2; }

if [ "${NO_BUILD:-0}" != 1 ]; then
    cargo build --release --quiet --bin tidecast
    cargo build --release --quiet -p tidecast-bench --bin tidecast-load
fi
server_bin="${TIDECAST:-$root/target/release/tidecast}"
load_bin="${TIDECAST_LOAD:-$root/target/release/tidecast-load}"
clip="$("$root/bench/clip.sh")"
work="$(mktemp -d /tmp/tidecast-soak.XXXXXX)"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

server=""
load=""
cleanup() {
    [ -n "$load" ] && kill "$load" 2>/dev/null || true
    [ -n "$server" ] && kill "$server" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT

mkdir -p "$work/data"
printf '[rtmp]\nmax_connections = 20000\n' >"$work/tidecast.toml"
# shellcheck disable=SC2086
env ${SERVER_ENV:-} TIDECAST_ADMIN_KEY=soak-admin-key "$server_bin" serve --config "$work/tidecast.toml" \
    --data-dir "$work/data" --log warn \
    --rtmp-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --srt-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --webrtc-bind 127.0.0.1 --webrtc-udp-port 0 --webrtc-tcp-port 0 \
    >"$work/stdout" 2>"$work/server.log" &
server=$!
for _ in $(seq 100); do
    grep -q '^listening ' "$work/stdout" 2>/dev/null && break
    sleep 0.1
done
line="$(grep '^listening ' "$work/stdout")" || { cat "$work/server.log" >&2; exit 1; }
addr() { echo "$line" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
rtmp="$(addr rtmp)" http="$(addr http)" srt="$(addr srt)" admin="$(addr admin)"

sample() { # phase: one row
    local t rss fds threads media metrics packaged mapped total
    t=$(( $(date +%s) - start ))
    rss=$(awk '/^VmRSS:/{printf "%.1f", $2/1024}' "/proc/$server/status")
    threads=$(awk '/^Threads:/{print $2}' "/proc/$server/status")
    fds=$(find "/proc/$server/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    metrics=$(curl -sf "http://$admin/metrics" || true)
    media=$(echo "$metrics" | awk '/^tidecast_media_buffered_bytes /{printf "%.1f", $2/1048576}')
    # Packaged media lives in memory-backed files, mostly never mapped: the
    # process's memory is its RSS plus those pages not in it.
    packaged=$(echo "$metrics" | awk '/^tidecast_packaged_bytes /{printf "%.1f", $2/1048576}')
    mapped=$(awk '/^RssShmem:/{printf "%.1f", $2/1024}' "/proc/$server/status")
    total=$(awk -v r="$rss" -v p="${packaged:-0}" -v m="${mapped:-0}" 'BEGIN{printf "%.1f", r + p - m}')
    printf '%6s  %-6s %9s %9s %10s %6s %8s %10s\n' "$t" "$1" "$rss" "${packaged:-?}" "$total" "$fds" "$threads" \
        "${media:-?}" | tee -a "$work/samples.txt"
}

start=$(date +%s)
printf '%6s  %-6s %9s %9s %10s %6s %8s %10s\n' "t_s" "phase" "rss_mib" "pkg_mib" "total_mib" "fds" "threads" \
    "media_mib" | tee "$work/samples.txt"
sleep 2
sample idle
idle_rss=$(awk '/^VmRSS:/{print $2}' "/proc/$server/status")

seconds=$((minutes * 60))
"$load_bin" --seconds "$seconds" --warmup 5 --server-pid "$server" \
    --publish "rtmp://$rtmp/live/soak" --publishers "$publishers" --clip "$clip" \
    --rtmp "rtmp://$rtmp/live/soak-0" --rtmp-viewers "${RTMP:-100}" \
    --llhls "http://$http/hls/soak-1/video.m3u8" --llhls-viewers "${LLHLS:-40}" \
    --hls "http://$http/hls/soak-2/video.m3u8" --hls-viewers "${HLS:-30}" \
    --srt "$srt" --srt-streamid "#!::r=soak-3,m=request" --srt-viewers "${SRT:-20}" \
    --whep "http://$http/whep/soak-4" --whep-viewers "${WHEP:-10}" \
    >"$work/load.json" 2>"$work/load.log" &
load=$!
while kill -0 "$load" 2>/dev/null; do
    sleep 10
    kill -0 "$load" 2>/dev/null && sample load
done
wait "$load" || { echo "tidecast-load failed:" >&2; cat "$work/load.log" >&2; exit 1; }
load=""
for _ in $(seq $((after / 10))); do
    sleep 10
    sample after
done

echo
awk -v idle="$idle_rss" -v warm=60 '
    $2 == "load" { n++; t[n] = $1; r[n] = $5 }
    $2 == "after" { a = $5 }
    END {
        if (n < 2) { print "too few samples"; exit }
        w = 1; while (w < n && t[w] - t[1] < warm) w++
        h = int((w + n) / 2)
        slope = (t[n] > t[h]) ? (r[n] - r[h]) / (t[n] - t[h]) * 600 : 0
        max = 0; for (i = w; i <= n; i++) if (r[i] > max) max = r[i]
        printf "memory (RSS + unmapped packaged media): idle %.1f MiB; after warm-up %.1f MiB; end of load %.1f MiB (max %.1f); second-half slope %+.1f MiB per 10 min; after the load %.1f MiB\n", idle / 1024, r[w], r[n], max, slope, a
    }' "$work/samples.txt"
python3 - "$work/load.json" <<'PY' || true
import json, sys
r = json.load(open(sys.argv[1]))
for kind in ("rtmp", "llhls", "hls", "srt", "whep"):
    v = r.get(kind)
    if isinstance(v, dict):
        print(f"{kind}: {v['viewers']} viewers, {v['sustained_without_stall']} without a stall, "
              f"{v['stalls_total']:.0f} stalls, errors: {v['errors']}")
PY
echo "raw samples and reports: $work"
