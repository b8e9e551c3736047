"""The store (``/``) and the operator console (``/admin``): server-rendered pages that call the
public API through the gateway, as any client does. docs/web.md."""
