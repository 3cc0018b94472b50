"""Hook implementations of siger-hello. Only hooks and light imports live here."""

from pydantic import BaseModel, ConfigDict, Field

from sigerlm import hookimpl


class HelloOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    who: str = "world"
    times: int = Field(1, ge=1, le=100)


class LinesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str


@hookimpl
def register_steps(register):
    register("hello", hello_step, options=HelloOptions)


@hookimpl
def register_datasets(register):
    register("lines", lines_dataset, options=LinesOptions)


@hookimpl
def register_commands(cli):
    import typer

    app = typer.Typer(help="Say hello.")

    @app.command()
    def greet(name: str) -> None:
        """Print a greeting."""
        from siger_hello.greeting import greeting

        typer.echo(greeting(name))

    cli.add_typer(app, name="hello")


@hookimpl
def prepare_run(run):
    run.logger.info("siger-hello is loaded for run %s", run.name)


def hello_step(run, options: HelloOptions):
    """Write a greeting into the run folder."""
    from siger_hello.greeting import greeting

    lines = [greeting(options.who) for _ in range(options.times)]
    if "train" in run.manifest.data:
        lines += [f"read: {line}" for line in run.dataset("train")]
    path = run.out_dir / "hello.txt"
    if run.is_main:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"lines": len(lines), "path": str(path)}


def lines_dataset(run, options: LinesOptions):
    """The non-empty lines of a text file."""
    from siger_hello.greeting import read_lines

    return read_lines(options.path)
