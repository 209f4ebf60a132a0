"""Channels: what differs between SMS, WhatsApp, calls and email, each said once.

`adapters` is pure (the engine's shells, the gate and the gateway read it); the transports that
carry a touch out (Twilio for phones, SMTP for email) live with the providers.
"""
