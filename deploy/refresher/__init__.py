"""The function EventBridge invokes when the server's task starts: it refreshes the record."""
