#!/usr/bin/env bash
# An example botsched runner (SPEC §6, config `runner.kind = "command"`).
#
# botsched starts this at stage time (stage_lead before join_at) with the bot in the
# environment, writes `join` on stdin at join_at, `leave` on `botsched leave`, and reads
# `state NAME [detail]` lines from stdout. Exit 0 = ended, anything else = fatal_error.
#
# This one drives a hosted bot API with curl. Configure it with, e.g.:
#   botsched config set runner.kind command
#   botsched config set runner.command '["/path/to/examples/curl_bot_runner.sh"]'
#   botsched config set runner.env.BOT_API_URL https://bots.example.com/v1   # hypothetical API
#   botsched config set runner.env.BOT_API_TOKEN ...                         # never logged; shown as ***
# With BOT_API_URL unset it runs as a dry run (prints the requests it would make).
set -euo pipefail

api() {  # api METHOD PATH [JSON]
  if [[ -z "${BOT_API_URL:-}" ]]; then
    echo "dry run: $1 $2 ${3:-}" >&2
    [[ "$1" == POST && "$2" == /bots ]] && echo '{"id":"dry-run"}'
    return 0
  fi
  curl --fail --silent --show-error -X "$1" "$BOT_API_URL$2" \
    -H "Authorization: Bearer ${BOT_API_TOKEN:-}" -H 'Content-Type: application/json' ${3:+--data "$3"}
}

echo "staged $BOTSCHED_BOT_ID for $BOTSCHED_MEETING_URL at $BOTSCHED_JOIN_AT" >&2
# Resources are allocated now (stage time): e.g. warm a browser, open an API session.

read -r command || exit 1          # EOF before `join`: botsched went away; give up
[[ "$command" == join ]] || exit 1

payload=$(printf '{"meeting_url":"%s","bot_name":"%s"}' "$BOTSCHED_MEETING_URL" "$BOTSCHED_BOT_NAME")
remote_id=$(api POST /bots "$payload" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
echo "state joined_recording remote bot $remote_id"

# Stay in the meeting until botsched says leave (or stdin closes).
while read -r command; do
  [[ "$command" == leave ]] && break
done
echo "state leaving"
api POST "/bots/$remote_id/leave" >/dev/null
echo "state post_processing uploading the recording"
exit 0
