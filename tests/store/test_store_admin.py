"""The administration functions behind `clicktodial user/token/db`, and the commands."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from clicktodial.store import admin
from clicktodial.store.errors import CsvImportError, NoSuchUser
from clicktodial.store.memory import MemoryStore
from clicktodial.store.passwords import sip_ha1
from clicktodial.store.values import BindingChanges, ContactChange, NewUser
from clicktodial.testing.fakes import (
    InlineReactor,
    InlineThreadPool,
    cheap_password_hasher,
    failure_result_of,
    success_result_of,
)


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore(InlineReactor(), realm="example.com", hash_pool=InlineThreadPool(),
                        hasher=cheap_password_hasher())
    success_result_of(store.start())
    return store


def test_add_user_generates_sip_password(store: MemoryStore) -> None:
    """Without a SIP password, a long random one is generated, returned once, and works."""
    added = success_result_of(admin.add_user(store, "alice", password="pw"))
    secret = added.generated_sip_password
    assert secret is not None and len(secret) >= 32
    credentials = success_result_of(store.get_sip_credentials("alice"))
    assert credentials is not None
    assert credentials.ha1_md5 == sip_ha1("alice", "example.com", secret)


def test_add_user_with_sip_password_generates_nothing(store: MemoryStore) -> None:
    """A given SIP password is used and nothing is generated."""
    added = success_result_of(admin.add_user(store, "bob", sip_password="s", is_admin=True,
                                             display_name="Bob"))
    assert added.generated_sip_password is None
    assert (added.user.is_admin, added.user.display_name, added.user.has_password) == (
        True, "Bob", False)


def test_list_users_with_bindings(store: MemoryStore) -> None:
    """The user list shows each user with the live bindings of their AOR."""
    success_result_of(store.add_users([NewUser("alice"), NewUser("bob")]))
    success_result_of(store.update_bindings("sip:alice@example.com", BindingChanges(
        "c", 1, [ContactChange("sip:alice@192.0.2.1", 60)]), 100.0))
    success_result_of(store.update_bindings("sip:bob@example.com", BindingChanges(
        "c", 1, [ContactChange("sip:bob@192.0.2.2", 10)]), 100.0))
    listing = success_result_of(admin.list_users(store, 120.0))
    assert [(entry.user.username, [b.contact for b in entry.bindings])
            for entry in listing] == [("alice", ["sip:alice@192.0.2.1"]), ("bob", [])]


def test_change_passwords(store: MemoryStore) -> None:
    """passwd changes the web password, the SIP password, or both; asking neither is an error."""
    success_result_of(store.add_user("alice", password="old", sip_password="old"))
    success_result_of(admin.change_passwords(store, "alice", password="new"))
    assert success_result_of(store.check_password("alice", "new")) is not None
    success_result_of(admin.change_passwords(store, "alice", sip_password="new-sip"))
    credentials = success_result_of(store.get_sip_credentials("alice"))
    assert credentials is not None
    assert credentials.ha1_md5 == sip_ha1("alice", "example.com", "new-sip")
    with pytest.raises(ValueError):
        admin.change_passwords(store, "alice")
    failure_result_of(admin.change_passwords(store, "nobody", password="x"), NoSuchUser)


def test_tokens(store: MemoryStore) -> None:
    """token create and revoke act on the store."""
    success_result_of(store.add_user("alice"))
    token = success_result_of(admin.create_token(store, "alice", "script"))
    assert success_result_of(store.verify_token(token)) == "alice"
    assert success_result_of(admin.revoke_token(store, token)) is True
    assert success_result_of(store.verify_token(token)) is None


def test_remove_user_unregisters_phones(store: MemoryStore) -> None:
    """Removing a user also removes the bindings of their AOR, and no one else's."""
    success_result_of(store.add_users([NewUser("alice"), NewUser("bob")]))
    for user in ("alice", "bob"):
        success_result_of(store.update_bindings(f"sip:{user}@example.com", BindingChanges(
            "c", 1, [ContactChange(f"sip:{user}@192.0.2.1", 60),
                     ContactChange(f"sip:{user}@192.0.2.2", 60)]), 100.0))
    assert success_result_of(admin.remove_user(store, "alice", 110.0)) == 2
    assert success_result_of(store.get_user("alice")) is None
    assert success_result_of(store.registered_aors(110.0)) == ["sip:bob@example.com"]
    failure_result_of(admin.remove_user(store, "alice", 110.0), NoSuchUser)


