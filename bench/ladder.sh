#!/usr/bin/env bash
# make bench-ladder: the CPU a three-rung ladder costs in Tidecast against
# the ffmpeg CLI making the same ladder from the same input in the same run
# (one decode, split, bilinear scale, x264 with the same settings), and the
# delay the ladder adds to LL-HLS.
#
# Input: bench/.clip/clip-720p-3m.flv (720p30 H.264 3 Mbit/s + AAC), looped
# in real time by ffmpeg over RTMP. Rungs: 480p/1400k, 360p/800k,
# 240p/400k, x264 veryfast, tune zerolatency, no B-frames.
#
# Tidecast's ladder CPU = server CPU with the ladder - server CPU without
# it (same publish); ffmpeg's = the whole ffmpeg process reading the clip
# (decode included). The audio bridge's cost is measured the same way
# (AAC to Opus, no ladder). CPU is read from /proc/PID/stat over SECONDS after a
# WARMUP, in cores (1.0 = one core busy). Environment: SECONDS_MEASURED
# [30], WARMUP [8], NO_BUILD=1.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
measure="${SECONDS_MEASURED:-30}"
warmup="${WARMUP:-8}"
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release --quiet --bin tidecast
bin="$root/target/release/tidecast"
clip="$("$root/bench/clip.sh")"
work="$(mktemp -d /tmp/tidecast-ladder.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
hz=$(getconf CLK_TCK)

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# cpu PID: cores used by PID over $measure seconds, after $warmup.
cpu() {
    sleep "$warmup"
    local a b
    a=$(ticks "$1")
    sleep "$measure"
    b=$(ticks "$1")
    awk -v a="$a" -v b="$b" -v hz="$hz" -v s="$measure" 'BEGIN { printf "%.3f", (b - a) / hz / s }'
}

X264="-preset veryfast -tune zerolatency -bf 0 -sc_threshold 0"
serve() { # config-text: starts a server, sets $server and $rtmp, $http
    local dir="$work/$1"
    mkdir -p "$dir/data"
    printf '%b' "$2" >"$dir/tidecast.toml"
    "$bin" serve --config "$dir/tidecast.toml" --data-dir "$dir/data" --log warn \
        --rtmp-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --srt-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        --webrtc-bind 127.0.0.1 --webrtc-udp-port 0 --webrtc-tcp-port 0 >"$dir/stdout" 2>"$dir/log" &
    server=$!
    pids+=("$server")
    for _ in $(seq 100); do grep -q '^listening ' "$dir/stdout" 2>/dev/null && break; sleep 0.1; done
    rtmp=$(tr ' ' '\n' <"$dir/stdout" | sed -n 's/^rtmp=//p')
    http=$(tr ' ' '\n' <"$dir/stdout" | sed -n 's/^http=//p')
}
publish() { # url
    # Killed with its server: its broken-pipe complaint is noise.
    ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$clip" -c copy -f flv "$1" 2>/dev/null &
    pids+=("$!")
}

base='[transcode]\naudio_bridge = false\n'
profile='default_profile = "bench"\n[transcode.profiles.bench]\nhw = "off"\npreset = "veryfast"\nrungs = [{ height = 480, bitrate_kbps = 1400 }, { height = 360, bitrate_kbps = 800 }, { height = 240, bitrate_kbps = 400 }]\n'

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

serve plain "$base"
publish "rtmp://$rtmp/live/cam"
plain=$(cpu "$server")
kill "$server"

serve bridge '[transcode]\naudio_bridge = true\n'
publish "rtmp://$rtmp/live/cam"
bridged=$(cpu "$server")
kill "$server"

serve ladder "$base$profile"
publish "rtmp://$rtmp/live/cam"
with=$(cpu "$server")
# The delay the ladder adds: when the same part shows up in the source's
# and in the smallest rung's playlist (blocking reloads, asked together).
delays=()
for _ in 1 2 3 4 5; do
    pl=$(curl -sf "http://$http/hls/cam/video.m3u8" || true)
    msn=$(printf '%s\n' "$pl" | sed -n 's/^#EXT-X-PRELOAD-HINT:TYPE=PART.*-\([0-9]*\)\.\([0-9]*\)\.m4s.*/\1 \2/p' | head -1)
    [ -n "$msn" ] || { sleep 1; continue; }
    set -- $msn
    q="_HLS_msn=$1&_HLS_part=$2"
    t0=$(date +%s%N)
    curl -sf -o /dev/null "http://$http/hls/cam/video.m3u8?$q" && t1=$(date +%s%N)
    curl -sf -o /dev/null "http://$http/hls/cam/video3.m3u8?$q" && t2=$(date +%s%N)
    delays+=("$(( (t2 - t1) / 1000000 ))")
done
kill "$server"

ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$clip" -filter_complex \
    "[0:v]split=3[a][b][c];[a]scale=854:480:flags=bilinear[o1];[b]scale=640:360:flags=bilinear[o2];[c]scale=426:240:flags=bilinear[o3]" \
    -map "[o1]" -c:v libx264 $X264 -b:v 1400k -maxrate 1400k -bufsize 1400k \
    -map "[o2]" -c:v libx264 $X264 -b:v 800k -maxrate 800k -bufsize 800k \
    -map "[o3]" -c:v libx264 $X264 -b:v 400k -maxrate 400k -bufsize 400k \
    -f null - &
cli=$!
pids+=("$cli")
ffcpu=$(cpu "$cli")
kill "$cli"

ladder=$(awk -v a="$with" -v b="$plain" 'BEGIN { printf "%.3f", a - b }')
echo "tidecast without a ladder: $plain cores; with: $with cores; the ladder: $ladder cores"
echo "ffmpeg CLI, same ladder: $ffcpu cores"
awk -v a="$bridged" -v b="$plain" 'BEGIN { printf "audio bridge (AAC to Opus) alone: %.3f cores\n", a - b }'
awk -v l="$ladder" -v f="$ffcpu" 'BEGIN { printf "ratio tidecast/ffmpeg: %.2fx; ladders per core: %.1f\n", l / f, 1 / l }'
echo "smallest rung's part after the source's (ms, per try): ${delays[*]:-none}"
