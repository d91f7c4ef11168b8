"""`py9pfuse demo [MOUNTPOINT]`: the bundled server, mounted, with a note of what to try."""

from __future__ import annotations

import os
import shutil
import tempfile

import trio

from .mount import run as mount
from .server import demo_tree, serve_unix


def run(mountpoint: str, foreground: bool, debug: int) -> int:
    os.makedirs(mountpoint, exist_ok=True)
    sockdir = tempfile.mkdtemp(prefix="py9pfuse-demo-")  # 0700: the socket stays ours
    sock = os.path.join(sockdir, "demo.sock")

    async def start_server(nursery: trio.Nursery) -> None:
        async def server(task_status=trio.TASK_STATUS_IGNORED):
            try:
                await serve_unix(sock, demo_tree(), task_status=task_status)
            finally:
                shutil.rmtree(sockdir, ignore_errors=True)

        await nursery.start(server)

    def tell() -> None:
        print(f"""py9pfuse demo: a 9P2000 server in memory, mounted on {mountpoint}
  ls -l {mountpoint}
  cat {mountpoint}/README
  cat {mountpoint}/time                 (length 0, yet it has data)
  cat {mountpoint}/events &  echo hello > {mountpoint}/ctl
  fusermount3 -u {mountpoint}           (or umount) to stop it""", flush=True)

    opts = ["debug"] if debug > 1 else []
    code = mount(f"unix!{sock}", mountpoint, opts, foreground, debug > 0, before=start_server,
                 after_ready=tell)
    if code and not foreground:
        shutil.rmtree(sockdir, ignore_errors=True)
    return code
