"""`python fill_disk.py FILL_AT -- LMX ARGS...`: run the `lmx` command with one extra train hook that, after step
FILL_AT (once the pending checkpoint is written), fills the run directory's file system up to 64 KiB.

Used by test_full_disk.py inside a private mount namespace whose run directory is a small tmpfs: the next
checkpoint save then fails with ENOSPC, as on a disk that filled up during a run.
"""

import os
import shutil
import sys

from lmx.cli import main
from lmx.train import loop
from lmx.train.hooks import hook

SLACK = 64 * 1024  # metrics rows still fit; a checkpoint does not


def filler(fill_at: int):
    @hook(every=1)
    def fill(train_loop, event):
        if event.step != fill_at:
            return
        train_loop.checkpointer.wait()
        free = shutil.disk_usage(train_loop.run_dir).free
        with open(os.path.join(train_loop.run_dir, "..", "filler"), "wb") as handle:
            handle.write(b"\0" * max(0, free - SLACK))

    return fill


if __name__ == "__main__":
    fill_at, separator, *argv = sys.argv[1:]
    assert separator == "--"
    standard = loop.standard_hooks
    loop.standard_hooks = lambda config, guard, extra=(): standard(config, guard, extra=[*extra, filler(int(fill_at))])
    sys.exit(main(argv))
