"""User notifications: stored, delivered live as ``user:notification``, and sent
through the channels the user enabled (email, webhook)."""
