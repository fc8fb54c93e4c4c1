"""Infrastructure errors worth a retry with backoff: the database, Redis or the broker unreachable."""

from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

TRANSIENT = (
    RedisConnectionError,
    RedisTimeoutError,
    OperationalError,
    DatabaseOperationalError,
    DatabaseInterfaceError,
    ConnectionError,
    TimeoutError,
)
