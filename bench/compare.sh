#!/usr/bin/env bash
# Side by side on loopback: Tidecast, nginx with libnginx-mod-rtmp, and xiu,
# one after the other, under the same load from tidecast-load with the same
# clip. Prints a table of ratios (Tidecast / peer) and leaves every raw
# report in the work directory it names.
#
# Usage: bench/compare.sh [servers...]      (default: tidecast nginx xiu)
# Environment: STEP_SECONDS (10), RAMP ("100 200 400 800 1600 3200 6400"),
#              CONNECTIONS (100), NO_INSTALL=1 (peers already installed),
#              TIDECAST_STORE (disk: Tidecast's packaged segments on disk, as
#              nginx's HLS files are; memory: its default store).
#
# Per server:
#   A. a fresh stream: one publisher pushes the clip in real time; the
#      playlist is polled every 20 ms for each new segment's
#      ingest-to-playlist delay; RSS idle and after 12 s with the stream;
#      then 100 RTMP viewers for STEP_SECONDS (server CPU).
#   B. RTMP viewer ramp against a running stream: each step runs
#      STEP_SECONDS; the ramp stops at the first step where a viewer stalls
#      (playout-buffer model) or falls behind. Max viewers at full bitrate
#      per core = the largest sustained step / the server cores it used.
#      Each step also records the generator's own CPU: where server and
#      generator together use 90% of the machine, the report says so (the
#      machine, not the server, is then the limit).
#   C. one cached segment (the newest complete one) fetched back to back
#      over CONNECTIONS keep-alive connections: requests/s, Gbit/s.
#   D. Tidecast only (the peers have no LL-HLS): 50 LL-HLS viewers, part
#      announce delay (run before B: see there).
# Bounded: loopback only, at most 6400 viewers, about 3 minutes a server.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=(tidecast nginx xiu)
step="${STEP_SECONDS:-10}"
ramp="${RAMP:-100 200 400 800 1600 3200 6400}"
export RAMP="$ramp"
connections="${CONNECTIONS:-100}"

[ "${NO_INSTALL:-0}" = 1 ] || BENCH_PEERS="${servers[*]}" ./scripts/install-deps.sh bench
cargo build --release --quiet --bin tidecast
cargo build --release --quiet -p tidecast-bench --bin tidecast-load
load="$root/target/release/tidecast-load"
work="$(mktemp -d /tmp/tidecast-compare.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# The clip every publisher loops (bench/clip.sh makes it once).
clip="$("$root/bench/clip.sh")"

log_cmd() { echo "$*" >>"$work/commands.txt"; }
run_load() { # name args...: one tidecast-load run, its report in $work/$name.json
    local name="$1"
    shift
    log_cmd "tidecast-load $*"
    "$load" "$@" >"$work/$name.json" 2>"$work/$name.err" || { cat "$work/$name.err" >&2; return 1; }
}
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {'d': d}))" "$@"; }
wait_http() { # url: until it answers 200 (bounded)
    for _ in $(seq 1 300); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "no answer from $1" >&2
    return 1
}
wait_tcp() { # port
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    return 1
}
server_pids() { # master pid: it and its children, comma-separated
    local kids
    kids="$(pgrep -P "$1" | paste -sd, || true)"
    echo "$1${kids:+,$kids}"
}

start_tidecast() {
    local dir="$work/tidecast"
    mkdir -p "$dir"
    # Embedded defaults, except the connection cap (1000), which the ramp
    # passes (nginx and xiu run without one), and where packaged segments
    # live: on the same disk as nginx's HLS files (`hls.store = "disk"`),
    # so both serve them from the page cache. TIDECAST_STORE=memory runs
    # the default store instead.
    printf '[rtmp]\nmax_connections = 20000\n[hls]\nstore = "%s"\n' "${TIDECAST_STORE:-disk}" >"$dir/tidecast.toml"
    "$root/target/release/tidecast" serve --config "$dir/tidecast.toml" --data-dir "$dir/data" --log warn \
        --rtmp-listen 127.0.0.1:21935 --http-listen 127.0.0.1:28080 --srt-listen 127.0.0.1:29000 \
        --admin-listen 127.0.0.1:24242 --webrtc-bind 127.0.0.1 --webrtc-udp-port 0 --webrtc-tcp-port 0 \
        >"$dir/server.log" 2>&1 &
    server=$!
    pids+=("$server")
    wait_tcp 21935
    wait_tcp 28080
    publish="rtmp://127.0.0.1:21935/live/bench"
    play="$publish"
    playlist="http://127.0.0.1:28080/hls/bench/video.m3u8"
    version="tidecast $(git -C "$root" rev-parse --short HEAD)"
}

