"""Domain errors raised by the service layer; the app turns them into JSON 4xx answers."""

from __future__ import annotations


class ServiceError(Exception):
    """An error with an HTTP status and a message that names the problem."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class Invalid(ServiceError):
    status_code = 422


class TooLarge(ServiceError):
    status_code = 413


class UnsupportedMedia(ServiceError):
    status_code = 415


class Unavailable(ServiceError):
    status_code = 503
