"""`constellation`: submit pipelines to the gateway, follow their runs, read their results."""

from __future__ import annotations

import difflib
import json
import os
import sys
import time
import webbrowser
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from constellation_cli import render
from constellation_cli.client import TOKEN_ENV, Gateway, GatewayError, GatewayUnreachable

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "CONSTELLATION_URL"
PORT_ENV = "CONSTELLATION_API_PORT"  # `make run` serves the gateway on this port
POLL_S = 0.5

# Exit codes, also in --help.
OK, RUN_FAILED, INVALID, UNREACHABLE, REFUSED, INTERRUPTED = 0, 1, 2, 3, 4, 130

HELP = """Submit pipelines to the Constellation gateway, follow their runs, read their results.

A pipeline FILE is a request body {"instructions": [...]}, as in sample_dags.txt, or - for standard input.
Progress and messages go to stderr; tables, run ids and --json answers go to stdout."""


def default_url(environ: Mapping[str, str]) -> tuple[str, str]:
    """The gateway when no --url is given, and where that came from: $CONSTELLATION_URL, else the port
    `make run` was told ($CONSTELLATION_API_PORT) on this machine, else DEFAULT_URL."""
    if environ.get(URL_ENV):
        return environ[URL_ENV], f"${URL_ENV}"
    port = environ.get(PORT_ENV, "").strip()
    if port.isdigit():
        return f"http://127.0.0.1:{port}", f"${PORT_ENV}"
    return DEFAULT_URL, "the default"


_NOW, _FROM = default_url(os.environ)
EPILOG = f"""The gateway is --url, else ${URL_ENV}, else http://127.0.0.1:${PORT_ENV} (the port `make run`
serves it on), else {DEFAULT_URL}. Now: {_NOW} ({_FROM}).
When it needs a token, set ${TOKEN_ENV}: it is sent as the bearer token and never printed.

Exit codes: 0 done (the run succeeded); 1 the run failed or was canceled; 2 invalid pipeline or input;
3 gateway unreachable; 4 the gateway refused (token, unknown run, results not ready, Dagster down);
130 interrupted (the run keeps running)."""


def _console(stderr: bool) -> Console:
    """Plain text, never read as markup (messages quote user input); long lines are not wrapped.
    Into a pipe or a file, tables get 160 columns rather than rich's 80, unless COLUMNS says otherwise."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 160
    return Console(stderr=stderr, width=width, highlight=False, markup=False, soft_wrap=True)


out, err = _console(stderr=False), _console(stderr=True)

app = typer.Typer(
    name="constellation",
    help=HELP,
    epilog=EPILOG,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,  # a bug in the CLI is a plain traceback; a gateway's refusal is one line
    context_settings={"help_option_names": ["-h", "--help"]},
)


class InputError(Exception):
    """The user's own input is unusable before anything is sent (unreadable file, unknown name)."""


def main(argv: Sequence[str] | None = None) -> int:
    """The `constellation` command: its exit code (see EPILOG)."""
    try:
        app(args=list(argv) if argv is not None else None, prog_name="constellation")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (OK if exc.code is None else RUN_FAILED)
    return OK


# Options every command takes, before or after the command's name (`--url X ops` or `ops --url X`).
Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        metavar="URL",
        show_default=False,
        help=f"The gateway's base URL (default: ${URL_ENV}, else http://127.0.0.1:${PORT_ENV}, else {DEFAULT_URL}; "
        f"now {_NOW}).",
    ),
]
AsJson = Annotated[
    bool,
    typer.Option(
        "--json", help="Print the gateway's answer as JSON on stdout (its error answer too), instead of tables."
    ),
]
File = Annotated[
    Path,
    typer.Argument(
        metavar="FILE",
        show_default=False,
        allow_dash=True,
        dir_okay=False,
        help='A request body {"instructions": [...]}, or - for standard input.',
    ),
]
Run = Annotated[str, typer.Argument(metavar="RUN", show_default=False, help="A run id, as submit prints it.")]
NoWait = Annotated[
    bool, typer.Option("--no-wait", help="Print the run id (with --json: the launch answer) and return at once.")
]
Cursor = Annotated[
    str | None,
    typer.Option(
        "--cursor",
        metavar="CURSOR",
        show_default=False,
        help="Show the page after this one: the cursor the previous page printed.",
    ),
]


@dataclass
class Given:
    """The options given before the command's name."""

    url: str | None = None
    as_json: bool = False


