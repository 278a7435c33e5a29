"""The INI configuration: schema, shipped files, values, and one-line errors."""

import re
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.logger import LogLevel

from clicktodial import __version__
from clicktodial.config import (
    Config,
    ConfigError,
    HostPort,
    iter_settings,
    load_config,
    parse_config,
    parse_host_port,
    section_names,
)

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
SHIPPED = sorted(CONF_DIR.glob("*.ini"))
MINIMAL = "[sip]\ndomain = 127.0.0.1\n"


def config_error(text: str, filename: str = "x.ini") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, filename)
    message = str(info.value)
    assert "\n" not in message, "a ConfigError is one line"
    assert message.startswith(f"{filename}: "), "a ConfigError starts with the file name"
    return info.value


def with_sip(section_text: str) -> str:
    return MINIMAL + section_text


# --- the shipped files -----------------------------------------------------------------------


def test_conf_directory_has_the_three_shipped_files() -> None:
    assert {p.name for p in SHIPPED} >= {"dev.ini", "prod.ini", "example.ini"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_file_loads(path: Path) -> None:
    assert isinstance(load_config(str(path)), Config)


def test_dev_config_runs_everything_on_loopback_with_sqlite_under_var() -> None:
    config = load_config(str(CONF_DIR / "dev.ini"))
    assert config.sip.domain == "127.0.0.1"
    assert config.sip.listen == HostPort("127.0.0.1", 5060)
    assert config.web.listen == "tcp:8080:interface=127.0.0.1"
    assert config.store.url.get_backend_name() == "sqlite"
    assert config.store.url.database == "var/clicktodial.sqlite"


def test_prod_config_listens_on_all_interfaces_and_uses_postgresql() -> None:
    config = load_config(str(CONF_DIR / "prod.ini"))
    assert config.sip.listen == HostPort("0.0.0.0", 5060)
    assert config.store.url.drivername == "postgresql+psycopg"


def _example_sections() -> dict[str, str]:
    text = (CONF_DIR / "example.ini").read_text()
    parts = re.split(r"^\[([\w:]+)\]\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.parametrize(
    ("section", "key"), [(s, k) for s, k, _ in iter_settings()], ids="{0[0]}.{0[1]}".format
)
def test_example_ini_documents_every_key_in_its_section(section: str, key: str) -> None:
    body = _example_sections().get(section, "")
    assert re.search(rf"^(# )?{key} = ", body, re.M), f"example.ini lacks [{section}] {key}"


def test_example_ini_shows_the_real_default_of_every_key() -> None:
    """Uncommenting every '# key = value' line of example.ini changes nothing."""
    sections = _example_sections()
    keys = {(s, k) for s, k, _ in iter_settings()}
    uncommented = ""
    for section, body in sections.items():
        lines = []
        for line in body.splitlines():
            match = re.fullmatch(r"# (\w+) = (.*)", line)
            if match and (section, match.group(1)) in keys:
                line = line[2:]
            lines.append(line)
        uncommented += f"[{section}]\n" + "\n".join(lines) + "\n"
    assert parse_config(uncommented, "example.ini") == parse_config(MINIMAL, "minimal.ini")


def test_every_setting_has_a_doc_and_a_default_that_parses() -> None:
    for section, key, setting in iter_settings():
        assert setting.doc, f"[{section}] {key} has no doc"
        if setting.default is not None:
            setting.parse(setting.default)


# --- values ----------------------------------------------------------------------------------


def test_defaults_apply_to_absent_keys() -> None:
    config = parse_config(MINIMAL, "x.ini")
    assert config.sip.listen == HostPort("127.0.0.1", 5060)
    assert config.sip.transports == ("udp", "tcp")
    assert (config.sip.t1, config.sip.t2, config.sip.t4) == (0.5, 4.0, 5.0)
    assert config.sip.user_agent == f"clicktodial/{__version__}"
    assert config.web.listen == "tcp:8080:interface=127.0.0.1"
    assert config.store.backend == "sql"
    assert str(config.store.url) == "sqlite:///var/clicktodial.sqlite"
    assert config.log.level == LogLevel.info
    assert config.log.format == "text"
    assert config.log.file is None


def test_config_is_frozen() -> None:
    config = parse_config(MINIMAL, "x.ini")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.sip = config.sip  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.sip.t1 = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5060", HostPort("127.0.0.1", 5060)),
        ("0.0.0.0:5080", HostPort("0.0.0.0", 5080)),
        ("[::1]:5060", HostPort("::1", 5060)),
        ("[::]:0", HostPort("::", 0)),
        ("[2001:db8:0::1]:5061", HostPort("2001:db8::1", 5061)),
    ],
)
def test_sip_listen_is_an_ip_address_and_port(text: str, expected: HostPort) -> None:
    config = parse_config(with_sip(f"listen = {text}\n"), "x.ini")
    assert config.sip.listen == expected


