"""Workload files: parsing, validation errors with lines, SQL parameters, variants, sampling."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from vpbench.errors import SamplerError, UnreadableTextError, WorkloadError
from vpbench.migrations.ledger import LEDGER_SQL, LEDGER_TABLE
from vpbench.workload.sampling import ParameterStream, load_parameter_pool, load_parameter_pools
from vpbench.workload.spec import load_workload, load_workloads, parse_sql

REFERENCE = Path(__file__).resolve().parents[1] / "workloads"
MIGRATIONS = (
    "0001_quiz_attempt_links",
    "0002_reflection_links",
    "0003_voice_memo_metadata",
    "0004_video_page_indexes",
    "0005_quiz_jsonb",
    "0006_computed_scores",
    "0007_drop_retired_quiz_columns",
)

VALID = """\
[workload]
name = "demo"

[params.viewer]
source = "SELECT user_id, video_id FROM attempts ORDER BY n DESC"
provides = ["user_id", "video_id"]
distribution = "zipf"
pool = 3

[params.limit]
value = 5

[queries.attempts]
target_ms = 20
sql = "SELECT * FROM attempts WHERE user_id = :user_id AND video_id = :video_id LIMIT :limit"

[[queries.attempts.variants]]
from = "0002_b"
sql = "SELECT 2 WHERE :user_id::text <> :video_id::text LIMIT :limit"

[[queries.attempts.variants]]
from = "0001_a"
sql = "SELECT 1 WHERE :user_id::text <> :video_id::text LIMIT :limit"

[scenarios.page]
queries = ["attempts"]
target_ms = 100
"""


def write(tmp_path: Path, text: str, name: str = "w.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_parse_sql_converts_named_parameters_only() -> None:
    sql = parse_sql(
        "SELECT x::int, '10:30 :not' AS t, \"a:b\", $q$ :nor $q$ -- :comment\n"
        "FROM t WHERE a = :a AND b LIKE '%' || :b AND c = :a /* :skip */"
    )
    assert sql.params == ("a", "b")
    assert "%(a)s" in sql.runnable and "%(b)s" in sql.runnable
    assert "'%%'" in sql.runnable
    assert "x::int" in sql.runnable and "'10:30 :not'" in sql.runnable
    assert "$q$ :nor $q$" in sql.runnable and ":comment" in sql.runnable


def test_parse_sql_reads_what_a_regular_expression_misread() -> None:
    """PostgreSQL's scanner finds the parameters: an escaped quote in an E-string and a
    nested comment no longer end early and expose their text as parameters."""
    sql = parse_sql(
        "SELECT E'it\\'s :not' AS e, 'é' || :a /* outer /* inner */ :skip */ FROM t "
        "WHERE b = :b::int AND c[1:2] = 1"
    )
    assert sql.params == ("a", "b")
    assert sql.positional.endswith("WHERE b = $2::int AND c[1:2] = 1")
    assert "E'it\\'s :not'" in sql.runnable and ":skip */" in sql.runnable
    unreadable = parse_sql("SELECT 'open :x")  # the server will name the error
    assert unreadable.params == () and unreadable.runnable == "SELECT 'open :x"


def test_valid_file_and_variant_order(tmp_path: Path) -> None:
    workload = load_workload(write(tmp_path, VALID), ["0001_a", "0002_b"])
    query = workload.queries["attempts"]
    assert workload.name == "demo"
    assert query.sql.params == ("user_id", "video_id", "limit")
    assert [v.from_migration for v in query.variants] == ["0001_a", "0002_b"]
    assert query.sql_for([]) == (None, query.sql)
    assert query.sql_for(["0001_a"])[1].source.startswith("SELECT 1")
    assert query.sql_for(["0001_a", "0002_b"])[0] == "0002_b"
    assert workload.scenarios["page"].queries == ("attempts",)
    assert workload.provider_of("video_id").name == "viewer"


def test_every_error_is_reported_at_once_with_its_line(tmp_path: Path) -> None:
    text = """\
[params.user_id]
source = "SELECT id FROM users"

[params.unused]
value = 1

[params.broken]
distribution = "zipf"

[queries.q1]
sql = "SELECT :user_id, :missing"
target = 20

