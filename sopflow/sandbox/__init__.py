"""The sandbox phone network (a Twilio-compatible server)."""