@given(address=st.ip_addresses(), port=st.integers(0, 65535))
def test_host_port_text_round_trips(address: object, port: int) -> None:
    host_port = HostPort(str(address), port)
    assert parse_host_port(str(host_port)) == host_port


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Example.COM", "example.com"),
        ("pbx-1.example.org", "pbx-1.example.org"),
        ("localhost", "localhost"),
        ("192.0.2.7", "192.0.2.7"),
        ("::1", "[::1]"),
        ("[2001:DB8::1]", "[2001:db8::1]"),
    ],
)
def test_sip_domain_is_normalized_as_it_appears_in_sip_uris(text: str, expected: str) -> None:
    assert parse_config(f"[sip]\ndomain = {text}\n", "x.ini").sip.domain == expected


def test_sip_transports_keep_the_given_order_and_ignore_case_and_spaces() -> None:
    tls = "tls_certificate = c.pem\ntls_private_key = k.pem\n"
    config = parse_config(with_sip("transports = TCP ,udp,  tls\n" + tls), "x.ini")
    assert config.sip.transports == ("tcp", "udp", "tls")


def test_sip_tls_needs_a_certificate_and_a_key() -> None:
    error = config_error(with_sip("transports = udp, tls\ntls_certificate = c.pem\n"))
    assert str(error) == "x.ini: [sip] tls_private_key: required when transports lists tls"


def test_sip_timers_may_be_equal() -> None:
    config = parse_config(with_sip("t1 = 2\nt2 = 2\nt4 = 0.25\n"), "x.ini")
    assert (config.sip.t1, config.sip.t2, config.sip.t4) == (2.0, 2.0, 0.25)


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp:8080",
        "tcp:0:interface=127.0.0.1",
        "tcp:port=8080:interface=127.0.0.1",
        "tcp6:8080:interface=\\:\\:1",
        "unix:/run/clicktodial/web.sock",
        "systemd:domain=INET:index=0",
    ],
)
def test_web_listen_accepts_twisted_endpoint_descriptions(endpoint: str) -> None:
    assert parse_config(with_sip(f"[web]\nlisten = {endpoint}\n"), "x.ini").web.listen == endpoint


def test_parsing_checks_the_shape_of_what_start_up_loads() -> None:
    """A ringback file and an endpoint type are not looked up while parsing (start-up does
    it: tests/test_startup.py); their syntax is checked."""
    config = parse_config(
        MINIMAL + "[web]\nlisten = udp:5060\n[calls]\nringback = file:/nonexistent.wav\n",
        "x.ini",
    )
    assert (config.web.listen, config.calls.ringback) == ("udp:5060", "file:/nonexistent.wav")
    error = config_error(MINIMAL + "[calls]\nringback = file:\n")
    assert (error.section, error.key) == ("calls", "ringback")
    error = config_error(MINIMAL + "[web]\nlisten = :8080\n")
    assert (error.section, error.key) == ("web", "listen")


def test_store_url_is_a_sqlalchemy_url_and_relative_sqlite_paths_stay_relative() -> None:
    config = parse_config(with_sip("[store]\nurl = sqlite:///var/test.sqlite\n"), "x.ini")
    assert config.store.url.database == "var/test.sqlite"


def test_postgresql_url_over_the_unix_socket_parses() -> None:
    url = "postgresql+psycopg://postgres@/clicktodial_test?host=/var/run/postgresql"
    config = parse_config(with_sip(f"[store]\nurl = {url}\n"), "x.ini")
    assert config.store.url.database == "clicktodial_test"
    assert config.store.url.query == {"host": "/var/run/postgresql"}


def test_log_settings() -> None:
    config = parse_config(
        with_sip("[log]\nlevel = warn\nformat = json\nfile = /var/log/ctd.log\n"), "x.ini"
    )
    assert (config.log.level, config.log.format, config.log.file) == (
        LogLevel.warn,
        "json",
        "/var/log/ctd.log",
    )


