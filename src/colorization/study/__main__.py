"""python -m colorization.study make|serve|report [Hydra overrides]: the first word is the action (conf/study.yaml)."""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from colorization.errors import ConfigError, require_extra
from colorization.runs.entry import command

ACTIONS = ("make", "serve", "report")
USAGE = "usage: python -m colorization.study make|serve|report study=DIR [overrides]"


@command("study")
def run(cfg: DictConfig) -> None:
    if cfg.action not in ACTIONS:
        raise ConfigError(f"action={cfg.action!r} is not one of {ACTIONS} ({USAGE})")
    if not cfg.study:
        raise ConfigError("study is not set: pass study=DIR")
    if cfg.action != "make":
        require_extra("study", "fastapi", "uvicorn")
    if cfg.action == "make":
        from colorization.study.make import make

        print(f"study written to {make(cfg)}")
    elif cfg.action == "serve":
        from colorization.study.server import serve

        serve(Path(cfg.study), cfg.server.host, cfg.server.port)
    else:
        from colorization.study.report import report

        out = Path(cfg.report.out or Path(cfg.study).expanduser() / "report")
        report(Path(cfg.study), cfg.report, cfg.seed, out)
        print((out / "report.md").read_text())
        print(f"report written to {out} (report.md, report.json, fooling_rates.png)")


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] in ("-h", "--help"):
        print(f"{USAGE}\nmake: the photos and pairs; serve: the page; report: the fooling rates (conf/study.yaml)")
        sys.exit(0)
    if len(sys.argv) < 2 or sys.argv[1] not in ACTIONS:
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    action = sys.argv.pop(1)
    sys.argv.append(f"action={action}")
    run()


if __name__ == "__main__":
    main()
