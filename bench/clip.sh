#!/usr/bin/env bash
# Makes the benchmark clip once and prints its path: 720p30 H.264 at
# ~3 Mbit/s (2 s GOP) plus AAC, 20 s, which publishers loop. bench/.clip is
# ignored by git. Used by compare.sh and soak.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
clip="$root/bench/.clip/clip-720p-3m.flv"
if [ ! -s "$clip" ]; then
    mkdir -p "$(dirname "$clip")"
    ffmpeg -hide_banner -loglevel error -y \
        -f lavfi -i "testsrc2=size=1280x720:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
        -t 20 -c:v libx264 -preset veryfast -profile:v high -pix_fmt yuv420p \
        -b:v 3000k -minrate 3000k -maxrate 3000k -bufsize 3000k -g 60 -keyint_min 60 -sc_threshold 0 \
        -c:a aac -b:a 128k -f flv "$clip"
fi
echo "$clip"
