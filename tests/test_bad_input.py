"""A table of bad inputs, each answered by one line on stderr, its exit status and no file
written: every command that connects, given an unreachable server and a malformed DSN."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vpbench.cli.main import main

WORKLOAD = Path(__file__).resolve().parents[1] / "workloads" / "video_page.toml"
UNREACHABLE = (
    "postgresql://postgres@127.0.0.1:1/x",
    1,
    "cannot connect to PostgreSQL at 127.0.0.1:1/",
)
MALFORMED = ("postgresql://[bad", 2, "is not a valid PostgreSQL connection string")

COMMANDS = [
    ["db", "drop", "--db", "x"],
    ["seed", "--profile", "tiny"],
    ["audit"],
    ["run", str(WORKLOAD), "--out", "{out}"],
    ["capture", "--out", "{out}/captured.toml"],
    ["coverage", str(WORKLOAD)],
    ["migrate", "status"],
    ["migrate", "up"],
    ["migrate", "down"],
    ["steps", "--profile", "tiny", "--out", "{out}"],
    ["ab", str(WORKLOAD), "--a", "x", "--b", "y", "--out", "{out}"],
    ["ci", "pr", "--base", "HEAD", "--out", "{out}"],
    ["ci", "nightly", "--profile", "tiny", "--out", "{out}", "--history", "{out}/history"],
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("dsn", [UNREACHABLE, MALFORMED], ids=["unreachable", "malformed"])
@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c[:2]) for c in COMMANDS])
def test_every_command_that_connects_fails_in_one_line(
    command: list[str], dsn: tuple[str, int, str], tmp_path: Path
) -> None:
    value, code, expected = dsn
    out = tmp_path / "out"
    argv = [part.replace("{out}", str(out)) for part in command]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "VPBENCH_DSN"))}
    done = subprocess.run([sys.executable, "-m", "vpbench", *argv, "--dsn", value],
                          capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).resolve().parents[1], check=False)  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code and len(lines) == 1, done.stderr
    assert expected in lines[0] and "Traceback" not in done.stderr
    assert not out.exists(), sorted(out.rglob("*"))  # not even an empty folder


# Files and options: each refused in one line, exit 2, before anything connects (the server
# given is unreachable, so a command that connected first would exit 1) or writes.

DATA = Path(__file__).resolve().parent / "data"
RUN = DATA / "runs" / "legacy.json"
STEP = DATA / "steps-v2" / "0001_quiz_attempt_links.json"

RESULTS: dict[str, tuple[str | bytes, str]] = {
    "empty": ("", "not a readable results file: Expecting value"),
    "binary": (b"\x00\xff\xfe\x01PK", "not a readable results file: 'utf-8' codec"),
    "not JSON": ("{not json", "not a readable results file: Expecting property name"),
    "truncated": (RUN.read_text()[:5000], "not a readable results file: Expecting"),
    "wrong shape": ('{"schema_version": 4, "kind": "run"}',
                    "not a valid run document: metadata: Field required"),
    "newer version": ('{"schema_version": 99, "kind": "run"}',
                      "results schema version 99 is newer than this vpbench reads"),
    "unknown kind": ('{"schema_version": 4, "kind": "banana"}',
                     "unknown kind of results document 'banana'"),
}  # fmt: skip
RESULTS_COMMANDS = {
    "compare FILE": ["compare", "{file}"],
    "compare RUN FILE": ["compare", str(RUN), "{file}"],
    "report FILE": ["report", "{file}", "--out", "{out}"],
    "trend DIR": ["trend", "{dir}", "--out", "{out}"],
}
TEXT_FILES: dict[str, dict[str, tuple[str | bytes, str]]] = {
    "workload": {
        "empty": ("", "defines no queries: nothing to measure"),
        "binary": (b"\x00\xff\xfe", ":1: not a UTF-8 text file (byte 0xff): a workload file"),
        "truncated": (WORKLOAD.read_text()[:400], "invalid TOML: Unterminated string"),
        "contradictory": ('[queries.a]\nsql = "SELECT 1"\n[scenarios.s]\nqueries = ["a", "b"]\n',
                          ":4: scenario 's' names unknown query 'b'"),
    },
    "checks": {
        "empty": ("", "no [checks.NAME] tables"),
        "binary": (b"\x00\xff", ":1: not a UTF-8 text file (byte 0xff): a checks file is TOML"),
        "truncated": ('[checks.a]\nsql = "SELECT', "invalid TOML: Unterminated string"),
        "contradictory": ('[checks.a]\nsql = "DELETE FROM t"\n',
                          ":1: checks.a.sql must be one SELECT query"),
    },
    "up.sql": {
        "empty": ("-- nothing yet\n", "migration 0001_x has no statement in up.sql"),
        "binary": (b"\x00\xff", ":1: not a UTF-8 text file (byte 0xff): a migration file is SQL"),
        "truncated": ("CREATE TABLE t (a int);\nALTER TABLE t ADD b text DEFAULT 'x;\n",
                      ":2: unterminated quoted string"),
        "contradictory": ("CREATE INDEX CONCURRENTLY i ON t (a);",
                          ":1: migration 0001_x up: `CREATE INDEX CONCURRENTLY i` cannot run "
                          "inside the step's one transaction: declare transactional = false"),
    },
}  # fmt: skip
TEXT_COMMANDS = {
    "workload": {
        "run": ["run", "{file}", "--out", "{out}"],
        "coverage": ["coverage", "{file}"],
        "ab": ["ab", "{file}", "--a", "x", "--b", "y", "--out", "{out}"],
        "steps": ["steps", "--workload", "{file}", "--out", "{out}"],
    },
    "checks": {
        "audit": ["audit", "--checks", "{file}"],
        "steps": ["steps", "--checks", "{file}", "--out", "{out}"],
    },
    "up.sql": {
        "migrate status": ["migrate", "status", "--migrations", "{dir}"],
        "migrate up": ["migrate", "up", "--migrations", "{dir}"],
        "steps": ["steps", "--migrations", "{dir}", "--out", "{out}"],
    },
}
OPTIONS: dict[str, tuple[list[str], str]] = {
    "run --repeat 0": (["run", "--repeat", "0"], "Invalid value for '--repeat'"),
    "run --clients 0": (["run", "--clients", "0"], "Invalid value for '--clients'"),
    "run --timeout -1s": (["run", "--timeout", "-1s"], "'-1s' must be positive"),
    "run --max-time soon": (["run", "--max-time", "soon"], "'soon' is not a duration"),
    "run --rounds": (["run", "--rounds", "3"], "No such option '--rounds'"),
    "steps --max-stall -1s": (["steps", "--max-stall", "-1s"], "'-1s' must be positive"),
    "steps --budget 0s": (["steps", "--budget", "0s"], "'0s' must be positive"),
    "steps --profile huge": (["steps", "--profile", "huge"], "unknown profile 'huge'"),
    "steps --to 9999": (["steps", "--to", "9999"], "unknown migration '9999'"),
    # It said "unknown migration 'base'; known: 0001_..., base".
    "steps --to base": (["steps", "--to", "base"],
                        "'base' is a target of migrate down only; going up, name a migration: "
                        "0001_quiz_attempt_links,"),
    "steps --from and --from-dump": (["steps", "--from", "x", "--from-dump", "y"],
                                     "give --from or --from-dump, not both"),
    "steps --min-rounds > --max-rounds": (["steps", "--min-rounds", "9", "--max-rounds", "3"],
                                          "--min-rounds 9 is more than --max-rounds 3"),
    "ab --min-rounds > --max-rounds": (
        ["ab", str(WORKLOAD), "--a", "x", "--b", "y", "--min-rounds", "5", "--max-rounds", "2"],
        "--min-rounds 5 is more than --max-rounds 2"),
    "compare --alpha 0": (["compare", str(STEP), "--alpha", "0"], "Invalid value for '--alpha'"),
    "compare --threshold 150%": (["compare", str(STEP), "--threshold", "150%"],
                                 "invalid threshold '150%': the change must be below 100%"),
    "compare three runs": (["compare", str(RUN), str(RUN), str(RUN)],
                           "compare takes BASE and NEW"),
    "compare RUN alone": (["compare", str(RUN)], "a single file must be a step or ab document"),
    "compare RUN STEP": (["compare", str(RUN), str(STEP)], "a step document, not a run"),
    "seed --dirty-rate": (["seed", "--dirty-rate", "orphans=0.9"], "unknown knob 'orphans'"),
    "capture --top 0": (["capture", "--top", "0", "--out", "{out}/c.toml"],
                        "Invalid value for '--top'"),
    "coverage --fail-under 150": (["coverage", str(WORKLOAD), "--fail-under", "150"],
                                  "Invalid value for '--fail-under'"),
}  # fmt: skip


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _refused_in_one_line(
    argv: list[str], fragments: list[str], out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1, err
    assert "Traceback" not in err and all(f in lines[0] for f in fragments), (fragments, err)
    assert not out.exists(), sorted(out.rglob("*"))  # not even an empty folder


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command is given a server nothing answers on: refusing a bad file or option
    must not need one (and no embedded server starts)."""
    for name in [k for k in os.environ if k.startswith("PG")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("VPBENCH_DSN", UNREACHABLE[0])
    monkeypatch.setenv("COLUMNS", "400")


@pytest.mark.parametrize("content", RESULTS, ids=list(RESULTS))
@pytest.mark.parametrize("command", RESULTS_COMMANDS, ids=list(RESULTS_COMMANDS))
@pytest.mark.usefixtures("unreachable")
def test_every_results_reader_refuses_a_bad_document(
    command: str, content: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, expected = RESULTS[content]
    file = _write(tmp_path / "history" / "doc.json", text)
    out = tmp_path / "out"
    fill = {"{file}": str(file), "{dir}": str(file.parent), "{out}": str(out)}
    argv = [fill.get(part, part) for part in RESULTS_COMMANDS[command]]
    _refused_in_one_line(argv, [str(file), expected], out, capsys)


TEXT_ROWS = [
    (kind, command, content)
    for kind, commands in TEXT_COMMANDS.items()
    for command in commands
    for content in TEXT_FILES[kind]
]


@pytest.mark.parametrize(("kind", "command", "content"), TEXT_ROWS,
                         ids=[f"{k} {c}: {f}" for k, c, f in TEXT_ROWS])  # fmt: skip
@pytest.mark.usefixtures("unreachable")
def test_every_reader_of_a_text_file_refuses_a_bad_one(
    kind: str, command: str, content: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, expected = TEXT_FILES[kind][content]
    migrations = tmp_path / "migrations"
    if kind == "up.sql":
        step = migrations / "0001_x"
        _write(step / "down.sql", "DROP TABLE t;")
        _write(step / "migration.toml", 'title = "x"\nwhy = "y"\n')
        file = _write(step / "up.sql", text)
    else:
        file = _write(tmp_path / f"{kind}.toml", text)
    out = tmp_path / "out"
    fill = {"{file}": str(file), "{dir}": str(migrations), "{out}": str(out)}
    argv = [fill.get(part, part) for part in TEXT_COMMANDS[kind][command]]
    if command == "steps" and kind != "up.sql":
        argv += ["--migrations", str(_empty_series(tmp_path))]
    _refused_in_one_line(argv, [str(file), expected], out, capsys)


def _empty_series(tmp_path: Path) -> Path:
    """A one-step series the reference workloads do not name, so that ``steps`` reads the
    workload or checks file under test before anything else could fail."""
    step = tmp_path / "series" / "0001_noop"
    _write(step / "up.sql", "SELECT 1;")
    _write(step / "down.sql", "SELECT 1;")
    _write(step / "migration.toml", 'title = "noop"\nwhy = "nothing"\n')
    return step.parent


@pytest.mark.parametrize("option", OPTIONS, ids=list(OPTIONS))
@pytest.mark.usefixtures("unreachable")
def test_every_option_out_of_range_is_refused(
    option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, expected = OPTIONS[option]
    out = tmp_path / "out"
    _refused_in_one_line([a.replace("{out}", str(out)) for a in argv], [expected], out, capsys)


def test_ci_pr_without_git_is_one_line(tmp_path: Path) -> None:
    """It was ``FileNotFoundError: 'git'`` (exit 70): ci pr reads base and head with git."""
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "VPBENCH_DSN"))}
    env |= {"PATH": str(tmp_path), "VPBENCH_DSN": UNREACHABLE[0]}  # no git on it
    argv = [sys.executable, "-m", "vpbench", "ci", "pr", "--base", "HEAD", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120,
                          cwd=Path(__file__).resolve().parents[1], check=False)  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "cannot read 'HEAD': git is not on PATH" in lines[0]
    assert not out.exists()
