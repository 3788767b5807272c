"""Entry point of the ``ternary`` command. Commands are imported only when used."""

from __future__ import annotations

import importlib
import importlib.util

import click

# command name -> module under apps.commands defining a click command of that name
COMMANDS = {
    "smoke": "smoke",
    "train": "train",
    "generate": "generate",
    "diff": "diff",
    "bench": "bench",
    "prewarm": "prewarm",
}


class LazyGroup(click.Group):
    """Lists the commands whose modules exist and imports a command only when it runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        present = [n for n, m in COMMANDS.items() if importlib.util.find_spec(f"apps.commands.{m}")]
        return sorted(set(present) | set(super().list_commands(ctx)))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS and importlib.util.find_spec(f"apps.commands.{COMMANDS[name]}"):
            module = importlib.import_module(f"apps.commands.{COMMANDS[name]}")
            return getattr(module, name.replace("-", "_"))
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="true-ternary", prog_name="ternary")
def main() -> None:
    """Train and inspect networks whose only persistent state is integers."""


if __name__ == "__main__":
    main()
