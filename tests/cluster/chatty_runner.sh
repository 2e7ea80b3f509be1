#!/bin/sh
# A command runner that talks (tests/cluster/test_any_agent.py): a line on stdout and one on
# stderr at start and after the join, tagged with $AGENT_TAG, so `botsched logs` on another
# agent can be checked; on "join" it reports joined_recording, stays $HOLD_S s, exits 0.
echo "hello from $AGENT_TAG for $BOTSCHED_BOT_ID"
echo "warming up on $AGENT_TAG" >&2
while IFS= read -r line; do
    if [ "$line" = "join" ]; then
        echo "state joined_recording"
        echo "in the meeting on $AGENT_TAG"
        sleep "${HOLD_S:-1}"
        echo "bye from $AGENT_TAG" >&2
        exit 0
    fi
done
exit 0
