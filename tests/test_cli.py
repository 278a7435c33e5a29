"""The clicktodial administration command."""

import argparse
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from clicktodial import __version__, cli
from clicktodial.cli import Subparsers

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@pytest.fixture(autouse=True)
def no_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.CONFIG_ENVIRONMENT_VARIABLE, raising=False)


def test_check_config_prints_ok_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(CONF_DIR / "dev.ini")
    assert cli.main(["--config", path, "check-config"]) == 0
    assert capsys.readouterr().out == f"OK: {path}\n"


def test_check_config_prints_the_one_line_error_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.ini"
    path.write_text("[sip]\ndomain = a\nt1 = soon\n")
    assert cli.main(["--config", str(path), "check-config"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"{path}: [sip] t1: invalid duration 'soon' (expected seconds > 0, e.g. 0.5)\n"
    )


def test_check_config_loads_the_ringback_file_as_start_up_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ringback WAV file that cannot be read is reported by check-config, on one line."""
    path = tmp_path / "ring.ini"
    wav = tmp_path / "ring.wav"
    wav.write_text("not a wav")
    path.write_text(
        f"[sip]\ndomain = a\n[store]\nbackend = memory\n[calls]\nringback = file:{wav}\n"
    )
    assert cli.main(["--config", str(path), "check-config"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"{path}: [calls] ringback: {wav}: cannot read")
    assert captured.err.count("\n") == 1


def test_check_config_on_a_missing_file_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "absent.ini"
    assert cli.main(["--config", str(path), "check-config"]) == 2
    assert capsys.readouterr().err.startswith(f"{path}: cannot read")


def test_config_defaults_to_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(CONF_DIR / "prod.ini")
    monkeypatch.setenv(cli.CONFIG_ENVIRONMENT_VARIABLE, path)
    assert cli.main(["check-config"]) == 0
    assert capsys.readouterr().out == f"OK: {path}\n"


def test_command_needing_a_config_without_one_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config"]) == 2
    assert "--config FILE" in capsys.readouterr().err


def test_version_command_needs_no_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["version"]) == 0
    assert capsys.readouterr().out == f"clicktodial {__version__}\n"


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_help_lists_the_builtin_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "check-config" in out
    assert "version" in out


@pytest.fixture
def extra_command_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module registering a 'hello' command, listed in COMMAND_MODULES."""
    module = types.ModuleType("clicktodial_test_hello_command")

    def run(args: argparse.Namespace) -> int:
        print(f"hello {args.name} from {cli.config_from_args(args).sip.domain}")
        return 0

    def add_parser(subparsers: Subparsers) -> None:
        parser = subparsers.add_parser("hello", help="say hello")
        parser.add_argument("name")
        parser.set_defaults(run=run)

    module.add_parser = add_parser  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, module.__name__))
    yield module.__name__


@pytest.mark.usefixtures("extra_command_module")
def test_modules_in_command_modules_add_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--config", str(CONF_DIR / "dev.ini"), "hello", "alice"]) == 0
    assert capsys.readouterr().out == "hello alice from 127.0.0.1\n"


@pytest.mark.usefixtures("extra_command_module")
def test_config_errors_in_added_commands_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.ini"
    path.write_text("[sipp]\n")
    assert cli.main(["--config", str(path), "hello", "bob"]) == 2
    assert capsys.readouterr().err.startswith(f"{path}: [sipp]: unknown section")
