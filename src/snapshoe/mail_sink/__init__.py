"""The mail sink: a real SMTP server (aiosmtpd) that keeps what it receives in memory, with a
small HTTP API to read it back (dev and tests only)."""
