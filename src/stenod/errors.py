"""stenod's domain exceptions. Each carries the HTTP status the API maps it to, so the mapping lives
in one place and the CLI can print the same one-line message.

StenodError
├── InputError (400)
│   ├── UnsupportedParameterError (400)
│   ├── UnknownLanguageError (400)
│   ├── AudioDecodeError (415)  not audio, truncated, corrupt
│   ├── EmptyAudioError (400)   zero bytes or zero samples
│   ├── AudioTooLongError (413)
│   ├── UploadTooLargeError (413)
│   ├── DiarizationInputError (400)
│   ├── UnsafeURLError (400)         webhook_url/audio_url on a refused network, or not http(s)
│   ├── AudioURLError (400)          audio_url could not be fetched (status, size, time)
│   └── ConfigFileError (400)   the TOML settings file is missing or invalid (file:line)
├── JobNotFoundError (404)           also another tenant's job
├── JobStateError (409)              result before completion; idempotency key reused differently
├── ModelNotFoundError (404)
├── ModelLoadError (500)
├── QueueFullError (429)
│   └── RateLimitedError (429)    a key's requests/minute, audio minutes/hour or concurrency
├── DeadlineExceededError (408)
├── ClientDisconnectedError (499)
├── ServiceUnavailableError (503)  loading, draining
│   ├── StorageUnavailableError (503)  the blob store (S3) cannot be reached; retry later
│   └── DatabaseUnavailableError (503) the job/key database cannot be reached; retry later
├── AuthenticationError (401)
└── PermissionDeniedError (403)    a valid key without the right (admin routes)
"""

from __future__ import annotations


class StenodError(Exception):
    status_code: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InputError(StenodError):
    status_code = 400
    error_type = "invalid_request_error"


class UnsupportedParameterError(InputError):
    code = "invalid_parameter"


class UnknownLanguageError(InputError):
    code = "unknown_language"

    def __init__(self, language: str) -> None:
        super().__init__(
            f"unknown language code {language!r}; use an ISO-639-1 code such as 'en' or 'auto'",
            param="language",
        )


class AudioDecodeError(InputError):
    status_code = 415
    code = "invalid_audio"


class EmptyAudioError(InputError):
    code = "empty_audio"


class AudioTooLongError(InputError):
    status_code = 413
    code = "audio_too_long"


class UploadTooLargeError(InputError):
    status_code = 413
    code = "file_too_large"


class DiarizationInputError(InputError):
    code = "diarization_needs_stereo"


class ConfigFileError(InputError):
    """The TOML settings file cannot be read or parsed; the message names the file (and line)."""

    code = "invalid_config"


class ModelNotFoundError(StenodError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class ModelLoadError(StenodError):
    status_code = 500
    code = "model_load_failed"


class QueueFullError(StenodError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "queue_full"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimitedError(QueueFullError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.headers = headers or {}
        """``X-RateLimit-*`` headers for the refusal."""


class DeadlineExceededError(StenodError):
    status_code = 408
    error_type = "timeout_error"
    code = "deadline_exceeded"


class ClientDisconnectedError(StenodError):
    status_code = 499
    error_type = "client_closed_request"
    code = "client_disconnected"


class ServiceUnavailableError(StenodError):
    status_code = 503
    error_type = "service_unavailable"
    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StorageUnavailableError(ServiceUnavailableError):
    """A transient blob store failure (connection refused or timed out, a 5xx, throttling):
    the API answers 503 with Retry-After, workers hand the job back and retry."""

    code = "storage_unavailable"


class DatabaseUnavailableError(ServiceUnavailableError):
    """The job/key database cannot be reached (connection refused, dropped, failover): the API
    answers 503 with Retry-After instead of a 500, and nothing was half-written (every write is
    one transaction)."""

    code = "database_unavailable"


class AuthenticationError(StenodError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(StenodError):
    status_code = 403
    error_type = "permission_error"
    code = "permission_denied"


class UnsafeURLError(InputError):
    code = "url_not_allowed"


class AudioURLError(InputError):
    code = "audio_url_unavailable"


class JobNotFoundError(StenodError):
    status_code = 404
    error_type = "not_found_error"
    code = "job_not_found"


class JobStateError(StenodError):
    status_code = 409
    error_type = "invalid_request_error"
    code = "job_not_completed"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, param=param)
        if code is not None:
            self.code = code
