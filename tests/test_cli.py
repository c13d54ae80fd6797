"""The cargohold command, run for real in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cargohold import __version__
from cargohold.cli import EXIT_CODES

CLI = [sys.executable, "-m", "cargohold"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=full_env, timeout=120)


def test_version_and_help() -> None:
    assert run("--version").stdout.strip() == f"cargohold {__version__}"
    out = run("--help")
    assert out.returncode == 0
    assert "check" in out.stdout


def test_check_on_the_embedded_default(tmp_path: Path) -> None:
    out = run("check", "--json", env={"CARGOHOLD_DATA_DIR": str(tmp_path), "CARGOHOLD_REMOTE": ""})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["embedded_default"] is True
    assert report["remote"] == (tmp_path / "remote").as_uri()
    assert [s["name"] for s in report["steps"]] == [
        "put",
        "get",
        "list",
        "create-only",
        "if-match",
        "delete",
        "hold put",
        "hold flush",
        "hold get",
        "hold delete",
    ]
    assert all(s["ok"] for s in report["steps"])
    human = run("check", env={"CARGOHOLD_DATA_DIR": str(tmp_path), "CARGOHOLD_REMOTE": ""})
    assert "not durable" in human.stdout


def test_errors_are_one_line_with_an_exit_code_from_the_table() -> None:
    out = run("check", "--remote", "ftp://nowhere")
    assert out.returncode == dict(EXIT_CODES)[__import__("cargohold").ConfigError] == 3
    assert out.stderr.strip().startswith("error: unknown remote scheme 'ftp://'")
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr


def test_debug_shows_the_traceback() -> None:
    out = run("--debug", "check", "--remote", "ftp://nowhere")
    assert out.returncode != 0
    assert "Traceback" in out.stderr


def test_usage_errors() -> None:
    out = run("no-such-command")
    assert out.returncode == 2
    assert "No such command" in out.stderr


def test_memo_commands(tmp_path: Path) -> None:
    env = {
        "CARGOHOLD_DATA_DIR": str(tmp_path / "data"),
        "CARGOHOLD_REMOTE": (tmp_path / "remote").as_uri(),
    }
    code = (
        "import cargohold\n"
        "with cargohold.open(signal_handlers=False) as h:\n"
        "    m = h.memo('sora', version='v2')\n"
        "    for p in ('cat', 'dog'):\n"
        "        m.get_or_create({'prompt': p, 'seconds': 5}, lambda i, w: i['prompt'].encode())\n"
    )
    subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, check=True)
    listed = json.loads(run("memo", "ls", "sora", "--version", "v2", "--json", env=env).stdout)
    assert sorted(e["inputs"]["prompt"] for e in listed) == ["cat", "dog"]
    human = run("memo", "ls", "sora", "-v", "v2", "--field", "prompt", env=env).stdout
    assert "cat" in human
    assert "dog" in human
    stats = json.loads(run("memo", "stats", "--json", env=env).stdout)
    assert stats == [{"namespace": "sora", "version": "v2", "entries": 2, "bytes": 6}]
    out = run(
        "memo",
        "export",
        "sora",
        "-v",
        "v2",
        "--to",
        str(tmp_path / "seed"),
        "--where",
        "prompt=cat",
        env=env,
    )
    assert "exported 1 entry" in out.stdout
    assert len(list((tmp_path / "seed" / "sora" / "v2").iterdir())) == 1
    refused = run("memo", "rm", "sora", "-v", "v2", env=env)
    assert refused.returncode == 2
    assert "--where" in refused.stderr
    assert (
        "removed 1 entry"
        in run("memo", "rm", "sora", "-v", "v2", "-w", "prompt=dog", env=env).stdout
    )
    assert [
        e["inputs"]["prompt"]
        for e in json.loads(run("memo", "ls", "sora", "-v", "v2", "--json", env=env).stdout)
    ] == ["cat"]
    exported = run(
        "memo", "export", "sora", "-v", "v2", "--to", str(tmp_path / "s2"), "--json", env=env
    )
    assert json.loads(exported.stdout) == {"exported": 1, "to": str(tmp_path / "s2")}
    removed = run("memo", "rm", "sora", "-v", "v2", "--all", "--json", env=env)
    assert json.loads(removed.stdout) == {"removed": 1}


def test_memo_rm_and_export_take_the_only_version_and_never_guess(tmp_path: Path) -> None:
    """Without --version, rm and export act on the namespace's only version (not on a
    fixed "1" the app may never have used); with several they refuse and name them."""
    env = {
        "CARGOHOLD_DATA_DIR": str(tmp_path / "data"),
        "CARGOHOLD_REMOTE": (tmp_path / "remote").as_uri(),
    }
    code = (
        "import sys, cargohold\n"
        "with cargohold.open(signal_handlers=False) as h:\n"
        "    for v in sys.argv[1:]:\n"
        "        h.memo('sora', version=v).get_or_create({'p': 'cat'}, lambda i, w: b'x')\n"
    )
    subprocess.run([sys.executable, "-c", code, "v2"], env={**os.environ, **env}, check=True)
    out = run("memo", "export", "sora", "--to", str(tmp_path / "seed"), "--json", env=env)
    assert json.loads(out.stdout)["exported"] == 1
    assert [p.name for p in (tmp_path / "seed" / "sora").iterdir()] == ["v2"]
    subprocess.run([sys.executable, "-c", code, "v3"], env={**os.environ, **env}, check=True)
    refused = run("memo", "rm", "sora", "--all", env=env)
    assert refused.returncode != 0
    assert "versions v2, v3" in refused.stderr
    assert "--version" in refused.stderr
    stats = json.loads(run("memo", "stats", "--json", env=env).stdout)
    assert [(s["version"], s["entries"]) for s in stats] == [("v2", 1), ("v3", 1)]
    missing = run("memo", "rm", "nope", "--all", env=env)
    assert missing.returncode != 0
    assert "'nope' has no entries" in missing.stderr
    removed = run("memo", "rm", "sora", "-v", "v3", "--all", "--json", env=env)
    assert json.loads(removed.stdout) == {"removed": 1}


def _simulated_host(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A clean environment: no host's variables, no CARGOHOLD_* but ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CARGOHOLD_", "RAILWAY_", "FLY_", "SPACE_", "K_", "RENDER"))
        and k not in ("DYNO", "KUBERNETES_SERVICE_HOST", "container")
    }
    env["HOME"] = str(tmp_path / "home")
    return {**env, **extra}


def test_doctor_exits_non_zero_with_each_problem_and_its_fix(tmp_path: Path) -> None:
    env = _simulated_host(
        tmp_path,
        RAILWAY_PROJECT_ID="p-1",
        CARGOHOLD_DATA_DIR=str(tmp_path / "data"),
        HF_HOME="/sys/cargohold-hf",
    )
    out = subprocess.run(
        [*CLI, "doctor", "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is False
    assert report["host"]["name"] == "railway"
    assert report["remote"]["embedded_default"] is True
    assert {p["area"] for p in report["problems"]} >= {"host", "remote", "ml-caches"}
    assert all(p["fix"] for p in report["problems"])
    text = subprocess.run([*CLI, "doctor"], capture_output=True, text=True, env=env, timeout=120)
    assert text.returncode == 1
    assert "host: railway" in text.stdout
    assert "HF_HOME=/sys/cargohold-hf is not usable" in text.stdout
    assert "fix: set CARGOHOLD_REMOTE" in text.stdout


def test_doctor_on_a_healthy_setup_exits_zero(tmp_path: Path) -> None:
    env = _simulated_host(
        tmp_path,
        CARGOHOLD_DATA_DIR=str(tmp_path / "data"),
        CARGOHOLD_REMOTE=(tmp_path / "remote").as_uri(),
        CARGOHOLD_MAX_PENDING_BYTES="1MiB",
    )
    out = run("doctor", env=env)
    assert out.returncode == 0, out.stdout
    assert "create-only honoured yes" in out.stdout


def test_fetch_prints_the_cached_file_and_gc_removes_expired_bundles(tmp_path: Path) -> None:
    import cargohold
    from testsupport.origin import Origin

    env = {
        "CARGOHOLD_DATA_DIR": str(tmp_path / "data"),
        "CARGOHOLD_REMOTE": (tmp_path / "remote").as_uri(),
        "CARGOHOLD_TEMP_DIR": str(tmp_path / "tmp"),
    }
    with Origin() as origin:
        url = origin.put("/signs/hello.mp4", b"a video of hello")
        first = run("fetch", url, env=env)
        assert first.returncode == 0, first.stderr
        path = Path(first.stdout.strip())
        assert (path.name, path.read_bytes()) == ("hello.mp4", b"a video of hello")
        again = run("fetch", url, "--max-age", "1h", env=env)
        assert Path(again.stdout.strip()).read_bytes() == b"a video of hello"
        described = json.loads(run("fetch", url, "--json", env=env).stdout)
        assert described == {"url": url, "path": str(path), "size": 16}
        assert origin.gets("/signs/hello.mp4") == 1
        refused = run("fetch", url, "--sha256", "0" * 64, env=env)
        assert refused.returncode == dict(EXIT_CODES)[cargohold.IntegrityError]
    with cargohold.open(
        env["CARGOHOLD_REMOTE"], data_dir=tmp_path / "app", signal_handlers=False
    ) as hold:
        hold.put("debug/2020-01-01/req-1/record.json", b"{}", durable=True)
        hold.put("debug/2020-01-01/req-1/traceback.txt", b"...", durable=True)
    kept = json.loads(run("gc", "--json", env=env).stdout)
    assert kept["debug_bundles"] == 0  # within the retention period (a week)
    out = run("gc", "--debug-older-than", "0s", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "debug_bundles": 1,
        "memo_files": 0,
        "workspaces": 0,
        "partial_downloads": 0,
    }
    assert not list(cargohold.open_remote(env["CARGOHOLD_REMOTE"]).list("debug/"))


def test_memo_ls_without_a_version_lists_every_version_labelled(tmp_path: Path) -> None:
    env = {
        "CARGOHOLD_DATA_DIR": str(tmp_path / "data"),
        "CARGOHOLD_REMOTE": (tmp_path / "remote").as_uri(),
    }
    code = (
        "import cargohold\n"
        "with cargohold.open(signal_handlers=False) as h:\n"
        "    for version, prompts in (('v1', ('cat', 'dog')), ('v2', ('owl',))):\n"
        "        m = h.memo('sora', version=version)\n"
        "        for p in prompts:\n"
        "            m.get_or_create({'prompt': p}, lambda i, w: i['prompt'].encode())\n"
    )
    subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, check=True)
    listed = json.loads(run("memo", "ls", "sora", "--json", env=env).stdout)
    assert sorted((e["version"], e["inputs"]["prompt"]) for e in listed) == [
        ("v1", "cat"),
        ("v1", "dog"),
        ("v2", "owl"),
    ]
    assert listed[0]["inputs"]["prompt"] == "owl"  # newest first, across versions
    human = run("memo", "ls", "sora", env=env).stdout
    assert "all versions: v1, v2): 3 entries" in human
    assert "version" in human
    one = json.loads(run("memo", "ls", "sora", "-v", "v1", "--json", env=env).stdout)
    assert sorted(e["inputs"]["prompt"] for e in one) == ["cat", "dog"]
    missing = json.loads(run("memo", "ls", "sora", "-v", "1", "--json", env=env).stdout)
    assert missing == []
