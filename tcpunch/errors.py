"""The one exception the codecs raise."""


class ProtocolError(ValueError):
    """Bytes that do not form a valid message; the text says what was wrong."""
