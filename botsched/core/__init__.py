"""The pure core: stdlib only, shared by both sides (errors, states, protocol, rules, time)."""
