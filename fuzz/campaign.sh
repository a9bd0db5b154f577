#!/usr/bin/env bash
# The long campaign: each target in turn (one process at a time), niced, for the
# minutes given, keeping the growing corpus in fuzz/work/<target>/ (not committed),
# crash inputs in fuzz/artifacts/<target>/ and the libFuzzer log in fuzz/logs/<target>.log.
# A target that crashes is restarted (at most 3 times) until its minutes are used.
#   nohup bash fuzz/campaign.sh "h2_raw:16 h2_frames:20 hpack:10 grpc_messages:6 grpc_request:8" &
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PLAN=${1:-"h2_raw:16 h2_frames:20 hpack:10 grpc_messages:6 grpc_request:8"}
for item in $PLAN; do
    target=${item%%:*}
    minutes=${item##*:}
    mkdir -p "fuzz/work/$target" "fuzz/artifacts/$target" fuzz/logs
    log="fuzz/logs/$target.log"
    end=$(( $(date +%s) + minutes * 60 ))
    restarts=0
    echo "=== $target: $minutes min from $(date -u +%H:%M:%S)" >>"$log"
    while :; do
        left=$(( end - $(date +%s) ))
        [ "$left" -gt 10 ] || break
        nice -n 19 "$PY" fuzz/run.py "$target" -max_total_time="$left" -timeout=30 -max_len=8192 \
            -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/" \
            "fuzz/work/$target" "fuzz/corpus/$target" >>"$log" 2>&1
        rc=$?
        echo "=== $target: exit $rc at $(date -u +%H:%M:%S)" >>"$log"
        [ "$rc" -ne 0 ] || break
        restarts=$(( restarts + 1 ))
        [ "$restarts" -le 3 ] || break
    done
done
echo "=== campaign done $(date -u +%H:%M:%S)" >>fuzz/logs/campaign.log
