"""The error a request gets: an HTTP status and one line, answered as {"error": "..."}."""


class ServeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message