def test_comments_and_key_case_sensitivity() -> None:
    config = parse_config("# comment\n; another\n[sip]\n# listen = 1.2.3.4:1\ndomain = a\n", "x")
    assert config.sip.listen == HostPort("127.0.0.1", 5060)
    error = config_error("[sip]\nDomain = a\n")
    assert (error.section, error.key) == ("sip", "Domain")


# --- errors ----------------------------------------------------------------------------------


def test_missing_file_error_names_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.ini")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}: cannot read the configuration file: No such file or directory"
    )


def test_file_that_is_not_utf8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.ini"
    path.write_bytes(b"[sip]\ndomain = caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value).startswith(f"{path}: not UTF-8 text")


def test_unknown_section_error_names_it_and_lists_the_valid_ones() -> None:
    error = config_error(MINIMAL + "[sipp]\nlisten = 127.0.0.1:5060\n")
    assert str(error) == (
        "x.ini: [sipp]: unknown section (valid sections: "
        + ", ".join(section_names())
        + ", and [KIND:NAME] for a plugin, KIND one of store, location, policy, trunk)"
    )
    assert "sip, web, store, log, registrar" in str(error)


def test_media_rtpengine_section_is_parsed_with_its_defaults() -> None:
    config = parse_config(MINIMAL, "x.ini")
    assert config.media.relay == "off"
    assert config.rtpengine.ng == (HostPort("127.0.0.1", 22222),)
    assert (config.rtpengine.timeout, config.rtpengine.retries) == (1.5, 3)
    assert config.rtpengine.interfaces == () and config.rtpengine.on_failure == "fail"
    config = parse_config(
        MINIMAL + "[media]\nrelay = auto\n[media:rtpengine]\nng = 10.0.0.1:2223, [::1]:2224\n"
        "interfaces = pub, priv\non_failure = unrelayed\n",
        "x.ini",
    )
    assert config.media.relay == "auto"
    assert config.rtpengine.ng == (HostPort("10.0.0.1", 2223), HostPort("::1", 2224))
    assert config.rtpengine.interfaces == ("pub", "priv")
    assert config.rtpengine.on_failure == "unrelayed"


@pytest.mark.parametrize(
    ("key", "value"),
    [("ng", "rtpengine:22222"), ("ng", "127.0.0.1:0"), ("ng", ""), ("timeout", "soon"),
     ("retries", "-1"), ("interfaces", "one"), ("interfaces", "a b, c"), ("on_failure", "maybe"),
     ("nope", "1")],
)
def test_bad_media_rtpengine_values_name_file_section_and_key(key: str, value: str) -> None:
    error = config_error(MINIMAL + f"[media:rtpengine]\n{key} = {value}\n")
    assert (error.filename, error.section, error.key) == ("x.ini", "media:rtpengine", key)


def test_bad_media_relay_names_the_key() -> None:
    error = config_error(MINIMAL + "[media]\nrelay = always\n")
    assert (error.section, error.key) == ("media", "relay")


def test_default_section_is_not_special() -> None:
    """A [DEFAULT] section would silently add keys to every section: it is refused."""
    assert config_error("[DEFAULT]\ndomain = a\n" + MINIMAL).section == "DEFAULT"


def test_unknown_key_error_names_section_key_and_valid_keys() -> None:
    error = config_error(with_sip("listen_port = 5060\n"))
    assert str(error) == (
        "x.ini: [sip] listen_port: unknown key"
        " (valid keys: domain, listen, transports, t1, t2, t4, user_agent, udp_buffer"
        ", tls_listen, tls_certificate, tls_private_key, stream_idle_timeout"
        ", flow_keep_margin, stream_close_timeout, max_connections_per_source, flow_timer)"
    )


def test_missing_required_key_error_names_it() -> None:
    assert str(config_error("[web]\n")) == "x.ini: [sip] domain: required key is missing"


def test_empty_file_lacks_the_required_domain() -> None:
    assert (config_error("").section, config_error("").key) == ("sip", "domain")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            with_sip("listen = 127.0.0.1:abc\n"),
            "[sip] listen: invalid port 'abc' (expected host:port, IPv6 as [::1]:5060)",
        ),
        (with_sip("listen = 127.0.0.1:65536\n"), "[sip] listen: invalid port '65536'"),
        (with_sip("listen = ::1:5060\n"), "[sip] listen: invalid address '::1:5060'"),
        (with_sip("listen = 5060\n"), "[sip] listen: invalid address '5060'"),
        (with_sip("listen = localhost:5060\n"), "[sip] listen: invalid host 'localhost'"),
        (with_sip("listen = [127.0.0.1]:5060\n"), "[sip] listen: invalid host"),
        (with_sip("transports =\n"), "[sip] transports: no transport given"),
        (with_sip("transports = udp, sctp\n"), "[sip] transports: unknown transport 'sctp'"),
        (with_sip("transports = udp,udp\n"), "[sip] transports: transport 'udp' listed twice"),
        ("[sip]\ndomain = exa_mple.com\n", "[sip] domain: invalid domain 'exa_mple.com'"),
        ("[sip]\ndomain = 300.1.2.3\n", "[sip] domain: invalid domain '300.1.2.3'"),
        ("[sip]\ndomain = [1.2.3.4]\n", "[sip] domain: invalid domain '[1.2.3.4]'"),
        ("[sip]\ndomain =\n", "[sip] domain: invalid domain ''"),
        (with_sip("t1 = fast\n"), "[sip] t1: invalid duration 'fast'"),
        (with_sip("t1 = 0\n"), "[sip] t1: invalid duration '0'"),
        (with_sip("t4 = -1\n"), "[sip] t4: invalid duration '-1'"),
        (with_sip("t2 = inf\n"), "[sip] t2: invalid duration 'inf'"),
        (with_sip("t1 = 5\n"), "[sip] t2: 4.0 is less than t1 (5.0)"),
        (with_sip("user_agent =\n"), "[sip] user_agent: must not be empty"),
        (MINIMAL + "[web]\nlisten = 8080\n", "[web] listen: invalid endpoint '8080'"),
        (MINIMAL + "[web]\nlisten = tcp:http\n", "[web] listen: invalid port 'http'"),
        (MINIMAL + "[web]\nlisten = tcp:interface=::1\n", "[web] listen: invalid port ''"),
        (MINIMAL + "[store]\nbackend = SQL!\n", "[store] backend: invalid name 'SQL!'"),
        (MINIMAL + "[store]\nurl = not a url\n", "[store] url: invalid SQLAlchemy URL"),
        (MINIMAL + "[log]\nlevel = verbose\n", "[log] level: invalid value 'verbose'"),
        (MINIMAL + "[log]\nformat = xml\n", "[log] format: invalid value 'xml'"),
        (MINIMAL + "[log]\nfile =\n", "[log] file: must not be empty"),
    ],
)
def test_bad_value_error_names_section_key_and_value(text: str, message: str) -> None:
    assert str(config_error(text)).startswith(f"x.ini: {message}")


