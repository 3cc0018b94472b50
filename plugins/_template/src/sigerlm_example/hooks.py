"""Hook implementations. Keep this module light: import torch and other heavy modules
inside the factories, which run only when a manifest uses the component."""

from pydantic import BaseModel, ConfigDict

from sigerlm import hookimpl


class ExampleStepOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")  # typos in manifests are reported by name

    message: str = "hello"


@hookimpl
def register_steps(register):
    register("example-step", example_step, options=ExampleStepOptions)


def example_step(run, options: ExampleStepOptions):
    """Log a message; return results that end up in metrics.json. ``options`` is the validated
    options object (a manifest's ``{use: example-step, message: ...}``)."""
    run.logger.info("%s: %s", run.name, options.message)
    return {"message_length": len(options.message)}