@app.callback()
def _before_the_command(ctx: typer.Context, url: Url = None, as_json: AsJson = False) -> None:
    ctx.obj = Given(url, as_json)


@contextmanager
def _connect(ctx: typer.Context, url: str | None, as_json: bool) -> Iterator[tuple[Gateway, bool]]:
    """The gateway to talk to and whether to answer in JSON; every failure becomes its exit code and one message."""
    given = ctx.obj if isinstance(ctx.obj, Given) else Given()
    asked = url or given.url
    gateway_url, source = (asked, "--url") if asked else default_url(os.environ)
    as_json = as_json or given.as_json
    try:
        with Gateway(gateway_url, os.environ.get(TOKEN_ENV) or None) as gateway:
            yield gateway, as_json
    except GatewayUnreachable as exc:
        said = {"--url": "given by --url", "the default": f"the default (set --url or ${URL_ENV})"}.get(
            source, f"from {source}"
        )
        err.print(
            f"error: cannot reach the gateway at {exc.url} ({exc.reason}), {said}; is it running? "
            "`make run` prints the URL it serves"
        )
        raise typer.Exit(UNREACHABLE) from None
    except GatewayError as exc:
        if as_json and exc.body is not None:
            _print_json(exc.body)
        err.print(f"error: {exc.message}")
        for line in render.problem_lines(exc.errors):
            err.print(f"  {line}")
        raise typer.Exit(INVALID if exc.status_code in (413, 414, 422) else REFUSED) from None
    except InputError as exc:
        err.print(f"error: {exc}")
        raise typer.Exit(INVALID) from None
    except KeyboardInterrupt:
        raise typer.Exit(INTERRUPTED) from None


@app.command()
def submit(
    ctx: typer.Context,
    file: File,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            metavar="KEY",
            show_default=False,
            help="Submitting again with the same key returns the same run instead of launching another.",
        ),
    ] = None,
    no_wait: NoWait = False,
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """Launch the pipeline in FILE, follow its run to the end, then show what it produced.

    A progress bar (a line per change when stderr is not a terminal) shows what is running; at the
    end, each top-level instruction's output and, for a comparison, its metrics and verdict (as
    `results` shows them; of a failed run, what finished before the failure). Ctrl-C stops
    following, not the run. With --json, stdout gets the run's final status with its `results`.
    """
    with _connect(ctx, url, as_json) as (gateway, as_json):
        launched = gateway.execute(_read_body(file), idempotency_key)
        replayed = " (an earlier submission with this Idempotency-Key)" if launched.get("replayed") else ""
        err.print(f"run {launched['run_id']}{replayed}: {launched.get('run_url', '')}")
        _see_through(gateway, launched, no_wait, as_json)


@app.command()
def retry(ctx: typer.Context, run: Run, no_wait: NoWait = False, url: Url = None, as_json: AsJson = False) -> None:
    """Resume a failed run: a new run reuses what RUN's instructions produced, then follow it like submit.

    Every instruction that succeeded in RUN, with the same inputs, is reused from its stored output
    (its state is "reused"); the others run again. With --json, stdout gets the new run's final status
    with its `results`.
    """
    with _connect(ctx, url, as_json) as (gateway, as_json):
        launched = gateway.retry(run)
        parent = launched.get("parent_run_id") or run
        err.print(f"run {launched['run_id']} (retry of {parent}): {launched.get('run_url', '')}")
        _see_through(gateway, launched, no_wait, as_json, parent=parent)


@app.command()
def validate(ctx: typer.Context, file: File, url: Url = None, as_json: AsJson = False) -> None:
    """Check the pipeline in FILE as submit would, launching nothing.

    Prints how many instructions it has and how many will run (shared ones run once),
    or every problem as `path: message`.
    """
    with _connect(ctx, url, as_json) as (gateway, as_json):
        answer = gateway.validate(_read_body(file))
        if as_json:
            _print_json(answer)
            return
        count = answer["instructions"]
        out.print(f"valid: {count} instruction{'' if count == 1 else 's'} ({answer['nodes']} to run)")


@app.command()
def status(ctx: typer.Context, run: Run, url: Url = None, as_json: AsJson = False) -> None:
    """Show a run's status, timings and every instruction's state, time and output."""
    with _connect(ctx, url, as_json) as (gateway, as_json):
        answer = gateway.run(run)
        if as_json:
            _print_json(answer)
            return
        for line in render.run_lines(answer):
            out.print(line)
        if answer.get("error"):
            out.print(render.error_line(answer), style="red")
        if answer.get("instructions"):
            out.print()
            out.print(render.instructions_table(answer["instructions"]))


