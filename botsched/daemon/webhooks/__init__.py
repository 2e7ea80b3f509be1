"""Webhooks and hooks (SPEC section 8): a durable outbox in the store, a delivery worker
off the join path, Standard Webhooks signing, and local ``[[hooks]]`` commands."""
