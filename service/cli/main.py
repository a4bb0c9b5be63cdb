"""The ``cleftscore`` command line.

Each command lives in a small module of its own and registers itself here. Errors
a user can act on (a photo without a face, a missing model) end the command with
exit code 2 and one sentence on stderr.
"""

from __future__ import annotations

import sys

import typer

from pipeline.errors import PipelineError
from service.cli import models, records, research, score, service, steps
from service.cli.errors import UsageFailure
from service.config.settings import ConfigError

app = typer.Typer(
    name="cleftscore",
    help="Appraise cleft-lip deformity in facial photographs (Hayajneh et al.) and serve it to a PACS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    for module in (steps, score, models, service, records, research):
        module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the process exit code."""
    _register()
    try:
        app(args=argv, standalone_mode=False, prog_name="cleftscore")
    except (PipelineError, UsageFailure, ConfigError) as error:
        print(f"cleftscore: {error}", file=sys.stderr)
        return 2
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except Exception as error:  # click's own usage errors
        code = getattr(error, "exit_code", None)
        if code is not None and hasattr(error, "show"):
            error.show()
            return int(code)
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