start_nginx() {
    local dir="$work/nginx"
    mkdir -p "$dir/hls" "$dir/logs"
    # nginx-rtmp plays a stream only from the worker its publisher is on, so
    # it runs the usual single worker; CPU is counted per core used anyway.
    # As root, nginx would drop its worker to www-data, which cannot write
    # into this private directory: keep the worker as the invoking user.
    local user=""
    [ "$(id -u)" != 0 ] || user="user root;"
    cat >"$dir/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
$user
worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 16384; }
rtmp {
    server {
        listen 127.0.0.1:22935;
        chunk_size 4096;
        application live {
            live on;
            hls on;
            hls_path $dir/hls;
            hls_fragment 2s;
            hls_playlist_length 30s;
        }
    }
}
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
    server {
        listen 127.0.0.1:28081;
        location /hls/ { alias $dir/hls/; add_header Cache-Control no-cache; }
    }
}
EOF
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" &
    server=$!
    pids+=("$server")
    wait_tcp 22935
    publish="rtmp://127.0.0.1:22935/live/bench"
    play="$publish"
    playlist="http://127.0.0.1:28081/hls/bench.m3u8"
    version="$(nginx -v 2>&1 | cut -d/ -f2) + libnginx-mod-rtmp $(dpkg-query -W -f='${Version}' libnginx-mod-rtmp)"
}

start_xiu() {
    local dir="$work/xiu"
    mkdir -p "$dir"
    # xiu 0.13 binds every interface on the ports given (no address option);
    # the load still targets 127.0.0.1 only.
    # Its flags give RTMP with a one-GOP cache and HLS (no recording).
    (cd "$dir" && exec "$root/bench/.peers/bin/xiu" --rtmp 23935 --hls 28082 --log warn >"$dir/server.log" 2>&1) &
    server=$!
    pids+=("$server")
    wait_tcp 23935
    publish="rtmp://127.0.0.1:23935/live/bench"
    play="$publish"
    playlist="http://127.0.0.1:28082/live/bench/bench.m3u8"
    version="xiu 0.13.0"
}

measure() { # server name
    local s="$1"
    "start_$s"
    echo "== $s ($version)" >&2
    local spids
    spids="$(server_pids "$server")"
    echo "$version" >"$work/$s.version"

    # A. fresh stream: segment delay, RSS, 100 RTMP viewers.
    run_load "$s-A" --server-pid "$spids" --publish "$publish" --clip "$clip" --warmup 12 --seconds "$step" \
        --segment-delay "$playlist" --rtmp "$play" --rtmp-viewers 100 --ramp-ms 1000

    # A publisher for the rest, running until the server stops.
    "$load" --publish "$publish" --clip "$clip" --warmup 0 --seconds 600 >/dev/null 2>&1 &
    local pub=$!
    pids+=("$pub")
    wait_http "$playlist"

    # D. LL-HLS, Tidecast only. Before the ramp: a ramp that saturates the
    # machine also delays the publisher, and the announce delay is measured
    # against the media's wall-clock time.
    if [ "$s" = tidecast ]; then
        run_load "$s-D" --server-pid "$spids" --warmup 0 --seconds "$step" --llhls "$playlist" --llhls-viewers 50
    fi

    # B. ramp.
    for n in $ramp; do
        run_load "$s-B-$n" --server-pid "$spids" --warmup 0 --seconds "$step" --rtmp "$play" --rtmp-viewers "$n" \
            --ramp-ms 2000
        local ok
        ok="$(json "$work/$s-B-$n.json" "d['rtmp']['sustained_without_stall']")"
        echo "   $n RTMP viewers: $ok sustained, server $(json "$work/$s-B-$n.json" "round(d['server']['cores'], 3)") cores" >&2
        [ "$ok" -eq "$n" ] || break
    done

    # C. the newest complete segment, back to back.
    local seg
    seg="$(curl -sf "$playlist" | grep -v '^#' | grep -v '^$' | tail -n1)"
    case "$seg" in http*) ;; /*) seg="${playlist%%/hls/*}$seg" ;; *) seg="${playlist%/*}/$seg" ;; esac
    [ "$s" != nginx ] || seg="${seg/\/hls\/hls\//\/hls\/}"
    run_load "$s-C" --server-pid "$spids" --warmup 0 --seconds "$step" --get "$seg" --connections "$connections"
    echo "   segment $seg: $(json "$work/$s-C.json" "round(d['get']['requests_per_second'])") req/s" >&2

    kill "$pub" "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
}

for s in "${servers[@]}"; do measure "$s"; done

{
    echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
    echo "clip: $(json "$work/${servers[0]}-A.json" "d['clip']")"
} >"$work/machine.txt"
python3 "$root/bench/compare-report.py" "$work" "${servers[@]}"
echo "raw reports and the commands run: $work" >&2
