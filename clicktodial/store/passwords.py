"""
Secrets: Argon2id web password hashes, SIP digest HA1s, API tokens.

Argon2id hashing is deliberately slow (about 0.1-0.2 s with argon2-cffi's
defaults), so :class:`PasswordHashing` runs it on a dedicated thread pool, never on
the reactor thread. argon2-cffi releases the GIL while hashing, so a pool of
one thread per core hashes that many passwords in parallel.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Sequence

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from clicktodial.store.values import SipCredentials


def sip_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """
    The digest ``HA1 = H(username ":" realm ":" password)`` in lower-case
    hex (RFC 2617 §3.2.2.2; RFC 7616 §3.4.2 and RFC 8760 for SHA-256).

    :param algorithm: ``"MD5"`` or ``"SHA-256"``.
    """
    names = {"MD5": "md5", "SHA-256": "sha256"}
    try:
        name = names[algorithm.upper()]
    except KeyError:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}") from None
    data = f"{username}:{realm}:{password}".encode()
    return hashlib.new(name, data).hexdigest()


def sip_credentials(username: str, realm: str, password: str) -> SipCredentials:
    """Both HA1s of a SIP secret, as stored."""
    return SipCredentials(
        ha1_md5=sip_ha1(username, realm, password, "MD5"),
        ha1_sha256=sip_ha1(username, realm, password, "SHA-256"),
    )


def generate_sip_secret() -> str:
    """
    A random SIP secret for users who were not given one: 24 random bytes
    (192 bits), URL-safe base64, easy to paste into a phone's settings.
    """
    return secrets.token_urlsafe(24)


#: API tokens start with this, so a leaked one is recognisable in logs and
#: by secret scanners.
TOKEN_PREFIX = "ctd_"


def generate_token() -> str:
    """A new API token: the prefix and 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """
    The SHA-256 (hex) a token is stored as. A fast hash is enough: tokens
    are 256-bit random strings, so they cannot be guessed from the digest.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def token_id_of_digest(digest: str) -> str:
    """The public id of a token: the first 16 hex digits of its digest."""
    return digest[:16]


def default_hash_pool() -> ThreadPool:
    """A thread pool for password hashing: one thread per core."""
    return ThreadPool(
        minthreads=0, maxthreads=os.cpu_count() or 2, name="clicktodial-password-hash"
    )


class PasswordHashing:
    """
    Argon2id hashing and verification on a dedicated thread pool.

    :param reactor: delivers the results back to the reactor thread.
    :param pool: the pool the hashing runs on; see :func:`default_hash_pool`.
    :param hasher: the argon2-cffi hasher; its defaults (RFC 9106's
        second recommended profile) unless given.
    """

    def __init__(
        self, reactor: IReactorFromThreads, pool: ThreadPool, hasher: PasswordHasher | None = None
    ) -> None:
        self._reactor = reactor
        self._pool = pool
        self._hasher = hasher if hasher is not None else PasswordHasher()
        self._dummy_hash: str | None = None

    def start(self) -> None:
        """Start the thread pool."""
        self._pool.start()

    def stop(self) -> None:
        """Stop the thread pool (waits for running hashes)."""
        self._pool.stop()

    def hash(self, password: str) -> Deferred[str]:
        """Fires with the Argon2id hash of ``password`` (a PHC string)."""
        return deferToThreadPool(self._reactor, self._pool, self._hasher.hash, password)

    def hash_many(self, passwords: Sequence[str]) -> Deferred[list[str]]:
        """
        Fires with the hashes of ``passwords``, in order. Each is a separate
        job, so the pool's threads hash several at once.
        """
        jobs = [self.hash(password) for password in passwords]

        async def gather() -> list[str]:
            try:
                return await defer.gatherResults(jobs, consumeErrors=True)
            except defer.FirstError as e:
                # Report the hashing error itself, not the wrapper.
                e.subFailure.raiseException()
                raise  # not reached: raiseException always raises

        return Deferred.fromCoroutine(gather())

    def verify(self, password_hash: str | None, password: str) -> Deferred[bool]:
        """
        Fires with whether ``password`` matches ``password_hash``. With
        ``password_hash`` ``None`` (unknown user, or no web password) it still
        spends the time of one verification, against a dummy hash, and
        fires with ``False``: response time must not tell which users exist.
        """
        return deferToThreadPool(
            self._reactor, self._pool, self._verify_blocking, password_hash, password
        )

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether a hash was made with other parameters than ours."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def _verify_blocking(self, password_hash: str | None, password: str) -> bool:
        if password_hash is None:
            if self._dummy_hash is None:
                self._dummy_hash = self._hasher.hash(secrets.token_hex(8))
            password_hash, password = self._dummy_hash, ""
            expected = False
        else:
            expected = True
        try:
            self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        return expected
