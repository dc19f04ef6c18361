#!/usr/bin/env python3
"""Nightly label audit of every project in a TOML file (see relabel/nightly.py for the format).

    scripts/nightly_audit.py audit.toml [--force] [--dry-run]

One log line per project on stdout (and in the config's log_file); exit 0 when every project went well,
1 when one or more failed (the others still ran), 2 for an unusable config, 3 when another run holds the lock.

crontab (every night at 02:30, token in a file readable only by the cron user):
    30 2 * * *  cd /opt/relabel && .venv/bin/python scripts/nightly_audit.py /etc/relabel/audit.toml \
                  >> /var/log/relabel/cron.log 2>&1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relabel.nightly import run_nightly


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", type=Path, help="the nightly TOML file")
    parser.add_argument(
        "--force", action="store_true", help="re-rank even projects whose labels did not change"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="rank and report, push nothing to Label Studio"
    )
    args = parser.parse_args(argv)
    return run_nightly(args.config, force=args.force, push=not args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
