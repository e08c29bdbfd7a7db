"""Speaking to registries with every wait bounded, and resolving an image reference to its
manifest digest by the registry's HTTP API: one HEAD request (two with an anonymous token), no
engine, no pull. Dagger-free.

Every request has a connect and a read timeout and is retried a bounded number of times when
the failure is a passing one (a refused or dropped connection, a timeout, 429 or 5xx), with a
short backoff and any Retry-After capped: a registry that accepts connections and never
answers fails in about ``2 * READ_TIMEOUT`` seconds, a closed port in about two, never more
than ``WORST_CASE`` seconds a request. The one exception is the request that commits an
uploaded blob: its wait grows with the blob (``commit_timeout``) and it is never sent twice.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pipeline.core.errors import PipelineError

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterator, Sequence

    import requests
    from urllib3.util.retry import Retry

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K", bound="Hashable")
V = TypeVar("V")

DOCKER_HUB = "registry-1.docker.io"
MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)
CONNECT_TIMEOUT = 5.0  # seconds to open a connection (TCP and TLS)
READ_TIMEOUT = 10.0  # seconds of silence from a connected registry before giving up
ATTEMPTS = 3  # at most, per request
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF_MAX = 4.0  # seconds between attempts, at most (Retry-After included)
WORST_CASE = ATTEMPTS * (CONNECT_TIMEOUT + READ_TIMEOUT) + (ATTEMPTS - 1) * BACKOFF_MAX
# A registry answers the last request of a blob's upload once it has committed the blob, which
# on object storage is a copy of it (S3: a multi-part copy, seconds a GB; a 5 GB layer can take
# minutes). That answer is waited for READ_TIMEOUT plus a second for each COMMIT_RATE bytes.
COMMIT_RATE = 16 * 2**20
OK, UNAUTHORIZED = 200, 401
REQUESTS_AT_ONCE = 8  # a release's or an image's registry requests side by side


def side_by_side(
    work: Callable[[T], R],
    items: Sequence[T],
    at_once: int = REQUESTS_AT_ONCE,
    name: str = "registry",
) -> list[R]:
    """``work`` of each item, up to ``at_once`` at a time in threads named ``name``, in the
    items' order; the first failure raised once every item's work has ended. A registry's
    round trips then wait for the registry together, not one after another."""
    if len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(at_once, thread_name_prefix=name) as pool:
        return list(pool.map(work, items))


class KeyedLocks(Generic[K]):
    """A lock for each key, made when first asked for: work on one key runs one thread at a
    time, work on different keys side by side. Two uploads of one blob to one repository must
    never overlap: distribution rewrites a repository's link to a blob in place at each upload
    of it, and a manifest it checks meanwhile reads an empty link and is refused (400 digest
    invalid)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[K, threading.Lock] = {}

    @contextlib.contextmanager
    def held(self, key: K) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield


class Once(Generic[K, V]):
    """What ``make`` gives for each key, made once however many threads ask at once: the first
    asker makes it while the others wait for it. A ``make`` that raised made nothing; the next
    asker tries again."""

    def __init__(self) -> None:
        self._locks: KeyedLocks[K] = KeyedLocks()
        self._made: dict[K, V] = {}

    def get(self, key: K, make: Callable[[], V]) -> V:
        with self._locks.held(key):
            if key not in self._made:
                self._made[key] = make()
            return self._made[key]


class RegistryError(PipelineError):
    """The registry refused, failed or did not answer a request; says which and what to do.
    Exit status 1: the registry, not the command line, is at fault."""

    exit_code = 1


class UnansweredError(RegistryError):
    """A request that got no answer: no connection, a dropped one, or silence."""


def commit_timeout(size: int) -> tuple[float, float]:
    """The connect and read timeouts of the request that commits a blob of ``size`` bytes."""
    return CONNECT_TIMEOUT, READ_TIMEOUT + size / COMMIT_RATE


def retry_policy(resend: bool = True) -> Retry:
    """urllib3's retries for one request: passing failures only, at most ``ATTEMPTS``. Without
    ``resend``, a request that reached the registry is never sent again (only a connection
    that could not be opened is tried again): for a blob upload's last request, which the
    registry's commit consumes, whatever its answer."""
    from urllib3.util.retry import Retry

    again = ATTEMPTS - 1 if resend else 0
    return Retry(
        total=ATTEMPTS - 1,
        connect=ATTEMPTS - 1,
        read=min(again, 1),  # a registry that went silent once is likely to again: one more try
        status=again,
        other=again,
        allowed_methods=None,  # registry writes are by digest or tag: safe to repeat
        status_forcelist=RETRY_STATUSES if resend else frozenset(),
        backoff_factor=0.5,
        backoff_max=BACKOFF_MAX,
        retry_after_max=int(BACKOFF_MAX),
        raise_on_status=False,  # the last answer is the caller's to explain
    )