[[queries.q1.variants]]
from = "0009_nope"
sql = "SELECT :user_id"

[queries.q2]
sql = "SELECT :user_id"
app = "no_such_module_here:render"

[scenarios.s]
queries = ["q1", "ghost"]
"""
    with pytest.raises(WorkloadError) as error:
        load_workload(write(tmp_path, text), ["0001_a"])
    lines = [str(issue) for issue in error.value.issues]
    assert str(error.value).startswith(f"{len(lines)} problems: ") and "\n" not in str(error.value)
    path = str(tmp_path / "w.toml")
    # pydantic's structural errors come first and stop the semantic pass for the file
    assert f"{path}:7: params.broken: give exactly one of 'source' (SQL), 'values'" in lines[0]
    assert f"{path}:12: unknown key 'queries.q1.target'" in lines[1]
    fixed = text.replace('distribution = "zipf"', "value = 2").replace("target = 20", "")
    with pytest.raises(WorkloadError) as error:
        load_workload(write(tmp_path, fixed), ["0001_a"])
    assert [str(issue) for issue in error.value.issues] == [
        f"{path}:11: query 'q1' uses :missing, which no [params] entry provides",
        f"{path}:15: query 'q1': unknown migration '0009_nope' (known: 0001_a)",
        f"{path}:20: app 'no_such_module_here:render': cannot import 'no_such_module_here': "
        "No module named 'no_such_module_here'",
        f"{path}:4: parameter 'unused' is defined but no query uses it",
        f"{path}:7: parameter 'broken' is defined but no query uses it",
        f"{path}:23: scenario 's' names unknown query 'ghost'",
    ]


def test_malformed_toml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[queries.q]\nsql = "SELECT 1"\nsql = "again"\n')
    with pytest.raises(WorkloadError, match=r"w.toml:3: invalid TOML: Cannot overwrite"):
        load_workload(path, [])
    path = write(tmp_path, '[queries.q]\nsql = "SELECT 1\n')
    with pytest.raises(WorkloadError, match=r"w.toml:2: invalid TOML"):
        load_workload(path, [])


def test_a_binary_file_is_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "w.toml"
    path.write_bytes(b'[queries.q]\nsql = "SELECT 1"\n\x89PNG\r\n\x1a\n\x00\xff')
    with pytest.raises(UnreadableTextError) as error:
        load_workload(path, [])
    assert (
        str(error.value) == f"{path}:3: not a UTF-8 text file (byte 0x89): a workload file is TOML"
    )


def test_a_workload_without_queries_is_refused(tmp_path: Path) -> None:
    for text in ("", '[workload]\nname = "empty"\n', "[params.p]\nvalue = 1\n"):
        with pytest.raises(WorkloadError, match=r"w\.toml: defines no queries"):
            load_workload(write(tmp_path, text), [])


def test_syntax_errors_in_any_statement_or_variant_name_their_line(tmp_path: Path) -> None:
    """PostgreSQL's own parser runs on every statement, variants included, without a
    server: each error at the line of the token it stops at."""
    path = write(
        tmp_path,
        "[queries.q]\n"
        "sql = '''\n"
        "SELECT id\n"
        "FROM videos\n"
        "WHER id = 1\n"
        "'''\n"
        "[[queries.q.variants]]\n"
        'from = "0001_a"\n'
        'sql = "SELECT FROM FROM videos"\n',
    )
    with pytest.raises(WorkloadError) as error:
        load_workload(path, ["0001_a"])
    assert [str(i) for i in error.value.issues] == [
        f"{path}:5: query 'q': syntax error: syntax error at or near \"id\"",
        f"{path}:9: query 'q' (variant from 0001_a): syntax error: syntax error at or near "
        '"FROM"',
    ]
    fixed = path.read_text().replace("WHER", "WHERE").replace("FROM FROM", "1 FROM")
    assert load_workload(write(tmp_path, fixed), ["0001_a"]).queries["q"].sql.line == 3


def test_bad_callable_paths(tmp_path: Path) -> None:
    (tmp_path / "app_module_for_test.py").write_text("def render(conn, params):\n    return 1\n")
    base = '[queries.q]\nsql = "SELECT 1"\napp = "{}"\n'
    load_workload(write(tmp_path, base.format("app_module_for_test:render")), [])
    for spec, message in [
        ("app_module_for_test:missing", "has no function 'missing'"),
        ("not a path", "is not a 'module:function' path"),
    ]:
        with pytest.raises(WorkloadError, match=message):
            load_workload(write(tmp_path, base.format(spec)), [])


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    first = write(tmp_path, '[queries.q]\nsql = "SELECT 1"\n', "a.toml")
    second = write(tmp_path, '[queries.q]\nsql = "SELECT 2"\n', "b.toml")
    with pytest.raises(WorkloadError, match=r"'q' is also defined in .*a\.toml"):
        load_workloads([first, second], [])


def test_reference_workloads_are_valid() -> None:
    page, memos = load_workloads(
        [REFERENCE / "video_page.toml", REFERENCE / "voice_memos.toml"], MIGRATIONS
    )
    assert list(page.scenarios) == ["video_page"]
    assert page.scenarios["video_page"].target_ms == 100
    assert page.scenarios["video_page"].app == "legacy_app:render_video_page"
    assert {q.target_ms for q in memos.queries.values()} == {20}
    assert all(q.variants for q in memos.queries.values())
    progress = page.queries["course_progress"]
    assert progress.sql_for(MIGRATIONS[:3])[0] == "0001_quiz_attempt_links"
    assert progress.sql_for(MIGRATIONS)[0] == "0004_video_page_indexes"
    latest = memos.queries["latest_memo_per_video"]
    assert latest.sql_for(MIGRATIONS[:2])[0] is None
    assert latest.sql_for(MIGRATIONS[:3])[0] == "0003_voice_memo_metadata"
    assert latest.sql_for(MIGRATIONS[:4])[0] == "0004_video_page_indexes"


@pytest.fixture(scope="module")
def attempts_db(create_database: object) -> str:
    conninfo: str = create_database("workload")  # type: ignore[operator]
    with psycopg.connect(conninfo) as conn:
        conn.execute(
            "CREATE TABLE attempts AS SELECT 'u' || (g % 7) AS user_id, 'v' || (g % 5) AS video_id,"
            " g AS n FROM generate_series(1, 50) g"
        )
        conn.execute("CREATE TABLE empty (x int)")
    return conninfo


def test_sampling_is_reproducible_and_skewed(tmp_path: Path, attempts_db: str) -> None:
    workload = load_workload(write(tmp_path, VALID), ["0001_a", "0002_b"])
    with psycopg.connect(attempts_db) as conn:
        pools = load_parameter_pools(conn, workload)
    viewer = pools["user_id"]
    assert viewer.rows == (("u1", "v0"), ("u0", "v4"), ("u6", "v3"))
    assert pools["limit"].rows == ((5,),)

    def sequence(seed: int, stream: str) -> list[dict[str, object]]:
        draws = ParameterStream(pools, ["user_id", "video_id", "limit"], seed, stream)
        return [draws.draw() for _ in range(300)]

    first = sequence(1, "attempts")
    assert first == sequence(1, "attempts")
    assert first != sequence(2, "attempts")
    assert first != sequence(1, "page")
    assert set(first[0]) == {"user_id", "video_id", "limit"}
    counts = [sum(d["user_id"] == row[0] for d in first) for row in viewer.rows]
    assert counts[0] > counts[1] > counts[2] > 0  # zipf favours the first rows


def test_a_source_follows_the_schema_of_the_database_it_runs_on(
    tmp_path: Path, attempts_db: str
) -> None:
    """A source variant replaces the source once its migration is in the database's ledger
    (a step that renamed the column the base source reads); its twin, the same database
    without that ledger row, still runs the base source."""
    text = VALID + (
        '\n[[params.viewer.variants]]\nfrom = "0002_b"\n'
        'source = "SELECT user_id, video AS video_id FROM moved ORDER BY n DESC"\n'
    )
    workload = load_workload(write(tmp_path, text), ["0001_a", "0002_b"])
    with psycopg.connect(attempts_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE moved AS SELECT user_id, 'moved-' || video_id AS video, n "
                     "FROM attempts")  # fmt: skip
        assert load_parameter_pools(conn, workload)["video_id"].rows[0] == ("u1", "v0")
        conn.execute(LEDGER_SQL)
        conn.execute(f"INSERT INTO {LEDGER_TABLE} (id, checksum, title, duration_ms) "
                     "VALUES ('0002_b', '', '', 0)")  # fmt: skip
        try:
            assert load_parameter_pools(conn, workload)["video_id"].rows[0] == ("u1", "moved-v0")
        finally:
            conn.execute("DROP SCHEMA vpbench CASCADE")
    unknown = text.replace('from = "0002_b"\nsource', 'from = "0009_nope"\nsource')
    with pytest.raises(WorkloadError) as error:
        load_workload(write(tmp_path, unknown), ["0001_a", "0002_b"])
    assert str(error.value) == (
        f"{tmp_path / 'w.toml'}:{VALID.count(chr(10)) + 3}: parameter 'viewer': unknown "
        "migration '0009_nope' (known: 0001_a, 0002_b)"
    )


def test_sources_that_fail_or_return_nothing(tmp_path: Path, attempts_db: str) -> None:
    broken = VALID.replace("FROM attempts ORDER BY n DESC", "FROM empty")
    workload = load_workload(write(tmp_path, broken), ["0001_a", "0002_b"])
    with psycopg.connect(attempts_db) as conn, pytest.raises(SamplerError) as error:
        load_parameter_pool(conn, workload.params["viewer"])
    assert "w.toml:4: parameter source 'viewer' failed: column \"user_id\" does not exist" in str(
        error.value
    )
    empty = VALID.replace("FROM attempts ORDER BY n DESC", "FROM attempts WHERE false")
    workload = load_workload(write(tmp_path, empty), ["0001_a", "0002_b"])
    with (
        psycopg.connect(attempts_db) as conn,
        pytest.raises(SamplerError, match="returned no rows"),
    ):
        load_parameter_pool(conn, workload.params["viewer"])


def test_a_source_is_not_cut_short_by_the_measurements_timeout(
    tmp_path: Path, attempts_db: str
) -> None:
    slow = VALID.replace(
        "FROM attempts ORDER BY n DESC",
        "FROM attempts WHERE pg_sleep(0.005) IS NOT NULL ORDER BY n DESC",
    )
    workload = load_workload(write(tmp_path, slow), ["0001_a", "0002_b"])
    with psycopg.connect(attempts_db, autocommit=True) as conn:
        conn.execute("SET statement_timeout = '50ms'")
        # The twin: the same scan as a measured statement times out.
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT n FROM attempts WHERE pg_sleep(0.005) IS NOT NULL").fetchall()
        pool = load_parameter_pool(conn, workload.params["viewer"])
        assert pool.size > 0
        assert conn.execute("SHOW statement_timeout").fetchone() == ("50ms",)


def test_an_integer_range_is_drawn_without_rows(tmp_path: Path, attempts_db: str) -> None:
    text = (
        "[params.aid]\nrange = [1, 1000000]\n\n[params.rank]\nrange = [1, 50]\n"
        'distribution = "zipf"\n\n[queries.q]\nsql = "SELECT :aid::int + :rank::int"\n'
    )
    workload = load_workload(write(tmp_path, text), [])
    with psycopg.connect(attempts_db) as conn:
        pools = load_parameter_pools(conn, workload)
    assert pools["aid"].rows == () and pools["aid"].size == 1_000_000
    draws = ParameterStream(pools, ["aid", "rank"], 1, "q")
    values = [draws.draw() for _ in range(2000)]
    aids = [v["aid"] for v in values]
    assert all(1 <= a <= 1_000_000 for a in aids) and len(set(aids)) > 1990
    ranks = [v["rank"] for v in values]
    assert min(ranks) == 1 and max(ranks) <= 50
    assert ranks.count(1) > ranks.count(2) > ranks.count(10)  # zipf favours the low end
    bad = write(tmp_path, text.replace("[1, 50]", "[50, 1]"))
    with pytest.raises(WorkloadError, match=r"w.toml:4: .*'range' \[50, 1\]: low must not exceed"):
        load_workload(bad, [])
