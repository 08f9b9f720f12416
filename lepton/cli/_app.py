"""The root ``lepton`` command, its sub-command groups, and how every command reports a
failure: one line saying what is wrong and one saying how to fix it; a traceback only with
``--debug``."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
import typer.core
from rich.console import Console
from rich.markup import escape

# Typer carries its own copy of click; its usage errors are only importable from there.
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from lepton.errors import LeptonError
from lepton.sdk.client import LeptonClient

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


class _OneLineErrors(typer.core.TyperGroup):
    """Usage errors (a missing option, a bad value) look like every other error of the
    CLI: one line with the reason, one with a hint; and an unexpected failure shows its
    traceback only with --debug."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except NoArgsIsHelpError as exc:
            console.print(exc.ctx.get_help() if exc.ctx else exc.format_message())
            sys.exit(exc.exit_code)
        except UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "lepton"
            _print_error(exc.format_message(), f"`{where} --help` shows what it takes")
            sys.exit(exc.exit_code)
        except ClickException as exc:
            _print_error(exc.format_message())
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.exit(130)
        except Exception as exc:
            if _debug:
                raise
            _print_error(
                f"unexpected {type(exc).__name__}: {exc}", "run with --debug for the traceback"
            )
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    help="Lepton: an open, event-driven control plane for AI infrastructure.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Help as written: Rich markup would eat "[default: auto]" and show flags as <bool>.
    rich_markup_mode=None,
)
stack_app = typer.Typer(
    rich_markup_mode=None, help="The local stack: a real Kafka broker and PostgreSQL server."
)
contract_app = typer.Typer(rich_markup_mode=None, help="The published event contract.")
data_app = typer.Typer(rich_markup_mode=None, help="Datasets: ingest, list, show and share them.")
models_app = typer.Typer(
    rich_markup_mode=None, help="Trained models: list them, roll a champion back."
)
app.add_typer(stack_app, name="stack")
app.add_typer(contract_app, name="contract")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")

# soft_wrap: a path or an error is one line, whatever the terminal's width.
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)
_debug = False

T = TypeVar("T")


def _print_error(message: str, hint: str | None = None) -> None:
    # Escaped: a message or hint may hold brackets (`pip install 'x[local]'`, a path).
    errors.print(f"[red]error:[/red] {escape(message)}", highlight=False, markup=True)
    if hint:
        errors.print(f"[dim]hint:[/dim] {escape(hint)}", highlight=False)


def say(line: str) -> None:
    """Print a line as it is: no markup, no highlighting (paths, names from outside)."""
    console.print(line, markup=False, highlight=False)


def waiting(what: str, timeout_s: float) -> None:
    """Say on standard error (standard output may be JSON) what a command now waits for,
    and for how long at most."""
    errors.print(f"waiting up to {timeout_s:.0f} s for {what}", style="dim", highlight=False)


def fail(message: str, hint: str | None = None) -> NoReturn:
    _print_error(message, hint)
    raise typer.Exit(1)


def guarded(action: Callable[[], T]) -> T:
    """Run ``action``; a :class:`LeptonError` becomes its one line and its hint (a
    traceback only with --debug)."""
    try:
        return action()
    except LeptonError as exc:
        if _debug:
            raise
        fail(str(exc), exc.hint)


def with_client(action: Callable[[LeptonClient], Awaitable[T]], *, tenant: str | None = None) -> T:
    """Run ``action`` with a client for ``tenant``; errors become one line."""

    async def go() -> T:
        async with LeptonClient(tenant=tenant, source="lepton/cli") as client:
            return await action(client)

    return guarded(lambda: asyncio.run(go()))


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    global _debug
    _debug = debug
    # aiokafka warns about retries it then makes on its own (a leader moving, say): noise
    # for a command-line user unless they are debugging.
    logging.basicConfig(level=logging.DEBUG if debug else logging.ERROR, format="%(message)s")