@app.command(name="runs")
def list_runs(
    ctx: typer.Context,
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            metavar="STATE",
            show_default=False,
            help="Only runs in this state: SUCCESS, FAILURE, CANCELED, STARTED, QUEUED... (several: comma-separated).",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=100, help="How many runs to show.")] = 20,
    cursor: Cursor = None,
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """List the runs, newest first: their state, when, how long, what they ran and why they failed."""
    with _connect(ctx, url, as_json) as (gateway, as_json):
        answer = gateway.runs(state, limit, cursor)
        if as_json:
            _print_json(answer)
            return
        if not answer["runs"]:
            err.print("no runs" + (f" in state {state}" if state else ""))
            return
        out.print(render.runs_table(answer["runs"]))
        if answer.get("next_cursor"):
            same = (f"--state {state} " if state else "") + (f"--limit {limit} " if limit != 20 else "")
            err.print(f"more: constellation runs {same}--cursor {answer['next_cursor']}")


@app.command()
def results(ctx: typer.Context, run: Run, url: Url = None, as_json: AsJson = False) -> None:
    """Show what a run's top-level instructions produced (of a failed run: what finished), and its comparisons."""
    with _connect(ctx, url, as_json) as (gateway, as_json):
        answer = gateway.results(run)
        if as_json:
            _print_json(answer)
            return
        _show_results(answer["results"])


def _show_results(results: list[dict[str, Any]]) -> None:
    """What the top-level instructions produced, then each comparison's metrics, pairs and verdict."""
    out.print(render.results_table(results))
    for item in results:
        output = item.get("output")
        if isinstance(output, dict) and output.get("type") == "Comparison":
            out.print()
            out.print(f"{item.get('path', '')} compare_models", style="bold")
            for part in render.comparison_tables(output):
                out.print(part)