def parse(text: str) -> list[NewUser]:
    return admin.parse_users_csv(io.StringIO(text, newline=""))


def test_csv_with_and_without_header() -> None:
    """Rows are username,sip_password[,password[,display_name]]; the header is optional."""
    rows = "alice,s1,p1,Alice Liddell\nbob,s2\ncarol,s3,,Carol\n"
    for text in (rows, "username,sip_password,password,display_name\n" + rows):
        users = parse(text)
        assert [(u.username, u.sip_password, u.password, u.display_name) for u in users] == [
            ("alice", "s1", "p1", "Alice Liddell"), ("bob", "s2", None, ""),
            ("carol", "s3", None, "Carol")]


def test_csv_quoting_and_blank_lines() -> None:
    """Quoted fields may hold commas; blank lines are skipped."""
    users = parse('\n"dave","se,cret","","Dave, Jr."\n\n')
    assert [(u.username, u.sip_password, u.display_name) for u in users] == [
        ("dave", "se,cret", "Dave, Jr.")]


def test_csv_bad_rows_reported_by_line() -> None:
    """Every bad row is reported with its line number, and nothing is returned."""
    text = ("username,sip_password\n"
            "alice,s1\n"
            "Bob,s2\n"
            "carol\n"
            "dave,\n"
            "alice,s5\n"
            "e,s,p,d,extra\n")
    with pytest.raises(CsvImportError) as error:
        parse(text)
    assert [line for line, _ in error.value.problems] == [3, 4, 5, 6, 7]
    message = str(error.value)
    assert "line 3: invalid username 'Bob'" in message
    assert "line 4: expected 2 to 4 columns" in message
    assert "line 5: missing SIP password" in message
    assert "line 6: username 'alice' already on line 2" in message


def test_csv_bad_header() -> None:
    """A header row with other column names is an error."""
    with pytest.raises(CsvImportError, match="line 1: header must be"):
        parse("username,password\nalice,x\n")


def test_import_csv_file(store: MemoryStore, tmp_path: Path) -> None:
    """A CSV file imports all its users, web passwords hashed; users without one cannot log in."""
    path = tmp_path / "users.csv"
    path.write_text("\ufeffalice,s1,p1\nbob,s2\n", encoding="utf-8")
    result = success_result_of(admin.import_users_csv(store, path))
    assert (result.users, result.with_password) == (2, 1)
    assert success_result_of(store.check_password("alice", "p1")) is not None
    assert success_result_of(store.check_password("bob", "")) is None
    assert success_result_of(store.get_sip_credentials("bob")) is not None


def test_import_csv_existing_users_reported_by_line(store: MemoryStore,
                                                    tmp_path: Path) -> None:
    """Importing users that exist fails naming their lines, and imports nobody."""
    success_result_of(store.add_users([NewUser("bob"), NewUser("dave")]))
    path = tmp_path / "users.csv"
    path.write_text("alice,s\nbob,s\ncarol,s\ndave,s\n")
    failure = failure_result_of(admin.import_users_csv(store, path), CsvImportError)
    assert isinstance(failure.value, CsvImportError)
    assert failure.value.problems == ((2, "user 'bob' already exists"),
                                      (4, "user 'dave' already exists"))
    assert success_result_of(store.get_user("alice")) is None


