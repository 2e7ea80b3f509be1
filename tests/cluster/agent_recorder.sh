#!/bin/sh
# A command runner for the two-agent test (runner.command = ["/bin/sh", this file]). Like
# tests/reliability/recorder.sh, it appends one line per start and per stdin line to
# $REC_DIR/$BOTSCHED_BOT_ID.log (one write each, O_APPEND), each tagged with $AGENT_TAG (the
# agent that started it), so a second runner or a second "join" for one bot shows up, and
# whose. On "join" it reports joined_recording, stays in the meeting $HOLD_S seconds, and
# exits 0 (the bot ends); with HOLD_S=until-leave it stays until it reads "leave".
rec="$REC_DIR/$BOTSCHED_BOT_ID.log"
echo "start $$ $AGENT_TAG" >> "$rec"
while IFS= read -r line; do
    echo "line $$ $AGENT_TAG $line" >> "$rec"
    if [ "$line" = "join" ]; then
        echo "state joined_recording"
        if [ "${HOLD_S:-2}" != "until-leave" ]; then
            sleep "${HOLD_S:-2}"
            exit 0
        fi
    fi
    if [ "$line" = "leave" ]; then
        exit 0
    fi
done
echo "eof $$ $AGENT_TAG" >> "$rec"
exit 0
