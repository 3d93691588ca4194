"""Outbound HTTP on a client's behalf (``webhook_url``, ``audio_url``) without becoming an SSRF
proxy into the operator's network.

A URL is refused unless it is http(s) and every address its host resolves to is public: loopback,
private (RFC 1918, ULA), link-local (where cloud metadata lives: 169.254.169.254, fd00:ec2::254),
carrier-grade NAT, multicast, reserved and unspecified ranges are refused unless an operator
allow-listed the network (``[jobs] allowed_networks``). The check runs after DNS resolution and
the request then goes to the address that was checked (the Host header and TLS SNI keep the
name), so a DNS answer that changes between check and connect (rebinding) cannot slip through.
Redirects are followed by hand, each hop checked the same way.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

import httpx

from stenod.errors import AudioURLError, UnsafeURLError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_REDIRECTS = 5
MAX_URL_CHARS = 2048
_EXTRA_REFUSED: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("100.64.0.0/10"),  # carrier-grade NAT: not "private" to ipaddress, internal in practice
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS metadata over IPv6
    ipaddress.ip_network("192.0.0.0/24"),
)


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_strings(cls, networks: Sequence[str]) -> EgressPolicy:
        """Raises ValueError on a malformed CIDR (a settings error, reported at start-up)."""
        return cls(tuple(ipaddress.ip_network(n, strict=False) for n in networks))

    def address_allowed(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in self.allowed_networks):
            return True
        refused = (
            address.is_loopback or address.is_private or address.is_link_local or address.is_multicast
            or address.is_reserved or address.is_unspecified or any(address in net for net in _EXTRA_REFUSED)
        )
        return not refused


@dataclass(frozen=True, slots=True)
class CheckedURL:
    url: str
    host: str
    address: IPAddress
    """The resolved address the request must go to."""

    def pinned(self) -> tuple[str, dict[str, str], dict[str, object]]:
        """(URL with the address as host, headers, httpx extensions) for a request to exactly the
        checked address with the original Host header and TLS server name."""
        parts = urlsplit(self.url)
        ip = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        netloc = f"{ip}:{parts.port}" if parts.port else ip
        host_header = f"{self.host}:{parts.port}" if parts.port else self.host
        url = parts._replace(netloc=netloc).geturl()
        extensions: dict[str, object] = {"sni_hostname": self.host} if parts.scheme == "https" else {}
        return url, {"Host": host_header}, extensions


def check_url_or_raise(url: str, policy: EgressPolicy, *, param: str) -> CheckedURL:
    """Resolve and check ``url`` (see the module docstring).

    Raises:
        UnsafeURLError: not http(s), no host, credentials in the URL, unresolvable, or resolving
            to a refused address.
    """
    if len(url) > MAX_URL_CHARS:
        raise UnsafeURLError(f"{param} is longer than {MAX_URL_CHARS} characters", param=param)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURLError(f"{param} is not a valid URL", param=param) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeURLError(f"{param} must be an http:// or https:// URL with a host", param=param)
    if parts.username or parts.password:
        raise UnsafeURLError(f"{param} must not contain credentials", param=param)
    host = parts.hostname
    try:
        infos = socket.getaddrinfo(host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeURLError(f"{param}: host {host!r} does not resolve", param=param) from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise UnsafeURLError(f"{param}: host {host!r} does not resolve", param=param)
    refused = [a for a in addresses if not policy.address_allowed(a)]
    if refused:
        raise UnsafeURLError(
            f"{param}: {host!r} resolves to a loopback, private, link-local or otherwise internal address; "
            "refused (an operator can allow a network with [jobs] allowed_networks)",
            param=param,
        )
    return CheckedURL(url=url, host=host, address=addresses[0])


def _client(timeout_s: float) -> httpx.Client:
    # trust_env=False: no proxy from the environment may carry the request somewhere unchecked.
    return httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False, trust_env=False)


def post_json(url: str, body: bytes, headers: dict[str, str], policy: EgressPolicy, *, timeout_s: float,
              param: str = "webhook_url") -> int:
    """POST once to a checked address; redirects are not followed (a webhook answers, not moves).

    Returns the status code. Raises UnsafeURLError, or httpx.HTTPError on transport failures.
    """
    checked = check_url_or_raise(url, policy, param=param)
    pinned_url, host_headers, extensions = checked.pinned()
    with _client(timeout_s) as client:
        response = client.post(pinned_url, content=body, headers={**headers, **host_headers},
                               extensions=extensions)
    return response.status_code


@contextmanager
def _stream_checked(client: httpx.Client, url: str, policy: EgressPolicy, param: str) -> Iterator[httpx.Response]:
    for _ in range(MAX_REDIRECTS + 1):
        checked = check_url_or_raise(url, policy, param=param)
        pinned_url, host_headers, extensions = checked.pinned()
        request = client.build_request("GET", pinned_url, headers=host_headers, extensions=extensions)
        response = client.send(request, stream=True)
        if response.is_redirect and "location" in response.headers:
            location = response.headers["location"]
            response.close()
            url = urljoin(url, location)
            continue
        try:
            yield response
        finally:
            response.close()
        return
    raise AudioURLError(f"{param}: more than {MAX_REDIRECTS} redirects", param=param)


def download_to(url: str, dest: BinaryIO, policy: EgressPolicy, *, max_bytes: int, timeout_s: float,
                param: str = "audio_url") -> int:
    """GET ``url`` into ``dest`` with a size cap and a total time limit; redirects checked per hop.

    Returns the bytes written.

    Raises:
        UnsafeURLError: refused target (first URL or any redirect).
        AudioURLError: non-2xx status, too large, too slow, or a transport error.
    """
    deadline = time.monotonic() + timeout_s
    written = 0
    try:
        with _client(min(timeout_s, 30.0)) as client, _stream_checked(client, url, policy, param) as response:
            if response.status_code // 100 != 2:
                raise AudioURLError(f"{param}: the server answered HTTP {response.status_code}", param=param)
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise AudioURLError(f"{param}: the file is larger than the {max_bytes} byte limit", param=param)
            for chunk in response.iter_bytes(1 << 16):
                written += len(chunk)
                if written > max_bytes:
                    raise AudioURLError(f"{param}: the file is larger than the {max_bytes} byte limit", param=param)
                if time.monotonic() > deadline:
                    raise AudioURLError(f"{param}: download took longer than {timeout_s:g} s", param=param)
                dest.write(chunk)
    except httpx.HTTPError as exc:
        raise AudioURLError(f"{param}: could not download ({type(exc).__name__})", param=param) from exc
    if written == 0:
        raise AudioURLError(f"{param}: the server sent an empty body", param=param)
    return written
