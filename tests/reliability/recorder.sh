#!/bin/sh
# A command runner for the crash-consistency test (runner.command = ["/bin/sh", this file]).
# It appends one line per start and per stdin line to $REC_DIR/$BOTSCHED_BOT_ID.log (one
# write each, O_APPEND), so a second runner for one bot, or a second "join", shows up.
# On "join" it reports joined_recording, stays a moment, and exits 0 (the bot ends).
rec="$REC_DIR/$BOTSCHED_BOT_ID.log"
echo "start $$" >> "$rec"
while IFS= read -r line; do
    echo "line $$ $line" >> "$rec"
    if [ "$line" = "join" ]; then
        echo "state joined_recording"
        sleep 0.3
        exit 0
    fi
    if [ "$line" = "leave" ]; then
        exit 0
    fi
done
echo "eof $$" >> "$rec"
exit 0
