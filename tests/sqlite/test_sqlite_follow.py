"""hold.sqlite(mode="follow") on a file remote with real SQLite: a read-only follower
restores, follows what the writer ships (across its snapshots, a new generation and
retention), never writes to the remote, and a reader's open connection keeps its state."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cargohold.errors import InvalidInput, NotFoundError
from cargohold.hold import Hold
from cargohold.keys import internal_prefix
from tests.sqlite.test_sqlite import in_forked_child, insert, open_hold, rows


def remote_records(hold: Hold) -> list[tuple[str, str | None]]:
    return sorted((i.key, i.etag) for i in hold.remote.list(internal_prefix("sqlite/")))


def test_a_follower_restores_follows_and_writes_nothing(tmp_path: Path) -> None:
    with open_hold(tmp_path, "writer", sqlite_snapshot_segments=3) as writer:
        path = writer.sqlite("app.db", interval=3600)
        insert(path, 1, 2)
        writer.flush()
        with open_hold(tmp_path, "follower") as follower:
            seen = follower.sqlite("app.db", mode="follow", interval=3600)
            assert rows(seen) == [1, 2]
            reader = sqlite3.connect(f"file:{seen}?mode=ro", uri=True)
            reader.execute("BEGIN")
            assert reader.execute("SELECT count(*) FROM t").fetchone() == (2,)
            for n in range(3, 11):  # past a snapshot or two of the writer
                insert(path, n)
                writer.flush()
                before = remote_records(writer)
                follower.flush()
                assert remote_records(writer) == before  # the follower wrote nothing
                assert rows(seen) == list(range(1, n + 1))
            # The reader's transaction still sees the file it opened, whole.
            assert reader.execute("SELECT count(*) FROM t").fetchone() == (2,)
            reader.close()
            status = follower.sqlite_status("app.db")
            assert not status.writer
            assert status.generation == writer.sqlite_status("app.db").generation
            assert not Path(f"{seen}-wal").exists()  # published in rollback-journal mode
            con = sqlite3.connect(f"file:{seen}?mode=ro", uri=True)
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                con.execute("INSERT INTO t (n, v) VALUES (99, 'no')")
            con.close()


def test_a_follower_follows_a_new_generation(tmp_path: Path) -> None:
    with open_hold(tmp_path, "a") as first:
        insert(first.sqlite("app.db"), 1)
    with open_hold(tmp_path, "follower") as follower:
        seen = follower.sqlite("app.db", mode="follow", interval=3600)
        assert rows(seen) == [1]
        with open_hold(tmp_path, "b", sqlite_retention=0) as second:  # a new container
            path = second.sqlite("app.db", interval=3600)
            insert(path, 2)
            second.flush()  # its retention deleted the first generation meanwhile
            follower.flush()
            assert rows(seen) == [1, 2]
            assert follower.sqlite_status("app.db").generation == (
                second.sqlite_status("app.db").generation
            )


def test_following_what_the_remote_does_not_hold_is_refused(tmp_path: Path) -> None:
    with open_hold(tmp_path, "follower") as follower:
        with pytest.raises(NotFoundError, match=r"no replicated database called 'app\.db'"):
            follower.sqlite("app.db", mode="follow")
        with pytest.raises(InvalidInput, match="mode must be 'write' or 'follow'"):
            follower.sqlite("app.db", mode="read")  # type: ignore[arg-type]
        assert not (follower.local_dir / "sqlite" / "app.db").exists()


@pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork.*:DeprecationWarning")
def test_a_forked_child_leaves_following_to_the_parent(tmp_path: Path) -> None:
    with open_hold(tmp_path, "writer") as writer, open_hold(tmp_path, "follower") as follower:
        path = writer.sqlite("app.db", interval=3600)
        insert(path, 1)
        writer.flush()
        seen = follower.sqlite("app.db", mode="follow", interval=3600)
        insert(path, 2)
        writer.flush()

        def child() -> bool:  # its flush neither hangs nor publishes
            follower.flush()
            return rows(seen) == [1]

        assert in_forked_child(child)
        follower.flush()  # the parent still follows
        assert rows(seen) == [1, 2]
