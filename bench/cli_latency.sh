#!/usr/bin/env bash
# How fast does the CLI feel? Wall time of `botsched create -q URL --join-at +1h` (and
# `botsched list --json --limit 1`) against a running daemon, measured side by side with
# a bare `python -c pass` of the same interpreter. Target (issue 4): create -q median
# ≤ 5 × python -c pass. The commands run interleaved, one round at a time, so a burst of
# load from the rest of a busy machine hits every command alike.
#
# usage: bench/cli_latency.sh [--runs N] [--json]
#   --runs N   timings per command (default 30)
#   --json     print the results as one JSON object
# Uses hyperfine when it is installed (HYPERFINE=0 to force the built-in loop), else a
# bash loop timed with $EPOCHREALTIME (no fork around the measured command).
# PYTHON=/path/to/python picks the interpreter (default: the repo's .venv, else python3);
# botsched is the entry point next to it.
set -euo pipefail

runs=30
as_json=()
while (($#)); do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --runs=*) runs="${1#*=}"; shift ;;
        --json) as_json=(--json); shift ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
py="${PYTHON:-}"
if [[ -z "$py" ]]; then
    if [[ -x "$repo/.venv/bin/python" ]]; then py="$repo/.venv/bin/python"; else py="$(command -v python3)"; fi
fi
botsched="$(dirname "$py")/botsched"
[[ -x "$botsched" ]] || botsched="$(command -v botsched)" || { echo "error: botsched is not installed next to $py" >&2; exit 2; }

home="$(mktemp -d /tmp/bsbXXXXXX)"
samples="$home/samples.tsv"
export BOTSCHED_HOME="$home" BOTSCHED_NO_AUTOSTART=1
cleanup() {
    trap '' INT TERM
    "$botsched" daemon stop >/dev/null 2>&1 || true
    rm -rf "$home"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$botsched" daemon start >/dev/null
echo "[bench] daemon up in $home; $runs runs per command with $py" >&2

# "python -S -c pass" (no site-packages, so no .pth files such as an editable install's
# finder) is shown for reference: it is what start-up costs before any package is found.
names=("python -c pass" "python -S -c pass" "botsched create -q" "botsched list --json --limit 1")
cmds=(
    "$py -c pass"
    "$py -S -c pass"
    "$botsched create -q https://zoom.us/j/9000000001 --join-at +1h"
    "$botsched list --json --limit 1"
)
# Warm the page cache and the daemon (first imports read .pyc files from disk).
for cmd in "${cmds[@]}"; do $cmd >/dev/null; $cmd >/dev/null; done

if [[ "${HYPERFINE:-1}" != 0 ]] && command -v hyperfine >/dev/null; then
    args=()
    for i in "${!cmds[@]}"; do args+=(-n "${names[$i]}" "${cmds[$i]}"); done
    hyperfine -N --warmup 3 --runs "$runs" --export-json "$home/hyperfine.json" "${args[@]}" >&2
    "$py" "$here/_common.py" samples --title "botsched CLI latency (hyperfine)" --baseline "${names[0]}" \
        --target "${names[2]}=5" --hyperfine "$home/hyperfine.json" "${as_json[@]}"
    exit 0
fi

for ((round = 0; round < runs; round++)); do
    for i in "${!cmds[@]}"; do
        start=$EPOCHREALTIME
        ${cmds[$i]} >/dev/null
        end=$EPOCHREALTIME
        # EPOCHREALTIME is "seconds.micros"; subtract as integer microseconds.
        printf '%s\t%s\n' "${names[$i]}" "$(( (${end/./} - ${start/./}) ))e-6" >>"$samples"
    done
done
"$py" "$here/_common.py" samples --title "botsched CLI latency" --baseline "${names[0]}" \
    --target "${names[2]}=5" "${as_json[@]}" <"$samples"
