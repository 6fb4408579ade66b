"""Listeners, TLS, SASL authentication and the user credential store of the broker."""