def session(resend: bool = True) -> requests.Session:
    """A requests session whose every request is bounded: timeouts and retries as above
    (``retry_policy``), no cookies kept (some registries take cookies for a browser)."""
    from http.cookiejar import DefaultCookiePolicy

    import requests
    from requests.adapters import HTTPAdapter

    class Bounded(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # noqa: ANN401
            kwargs["timeout"] = kwargs.get("timeout") or (CONNECT_TIMEOUT, READ_TIMEOUT)
            return super().request(*args, **kwargs)

    bounded = Bounded()
    adapter = HTTPAdapter(max_retries=retry_policy(resend))
    bounded.mount("http://", adapter)
    bounded.mount("https://", adapter)
    bounded.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return bounded


def _cause(exc: BaseException) -> BaseException:
    """The lowest failure urllib3 gave up on (requests wraps it in its own errors)."""
    from urllib3.exceptions import MaxRetryError

    seen = exc
    for arg in exc.args:
        if isinstance(arg, MaxRetryError) and arg.reason is not None:
            return arg.reason
        if isinstance(arg, BaseException):
            seen = arg
    return seen


def unreachable(host: str, exc: BaseException) -> UnansweredError:
    """A request that got no answer, as one line naming the registry and the fix."""
    from urllib3.exceptions import (
        ConnectTimeoutError,
        NameResolutionError,
        NewConnectionError,
        ReadTimeoutError,
        SSLError,
    )

    cause = _cause(exc)
    retry = f"{host} is a registry and is reachable from here, or try again later"
    if isinstance(cause, ReadTimeoutError):
        problem = f"accepted the connection but did not answer within {READ_TIMEOUT:g} s, twice"
        fix = f"check that {retry}"
    elif isinstance(cause, NameResolutionError):
        problem = "is not a host name this machine can resolve"
        fix = "check the registry's host name (and the DNS or proxy settings, if it is right)"
    elif isinstance(cause, SSLError):
        problem = "failed the TLS handshake"
        fix = f"check that {host} serves HTTPS with a certificate this machine trusts"
    elif isinstance(cause, NewConnectionError):
        said = "refused the connection" if "refused" in str(cause).lower() else "was unreachable"
        problem = f"{said} ({ATTEMPTS} attempts: {str(cause).rsplit(': ', 1)[-1]})"
        fix = f"check the registry's host and port, and that a registry runs at {host}"
    elif isinstance(cause, ConnectTimeoutError):
        problem = f"could not be reached within {CONNECT_TIMEOUT:g} s ({ATTEMPTS} attempts)"
        fix = f"check that {retry}"
    else:
        problem = f"dropped the connection ({type(cause).__name__}, {ATTEMPTS} attempts)"
        fix = f"check that {retry}"
    return UnansweredError(f"registry {host} {problem}; fix: {fix}")


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, ref: str) -> Reference:
        name, _, digest = ref.partition("@")
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, rest
        else:
            registry, path = "docker.io", name
            if "/" not in path:
                path = f"library/{path}"
        tag = None
        if ":" in path.rsplit("/", 1)[-1]:
            path, tag = path.rsplit(":", 1)
        if not digest and not tag:
            tag = "latest"
        return cls(registry, path, tag, digest or None)

    @property
    def endpoint(self) -> str:
        return endpoint(self.registry)

    @property
    def reference(self) -> str:
        """The digest when there is one, else the tag: what the manifest is asked by."""
        return self.digest or self.tag or "latest"


def is_local(host: str) -> bool:
    """A loopback registry, spoken to over plain HTTP as Docker and BuildKit do."""
    return re.match(r"^(localhost|127\.\d+\.\d+\.\d+)(:\d+)?$", host) is not None


def endpoint(host: str) -> str:
    """Where a registry host answers: https, or http on loopback; Docker Hub by its API host."""
    host = DOCKER_HUB if host == "docker.io" else host
    return f"{'http' if is_local(host) else 'https'}://{host}"


def _bearer(http: requests.Session, challenge: str) -> str | None:
    """An anonymous pull token for a 'Bearer realm=...' challenge."""
    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    realm = params.pop("realm", None)
    if not challenge.lower().startswith("bearer") or realm is None:
        return None
    response = http.get(realm, params=params)
    if response.status_code != OK:
        return None
    body = json.loads(response.content)
    token = body.get("token") or body.get("access_token")
    return str(token) if token else None


def resolve(ref: str) -> str | None:
    """``ref`` pinned to its manifest digest (``name@sha256:...``), or None when the registry
    cannot say (offline, private, unknown, silent): the caller then treats the base as
    unknown. Bounded like every registry request."""
    import requests

    parsed = Reference.parse(ref)
    if parsed.digest:
        return ref
    name = ref.partition("@")[0].rsplit(":", 1)[0] if parsed.tag else ref
    url = f"{parsed.endpoint}/v2/{parsed.repository}/manifests/{parsed.tag}"
    headers = {"Accept": MANIFEST_TYPES}
    try:
        with session() as http:
            response = http.head(url, headers=headers)
            challenge = response.headers.get("WWW-Authenticate", "")
            if response.status_code == UNAUTHORIZED and (token := _bearer(http, challenge)):
                headers["Authorization"] = f"Bearer {token}"
                response = http.head(url, headers=headers)
    except (requests.RequestException, OSError, ValueError):
        return None
    digest = response.headers.get("Docker-Content-Digest")
    return f"{name}@{digest}" if response.status_code == OK and digest else None


def ping(host: str, timeout: float = 3.0) -> tuple[bool, str]:
    """Whether ``host`` answers the registry API (``/v2/``), asked once, not retried: a
    registry that wants credentials answers 401 and is reachable. ``(True, "")`` or
    ``(False, why)``; the answer's status in ``why`` when it is not a registry's."""
    import requests

    try:
        response = requests.get(f"{endpoint(host)}/v2/", timeout=timeout)
    except (requests.RequestException, OSError, ValueError) as exc:
        return False, str(_cause(exc)) or type(exc).__name__
    if response.status_code in (OK, UNAUTHORIZED):
        return True, "credentials needed" if response.status_code == UNAUTHORIZED else ""
    return False, f"/v2/ answered HTTP {response.status_code}"
