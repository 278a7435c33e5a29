"""
What start-up loads that the configuration only names.

Parsing (:mod:`clicktodial.config`) checks the shape of each value and touches nothing
else: ``[calls] ringback = file:PATH`` is a path, ``[web] listen = TYPE:ARGS`` an endpoint
description. Opening the WAV file and finding the endpoint type among the installed
endpoint parser plugins happen here, at start-up, once the configuration is whole and
before anything listens: :func:`clicktodial.service.build_service` runs
:func:`load_named_resources` first, and so does ``clicktodial check-config``. A failure is
the one-line :class:`~clicktodial.config.ConfigError` a parse error would be, naming file,
section and key (``conf/x.ini: [calls] ringback: ...``).

(The ``[KIND:NAME]`` plugin sections are found and checked by their plugins at start-up
too: :mod:`clicktodial.pluginconfig`.)
"""

from __future__ import annotations

from twisted.internet.interfaces import IStreamServerEndpointStringParser
from twisted.plugin import getPlugins

from clicktodial.config import Config, ConfigError

__all__ = ["load_named_resources", "server_endpoint_types"]


def server_endpoint_types() -> list[str]:
    """
    The endpoint types ``serverFromString`` accepts: its built-in parsers and the installed
    :class:`IStreamServerEndpointStringParser` plugins (``tcp6``, ``systemd``, ...).
    """
    plugins = getPlugins(IStreamServerEndpointStringParser)
    return sorted({"tcp", "unix", "ssl"} | {p.prefix.lower() for p in plugins})


def load_named_resources(config: Config) -> None:
    """
    Open the ``[calls] ringback`` WAV file (an 8 kHz mono 16-bit PCM file the ringback
    player can loop) and check that each stream endpoint (``[web] listen``,
    ``[web] metrics_listen``) names a type an installed parser serves.

    :raises ConfigError: naming the configuration file, section and key.
    """
    _load_ringback(config)
    _check_endpoint_types(config)


def _load_ringback(config: Config) -> None:
    ringback = config.calls.ringback
    if not ringback.startswith("file:"):
        return
    from clicktodial.media.codecs import Codec
    from clicktodial.media.tones import wav_file

    try:
        wav_file(ringback[len("file:") :], Codec.PCMU)
    except ValueError as e:  # MediaSourceError: names the file and what is wrong
        raise ConfigError(config.source, str(e), "calls", "ringback") from None


def _check_endpoint_types(config: Config) -> None:
    endpoints = [("listen", config.web.listen), ("metrics_listen", config.web.metrics_listen)]
    types: list[str] | None = None
    for key, endpoint in endpoints:
        if endpoint is None:
            continue
        if types is None:
            types = server_endpoint_types()
        kind = endpoint.partition(":")[0].lower()
        if kind not in types:
            raise ConfigError(
                config.source,
                f"unknown endpoint type {kind!r} in {endpoint!r} (types: {', '.join(types)})",
                "web",
                key,
            )
