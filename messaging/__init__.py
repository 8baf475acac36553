"""Messaging: envelope, topology, outbox relay, consumer runtime, embedded transport.

Knows no business area: handlers are passed in by consumer.py."""