@app.command()
def report(
    ctx: typer.Context,
    run: Run,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            show_default=False,
            dir_okay=False,
            help="Where to save it (default: constellation-report-RUN.html, with the first 8 characters of RUN).",
        ),
    ] = None,
    open_it: Annotated[bool, typer.Option("--open", help="Open it in the web browser.")] = False,
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """Save a run's model comparison as one HTML page (and open it with --open).

    With --json, stdout gets `{"path": ...}`: where the page was saved.
    """
    with _connect(ctx, url, as_json) as (gateway, as_json):
        page = gateway.report(run)
        target = output or Path(f"constellation-report-{run[:8]}.html")
        try:
            target.write_text(page, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write {target}: {exc.strerror}") from None
        if as_json:
            _print_json({"path": str(target.resolve())})
        else:
            out.print(f"report saved to {target}")
        if open_it:
            webbrowser.open(target.resolve().as_uri())


@app.command()
def cancel(ctx: typer.Context, run: Run, url: Url = None, as_json: AsJson = False) -> None:
    """Terminate a queued or running run."""
    with _connect(ctx, url, as_json) as (gateway, as_json):
        answer = gateway.cancel(run)
        if as_json:
            _print_json(answer)
        else:
            out.print(f"run {answer['run_id']}: {answer['run_status']}")


def _complete_operation(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of an operation's name, from the gateway's catalog (nothing when it is out of reach)."""
    given = [c.params.get("url") for c in (ctx, ctx.parent) if c is not None]
    url = next((u for u in given if u), None) or default_url(os.environ)[0]
    try:
        with Gateway(url, os.environ.get(TOKEN_ENV) or None, timeout_s=3) as gateway:
            names = [op["name"] for op in gateway.operations()["operations"]]
    except (GatewayUnreachable, GatewayError, KeyError, TypeError):
        return []
    return [name for name in names if name.startswith(incomplete)]


@app.command()
def ops(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Argument(
            metavar="NAME",
            show_default=False,
            autocompletion=_complete_operation,
            help="An operation: show its parameters, their types and defaults.",
        ),
    ] = None,
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """List the operations a pipeline can use, or describe one operation's parameters."""
    with _connect(ctx, url, as_json) as (gateway, as_json):
        answer = gateway.operations()
        catalog = answer["operations"]
        if name is None:
            _print_json(answer) if as_json else out.print(render.operations_table(catalog))
            return
        found = {op["name"]: op for op in catalog}
        if name not in found:
            close = difflib.get_close_matches(name, found, n=3)
            raise InputError(f"no operation {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
        op = found[name]
        if as_json:
            _print_json(op)
            return
        out.print(f"{op['name']} → {op.get('output', '')}: {op.get('description', '')}")
        out.print(render.parameters_table(op))


@app.command()
def leaderboard(
    ctx: typer.Context,
    dataset: Annotated[
        str,
        typer.Argument(
            metavar="DATASET",
            show_default=False,
            help="The dataset as a comparison names it: its asset key path, e.g. local/samples.",
        ),
    ],
    fingerprint: Annotated[
        str | None,
        typer.Option(
            "--fingerprint",
            metavar="SHA256",
            show_default=False,
            help="Rank on this version of the data (default: the newest compared).",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=200, help="How many models to show.")] = 50,
    cursor: Cursor = None,
    url: Url = None,
    as_json: AsJson = False,
) -> None:
    """Every model ever compared on DATASET, best first by the headline metric with its 95 % interval.

    Rows compared on other data (another fingerprint: the dataset changed) come after, marked.
    """
    with _connect(ctx, url, as_json) as (gateway, as_json):
        answer = gateway.leaderboard(dataset, fingerprint, limit, cursor)
        if as_json:
            _print_json(answer)
            return
        for line in render.leaderboard_lines(answer):
            err.print(line)
        out.print(render.leaderboard_table(answer["models"]))
        if answer.get("next_cursor"):
            err.print(f"more: constellation leaderboard {dataset} --cursor {answer['next_cursor']}")


def _see_through(
    gateway: Gateway, launched: dict[str, Any], no_wait: bool, as_json: bool, parent: str | None = None
) -> None:
    """After a launch: return at once (--no-wait), or follow the run to its end and show how it went."""
    run_id = launched["run_id"]
    if no_wait:
        _print_json(launched) if as_json else out.print(run_id)
        return
    try:
        run = _follow(gateway, run_id)
    except KeyboardInterrupt:
        err.print(f"\nstopped following run {run_id}; it keeps running. Cancel it with: constellation cancel {run_id}")
        raise typer.Exit(INTERRUPTED) from None
    if parent is not None:
        err.print(render.reuse_line(run, parent))
    succeeded = run.get("run_status") == "SUCCESS"
    results = _results_of(gateway, run_id, must=succeeded)
    if as_json:
        _print_json({**run, "results": results})
    elif results:
        _show_results(results)
    if not succeeded:
        err.print(render.error_line(run), style="red")
        raise typer.Exit(RUN_FAILED)


def _results_of(gateway: Gateway, run_id: str, must: bool) -> list[dict[str, Any]] | None:
    """What an ended run produced; of a failed run, None when it kept none (it failed before any instruction ran)."""
    try:
        return gateway.results(run_id)["results"]
    except GatewayError:
        if must:
            raise
        return None


def _follow(gateway: Gateway, run_id: str) -> dict[str, Any]:
    """Poll the run until it ends, showing its progress on stderr; return the last answer."""
    run = gateway.run(run_id)
    if not err.is_terminal:
        return _follow_plainly(gateway, run)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task("", total=None)
        while True:
            total = run.get("total") or None
            progress.update(task, description=render.progress_caption(run), completed=run.get("done", 0), total=total)
            if run.get("run_status") in render.FINAL_STATES:
                return run
            time.sleep(POLL_S)
            run = gateway.run(run_id)


def _follow_plainly(gateway: Gateway, run: dict[str, Any]) -> dict[str, Any]:
    """Without a terminal (a log, a pipe): one line each time the progress changes."""
    shown = ""
    while True:
        line = f"[{run.get('done', 0)}/{run.get('total', 0)}] {render.progress_caption(run)}"
        if line != shown:
            err.print(line)
            shown = line
        if run.get("run_status") in render.FINAL_STATES:
            return run
        time.sleep(POLL_S)
        run = gateway.run(run["run_id"])


def _print_json(answer: Any) -> None:
    sys.stdout.write(json.dumps(answer, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _read_body(file: Path) -> bytes:
    """The request body as given, unparsed: the gateway checks it (duplicate keys included)."""
    try:
        return sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {file}: {exc.strerror}") from None
