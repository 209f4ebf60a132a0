"""Providers that reach people: a protocol, and implementations (loopback now; Twilio and the
Twilio-compatible sandbox come with the Twilio issue)."""