def test_control_characters_cannot_reach_a_sip_header() -> None:
    error = config_error(with_sip("user_agent = u\x01a\n"))
    assert (error.section, error.key) == ("sip", "user_agent")


def test_bad_database_url_error_does_not_echo_the_url() -> None:
    """The URL may hold a password, and errors end up in logs."""
    error = config_error(MINIMAL + "[store]\nurl = postgresql://u:s3cret@host:notaport/db\n")
    assert (error.section, error.key) == ("store", "url")
    assert "s3cret" not in str(error)


def test_database_password_is_hidden_in_the_config_repr() -> None:
    config = parse_config(MINIMAL + "[store]\nurl = postgresql://u:s3cret@h/db\n", "x.ini")
    assert "s3cret" not in repr(config)


def test_key_given_twice_is_an_error_with_its_line() -> None:
    assert str(config_error(with_sip("domain = b\n"))) == (
        "x.ini: [sip] domain: given twice (line 3)"
    )


def test_section_given_twice_is_an_error() -> None:
    assert str(config_error(MINIMAL + "[sip]\n")) == "x.ini: [sip]: section given twice (line 3)"


def test_key_before_any_section_is_an_error_with_its_line() -> None:
    assert str(config_error("domain = a\n")) == (
        "x.ini: line 1: 'domain = a' comes before any [section] header"
    )


def test_line_without_equals_sign_is_an_error_with_its_line() -> None:
    assert str(config_error(with_sip("listen\n"))) == (
        "x.ini: line 3: cannot parse 'listen' (expected key = value)"
    )


def test_the_removed_control_listen_key_stops_start_up_as_unknown() -> None:
    """[calls] control_listen is gone (calls are placed through /api/v1/calls): an old
    file naming it stops start-up, naming the key, rather than silently serving nothing."""
    error = config_error(MINIMAL + "[calls]\ncontrol_listen = tcp:8091:interface=127.0.0.1\n")
    assert (error.section, error.key) == ("calls", "control_listen")
