"""The client side's link to the daemon: connecting, autostart, start/stop, the systemd unit."""
