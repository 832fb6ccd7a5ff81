"""Notifications: events from the history, delivered to chat robots and webhooks."""
