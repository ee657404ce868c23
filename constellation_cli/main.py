"""`constellation`: submit pipelines to the gateway, follow their runs, read their results."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import time
import webbrowser
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from constellation_cli import render
from constellation_cli.client import TOKEN_ENV, Gateway, GatewayError, GatewayUnreachable

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "CONSTELLATION_URL"
POLL_S = 0.5

# Exit codes, also in --help.
OK, RUN_FAILED, INVALID, UNREACHABLE, REFUSED, INTERRUPTED = 0, 1, 2, 3, 4, 130
EXIT_CODES = """exit codes: 0 done (run succeeded), 1 the run failed or was canceled, 2 invalid pipeline or input,
  3 gateway unreachable, 4 the gateway refused the request (token, unknown run, results not ready...),
  130 interrupted (the run keeps running)"""


def _console(stderr: bool) -> Console:
    """Plain text, never read as markup (messages quote user input); long lines are not wrapped.
    Into a pipe or a file, tables get 160 columns rather than rich's 80, unless COLUMNS says otherwise."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 160
    return Console(stderr=stderr, width=width, highlight=False, markup=False, soft_wrap=True)


out, err = _console(stderr=False), _console(stderr=True)

Command = Callable[[Gateway, argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    url = getattr(args, "url", None) or os.environ.get(URL_ENV) or DEFAULT_URL
    command: Command = args.command
    try:
        with Gateway(url, os.environ.get(TOKEN_ENV) or None) as gateway:
            return command(gateway, args)
    except GatewayUnreachable as exc:
        err.print(f"error: {exc}")
        return UNREACHABLE
    except GatewayError as exc:
        err.print(f"error: {exc.message}")
        for line in render.problem_lines(exc.errors):
            err.print(f"  {line}")
        return INVALID if exc.status_code in (413, 422) else REFUSED
    except InputError as exc:
        err.print(f"error: {exc}")
        return INVALID
    except KeyboardInterrupt:
        return INTERRUPTED


class InputError(Exception):
    """The user's own input is unusable before anything is sent (unreadable file, unknown name)."""


def submit(gateway: Gateway, args: argparse.Namespace) -> int:
    """Launch the pipeline in FILE; follow its run to the end, then show its results."""
    launched = gateway.execute(_read_body(args.file), args.idempotency_key)
    run_id = launched["run_id"]
    replayed = " (an earlier submission with this Idempotency-Key)" if launched.get("replayed") else ""
    err.print(f"run {run_id}{replayed}: {launched.get('run_url', '')}")
    if args.no_wait:
        out.print(run_id)
        return OK
    try:
        run = _follow(gateway, run_id)
    except KeyboardInterrupt:
        err.print(f"\nstopped following run {run_id}; it keeps running. Cancel it with: constellation cancel {run_id}")
        return INTERRUPTED
    return _finish(gateway, run)


def validate(gateway: Gateway, args: argparse.Namespace) -> int:
    """Check the pipeline in FILE as /execute would, launching nothing."""
    answer = gateway.validate(_read_body(args.file))
    count = answer["instructions"]
    out.print(f"valid: {count} instruction{'' if count == 1 else 's'} ({answer['nodes']} to run)")
    return OK


def status(gateway: Gateway, args: argparse.Namespace) -> int:
    """Show a run's status, timings and every instruction's progress."""
    run = gateway.run(args.run)
    for line in render.run_lines(run):
        out.print(line)
    if run.get("error"):
        out.print(render.error_line(run), style="red")
    if run.get("instructions"):
        out.print()
        out.print(render.instructions_table(run["instructions"]))
    return OK


def results(gateway: Gateway, args: argparse.Namespace) -> int:
    """Show what a succeeded run's top-level instructions produced."""
    answer = gateway.results(args.run)
    if args.json:
        sys.stdout.write(json.dumps(answer, indent=2, ensure_ascii=False) + "\n")
    else:
        out.print(render.results_table(answer["results"]))
        for item in answer["results"]:
            output = item.get("output")
            if isinstance(output, dict) and output.get("type") == "Comparison":
                out.print()
                out.print(f"{item.get('path', '')} compare_models", style="bold")
                for part in render.comparison_tables(output):
                    out.print(part)
    return OK


def report(gateway: Gateway, args: argparse.Namespace) -> int:
    """Save a run's model comparison as an HTML page (and open it with --open)."""
    page = gateway.report(args.run)
    target = Path(args.output or f"constellation-report-{args.run[:8]}.html")
    target.write_text(page, encoding="utf-8")
    out.print(f"report saved to {target}")
    if args.open:
        webbrowser.open(target.resolve().as_uri())
    return OK


def cancel(gateway: Gateway, args: argparse.Namespace) -> int:
    """Terminate a queued or running run."""
    answer = gateway.cancel(args.run)
    out.print(f"run {answer['run_id']}: {answer['run_status']}")
    return OK


def ops(gateway: Gateway, args: argparse.Namespace) -> int:
    """List the operations, or describe one operation's parameters."""
    catalog = gateway.operations()["operations"]
    if args.name is None:
        out.print(render.operations_table(catalog))
        return OK
    found = {op["name"]: op for op in catalog}
    if args.name not in found:
        close = difflib.get_close_matches(args.name, found, n=3)
        raise InputError(f"no operation {args.name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    op = found[args.name]
    out.print(f"{op['name']} → {op.get('output', '')}: {op.get('description', '')}")
    out.print(render.parameters_table(op))
    return OK


def _follow(gateway: Gateway, run_id: str) -> dict[str, Any]:
    """Poll the run until it ends, showing its progress on stderr; return the last answer."""
    run = gateway.run(run_id)
    if not err.is_terminal:
        return _follow_plainly(gateway, run)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
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


def _finish(gateway: Gateway, run: dict[str, Any]) -> int:
    if run.get("run_status") != "SUCCESS":
        err.print(render.error_line(run), style="red")
        return RUN_FAILED
    out.print(render.results_table(gateway.results(run["run_id"])["results"]))
    return OK


def _read_body(file: str) -> bytes:
    """The request body as given, unparsed: the gateway checks it (duplicate keys included)."""
    try:
        return sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {file}: {exc.strerror}") from None


def _parser() -> argparse.ArgumentParser:
    # --url is accepted before or after the command; SUPPRESS keeps the later one from erasing the first.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS,
                        help=f"the gateway's base URL (default: ${URL_ENV} or {DEFAULT_URL})")
    parser = argparse.ArgumentParser(
        prog="constellation", parents=[common], description=__doc__,
        epilog=f"The token, when the gateway needs one, is read from ${TOKEN_ENV}.\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(function: Command, name: str) -> argparse.ArgumentParser:
        doc = (function.__doc__ or "").strip()
        sub = commands.add_parser(name, parents=[common], help=doc, description=doc)
        sub.set_defaults(command=function)
        return sub

    sub = command(submit, "submit")
    sub.add_argument("file", metavar="FILE", help="a request body {\"instructions\": [...]}, or - for stdin")
    sub.add_argument("--idempotency-key", metavar="KEY", help="retrying with the same key returns the same run")
    sub.add_argument("--no-wait", action="store_true", help="print the run id and return at once")
    sub = command(validate, "validate")
    sub.add_argument("file", metavar="FILE", help="a request body, or - for stdin")
    for function in (status, results, cancel):
        sub = command(function, function.__name__)
        sub.add_argument("run", metavar="RUN", help="a run id, as submit prints it")
        if function is results:
            sub.add_argument("--json", action="store_true", help="the gateway's answer as JSON")
    sub = command(report, "report")
    sub.add_argument("run", metavar="RUN", help="a run id, as submit prints it")
    sub.add_argument("-o", "--output", metavar="FILE", 
                     help="where to save it (default: constellation-report-<run>.html)")
    sub.add_argument("--open", action="store_true", help="open it in the web browser")
    sub = command(ops, "ops")
    sub.add_argument("name", metavar="NAME", nargs="?", help="an operation: show its parameters")
    return parser