def test_seed_demo_users_once(store: MemoryStore) -> None:
    """The demo users alice and bob are created with their passwords, and only once."""
    assert success_result_of(admin.seed_demo_users(store)) == ["alice", "bob"]
    assert success_result_of(store.check_password("alice", "alice")) is not None
    credentials = success_result_of(store.get_sip_credentials("bob"))
    assert credentials is not None
    assert credentials.ha1_md5 == sip_ha1("bob", "example.com", "bob")
    assert success_result_of(admin.seed_demo_users(store)) == []


class TestCommands:
    """
    `clicktodial user/token/db` against a SQLite file, each in a process of its own as a user
    runs it: the store commands run on the real reactor (`task.react`), which runs once per
    process. Exit statuses: 0 done, 1 a store error (one line, no traceback), 2 usage.
    """

    @pytest.fixture
    def config(self, tmp_path: Path) -> str:
        path = tmp_path / "c.ini"
        path.write_text(f"[sip]\ndomain = example.com\n[store]\nbackend = sql\n"
                        f"url = sqlite:///{tmp_path / 'c.sqlite'}\n")
        return str(path)

    def run(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
        done = subprocess.run([sys.executable, "-m", "clicktodial.cli", *argv],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=120)
        assert "Traceback" not in done.stderr
        return done.returncode, done.stdout, done.stderr

    def test_commands_need_an_upgraded_database(self, config: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
        """Before `db upgrade`, store commands fail saying to run it; afterwards they work."""
        status, _, err = self.run(capsys, "--config", config, "user", "list")
        assert status == 1 and "db upgrade" in err
        status, _, _ = self.run(capsys, "--config", config, "db", "check")
        assert status == 1
        assert self.run(capsys, "--config", config, "db", "upgrade")[0] == 0
        assert self.run(capsys, "--config", config, "db", "check")[0] == 0

    def test_user_and_token_commands(self, config: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
        """add, list, passwd, import, token create/list/revoke and remove work end to end."""
        assert self.run(capsys, "--config", config, "db", "upgrade")[0] == 0
        status, out, _ = self.run(capsys, "--config", config, "user", "add", "alice",
                                  "--display-name", "Alice", "--admin")
        assert status == 0 and "SIP password (shown once): " in out
        assert "no web password" in out
        status, _, err = self.run(capsys, "--config", config, "user", "add", "alice")
        assert status == 1 and "already exists" in err and len(err.splitlines()) == 1
        # No terminal to prompt on: a usage error raised while the reactor runs the command.
        status, _, err = self.run(capsys, "--config", config, "user", "passwd", "alice")
        assert status == 2 and err.startswith("clicktodial: error: give --password")
        assert self.run(capsys, "--config", config, "user", "passwd", "alice",
                        "--password", "pw")[0] == 0
        csv_file = tmp_path / "u.csv"
        csv_file.write_text("bob,s,p\ncarol,s\n")
        status, out, _ = self.run(capsys, "--config", config, "user", "import", str(csv_file))
        assert status == 0 and "imported 2 user(s), 1 with a web password" in out
        status, out, _ = self.run(capsys, "--config", config, "user", "list")
        assert "alice (Alice) [admin]" in out and "carol [no-web-password]" in out
        assert "3 user(s)" in out
        status, out, _ = self.run(capsys, "--config", config, "token", "create", "bob")
        token = out.strip()
        assert status == 0 and token.startswith("ctd_")
        status, out, _ = self.run(capsys, "--config", config, "token", "list", "bob")
        assert status == 0 and len(out.splitlines()) == 1
        assert self.run(capsys, "--config", config, "token", "revoke", token)[0] == 0
        assert self.run(capsys, "--config", config, "token", "revoke", token)[0] == 1
        assert self.run(capsys, "--config", config, "user", "remove", "bob")[0] == 0
        status, _, err = self.run(capsys, "--config", config, "user", "remove", "bob")
        assert status == 1 and "no such user" in err
