#!/usr/bin/env bash
# Glass-to-glass WebRTC latency on loopback: Tidecast (WHIP in, WHEP out)
# against a direct browser-to-browser connection, in one headless Chromium.
# Usage: bench/webrtc-latency.sh [seconds, default 20] [runs, default direct,tidecast]
# `bench/webrtc-latency.sh 30 hls,dash` measures LL-HLS (hls.js) and LL-DASH
# (dash.js) from the same WHIP publisher instead.
# Needs what `make test` installs (chromium, node, tests/browser packages).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
seconds="${1:-20}"
runs="${2:-direct,tidecast}"
cd "$root"
./scripts/install-deps.sh test >/dev/null
cargo build --release --bin tidecast
data="$(mktemp -d)"
log="$data/server.log"
./target/release/tidecast serve --data-dir "$data/store" \
    --http-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --rtmp-listen 127.0.0.1:0 --srt-listen 127.0.0.1:0 \
    --webrtc-bind 127.0.0.1 --webrtc-udp-port 0 --webrtc-tcp-port 0 --log info >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 100); do
    http="$(grep -o 'http_addr=[0-9.:]*' "$log" | head -n1 | cut -d= -f2 || true)"
    [ -n "$http" ] && break
    sleep 0.1
done
[ -n "$http" ] || { cat "$log"; echo "the server did not start" >&2; exit 1; }
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), chromium $(chromium --version 2>/dev/null | awk '{print $2}')"
node bench/webrtc-latency.mjs "http://$http" "$seconds" "$runs"
