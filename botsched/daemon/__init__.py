"""The daemon side: server, service rules, scheduler, event hub, store and runners."""
